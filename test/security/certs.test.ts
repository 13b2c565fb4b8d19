// TLS for the dev cluster without an openssl binary: the CA and node certificates written in pure
// TypeScript parse, verify and work for mutual TLS with node's own TLS stack.

import { X509Certificate } from 'node:crypto';
import { createServer, request } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { createCertificateAuthority, issueCertificate } from '../../src/security/certs.ts';

function get(port: number, options: Record<string, unknown>): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, ...options }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += String(chunk)));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('dev certificates', () => {
  it('the CA is a CA, and a node certificate is signed by it with the loopback names', () => {
    const ca = createCertificateAuthority('test CA');
    const leaf = issueCertificate(ca, {
      commonName: 'n1',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
    });
    const caCert = new X509Certificate(ca.certPem);
    const leafCert = new X509Certificate(leaf.certPem);
    expect(caCert.ca).toBe(true);
    expect(leafCert.ca).toBe(false);
    expect(leafCert.subject).toBe('CN=n1');
    expect(leafCert.issuer).toBe('CN=test CA');
    expect(leafCert.subjectAltName).toMatch(/DNS:localhost.*IP Address:127\.0\.0\.1/);
    expect(leafCert.checkIssued(caCert)).toBe(true);
    expect(leafCert.verify(caCert.publicKey)).toBe(true);
    const other = createCertificateAuthority('other CA');
    expect(leafCert.verify(new X509Certificate(other.certPem).publicKey)).toBe(false);
  });

  it('mutual TLS works with them, and a client certificate from another CA is refused', async () => {
    const ca = createCertificateAuthority();
    const server = issueCertificate(ca, { commonName: 'n1', ipAddresses: ['127.0.0.1'] });
    const client = issueCertificate(ca, { commonName: 'n2', ipAddresses: ['127.0.0.1'] });
    const stranger = issueCertificate(createCertificateAuthority(), {
      commonName: 'n9',
      ipAddresses: ['127.0.0.1'],
    });
    const https = createServer(
      {
        cert: server.certPem,
        key: server.keyPem,
        ca: ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => res.end(`hello ${(req.socket as TLSSocket).getPeerCertificate().subject.CN}`),
    );
    await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
    const port = (https.address() as { port: number }).port;
    try {
      expect(await get(port, { ca: ca.certPem, cert: client.certPem, key: client.keyPem })).toBe('hello n2');
      await expect(
        get(port, { ca: ca.certPem, cert: stranger.certPem, key: stranger.keyPem }),
      ).rejects.toThrow();
      await expect(get(port, { ca: ca.certPem })).rejects.toThrow();
      await expect(get(port, { cert: client.certPem, key: client.keyPem })).rejects.toThrow(
        /self.signed|certificate/,
      );
    } finally {
      https.closeAllConnections();
      await new Promise((resolve) => https.close(resolve));
    }
  });
});
