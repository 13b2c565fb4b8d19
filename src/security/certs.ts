// A local certificate authority for the dev cluster (`raftlock cluster up --tls`), without an openssl
// binary and without a dependency: node:crypto makes the ECDSA P-256 keys and the signatures, and this
// file writes the X.509 v3 structures (RFC 5280) in DER by hand. It makes exactly two kinds of
// certificate: a self-signed CA, and a leaf signed by it for a node (server and client authentication,
// so the same certificate serves wss:// to clients and mutual TLS between peers).
// node:crypto's X509Certificate parses and verifies what this writes (test/security/certs.test.ts).

import {
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';

// --- DER ----------------------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.of(tag), length(body.length), body]);
}

const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const octets = (body: Buffer) => tlv(0x04, body);
const utf8 = (text: string) => tlv(0x0c, Buffer.from(text, 'utf8'));
const bool = (value: boolean) => tlv(0x01, Buffer.of(value ? 0xff : 0));
const bitString = (body: Buffer) => tlv(0x03, Buffer.concat([Buffer.of(0), body]));
const explicit = (n: number, body: Buffer) => tlv(0xa0 | n, body);

function integer(bytes: Buffer): Buffer {
  let body = bytes;
  while (body.length > 1 && body[0] === 0 && (body[1] as number) < 0x80) body = body.subarray(1);
  if ((body[0] as number) >= 0x80) body = Buffer.concat([Buffer.of(0), body]);
  return tlv(0x02, body);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * (parts[0] as number) + (parts[1] as number)];
  for (const part of parts.slice(2)) {
    const chunk: number[] = [part & 0x7f];
    for (let v = Math.floor(part / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  // UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5).
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`))
    : tlv(0x18, Buffer.from(`${iso}Z`));
}

const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));

function name(commonName: string): Buffer {
  return seq(set(seq(oid('2.5.4.3'), utf8(commonName))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function ipBytes(ip: string): Buffer {
  if (ip.includes(':')) {
    const [head = '', tail = ''] = ip.split('::');
    const words = (text: string) => (text === '' ? [] : text.split(':').map((w) => Number.parseInt(w, 16)));
    const left = words(head);
    const right = ip.includes('::') ? words(tail) : [];
    const all = [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
    const out = Buffer.alloc(16);
    for (const [i, word] of all.entries()) out.writeUInt16BE(word, i * 2);
    return out;
  }
  return Buffer.from(ip.split('.').map(Number));
}

// --- Certificates -------------------------------------------------------------------------------

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function fromPem(text: string): Buffer {
  return Buffer.from(text.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function keyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

function certificate(options: {
  subject: string;
  issuer: string;
  publicKey: KeyObject;
  signingKey: KeyObject;
  days: number;
  extensions: Buffer[];
}): Buffer {
  const notBefore = new Date(Date.now() - 60 * 60 * 1000);
  const notAfter = new Date(Date.now() + options.days * 24 * 60 * 60 * 1000);
  const serial = randomBytes(16);
  serial[0] = (serial[0] as number) & 0x7f;
  const tbs = seq(
    explicit(0, integer(Buffer.of(2))), // v3
    integer(serial),
    ecdsaWithSha256,
    name(options.issuer),
    seq(time(notBefore), time(notAfter)),
    name(options.subject),
    options.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(...options.extensions)),
  );
  const signature = sign('sha256', tbs, options.signingKey);
  return seq(tbs, ecdsaWithSha256, bitString(signature));
}

/** A new self-signed CA (ten years), to sign the certificates of one cluster's nodes. */
export function createCertificateAuthority(commonName = 'raftlock dev CA'): CertificateAuthority {
  const { publicKey, privateKey } = keyPair();
  const der = certificate({
    subject: commonName,
    issuer: commonName,
    publicKey,
    signingKey: privateKey,
    days: 3650,
    extensions: [
      extension('2.5.29.19', true, seq(bool(true))), // basicConstraints: CA
      extension('2.5.29.15', true, bitString(Buffer.of(0x06))), // keyUsage: keyCertSign, cRLSign
    ],
  });
  return {
    certPem: pem('CERTIFICATE', der),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/**
 * A node's certificate, signed by `ca`, valid for `dnsNames` and `ipAddresses`, for both server and
 * client authentication (one certificate per node serves clients and peers).
 */
export function issueCertificate(
  ca: CertificateAuthority,
  options: {
    readonly commonName: string;
    readonly dnsNames?: readonly string[];
    readonly ipAddresses?: readonly string[];
    readonly days?: number;
  },
): IssuedCertificate {
  const { publicKey, privateKey } = keyPair();
  const caCert = fromPem(ca.certPem);
  const issuer = issuerName(caCert);
  const names = [
    ...(options.dnsNames ?? []).map((dns) => tlv(0x82, Buffer.from(dns, 'ascii'))),
    ...(options.ipAddresses ?? []).map((ip) => tlv(0x87, ipBytes(ip))),
  ];
  const der = certificate({
    subject: options.commonName,
    issuer,
    publicKey,
    signingKey: createPrivateKey(ca.keyPem),
    days: options.days ?? 825,
    extensions: [
      extension('2.5.29.19', true, seq()), // basicConstraints: not a CA
      extension('2.5.29.15', true, bitString(Buffer.of(0x80))), // keyUsage: digitalSignature
      extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))), // server+client
      ...(names.length === 0 ? [] : [extension('2.5.29.17', false, seq(...names))]),
    ],
  });
  return {
    certPem: pem('CERTIFICATE', der),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/** The CA's common name, read back from its certificate (the subject CN this file wrote). */
function issuerName(caDer: Buffer): string {
  const subject = new X509Certificate(caDer).subject; // "CN=raftlock dev CA"
  const match = /CN=([^\n]+)/.exec(subject);
  return match?.[1] ?? 'raftlock dev CA';
}
