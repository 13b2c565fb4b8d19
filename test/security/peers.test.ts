// C7 and the peer port: a would-be peer with the wrong cluster secret or a certificate our CA did not
// sign is refused and the refusal is logged; a client hello on the peer port is refused too.

import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createCertificateAuthority, issueCertificate } from '../../src/security/certs.ts';
import { peerPath } from '../../src/transport/handshake.ts';
import { type Node, startNode, waitFor, wire } from '../transport/helpers.ts';

const nodes: Node[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((node) => node.transport.close()));
});

function tlsFor(ca: ReturnType<typeof createCertificateAuthority>, id: string) {
  const issued = issueCertificate(ca, { commonName: id, ipAddresses: ['127.0.0.1'] });
  return { ca: ca.certPem, cert: issued.certPem, key: issued.keyPem };
}

describe('refused peers', () => {
  it('C7: a node with the wrong cluster secret is refused, logged, and never delivers a message', async () => {
    const good = await startNode('n1');
    const bad = await startNode('n2', { secret: 'not the cluster secret at all!' });
    nodes.push(good, bad);
    wire([good, bad]);
    await waitFor(
      () => good.logs.some((e) => e.event === 'peer_handshake_rejected' && e.code === 4001),
      'the rejection to be logged',
      10_000,
    );
    expect(good.transport.stats().peers.n2?.authFailures).toBeGreaterThan(0);
    expect(good.transport.peerReachable('n2')).toBe(false);
    expect(bad.transport.peerConnected('n1')).toBe(false);
    bad.transport.send([{ type: 'timeoutNow', from: 'n2', to: 'n1', term: 9 }]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(good.received).toEqual([]);
  }, 30_000);

  it('C7 (mutual TLS): a node whose certificate another CA signed is refused in the TLS handshake and logged', async () => {
    const ca = createCertificateAuthority('cluster CA');
    const rogueCa = createCertificateAuthority('rogue CA');
    const good = await startNode('n1', { tls: tlsFor(ca, 'n1') });
    const rogue = await startNode('n2', { tls: { ...tlsFor(rogueCa, 'n2'), ca: ca.certPem } });
    nodes.push(good, rogue);
    wire([good, rogue]);
    await waitFor(
      () => good.logs.some((e) => e.event === 'peer_tls_refused'),
      'the TLS refusal to be logged',
      10_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(good.transport.peerReachable('n2')).toBe(false);
    expect(good.transport.peerConnected('n2')).toBe(false);
    expect(rogue.transport.peerConnected('n1')).toBe(false);
  }, 30_000);

  it('mutual TLS: two nodes of one CA link up and exchange messages', async () => {
    const ca = createCertificateAuthority('cluster CA');
    const a = await startNode('n1', { tls: tlsFor(ca, 'n1') });
    const b = await startNode('n2', { tls: tlsFor(ca, 'n2') });
    nodes.push(a, b);
    wire([a, b]);
    await waitFor(() => a.transport.peerConnected('n2') && b.transport.peerConnected('n1'), 'links', 10_000);
    a.transport.send([{ type: 'timeoutNow', from: 'n1', to: 'n2', term: 3 }]);
    await waitFor(() => b.received.length === 1, 'the message', 5_000);
    expect(b.received[0]).toMatchObject({ type: 'timeoutNow', from: 'n1', term: 3 });
  }, 30_000);

  it('C7: a client hello, or a deeply nested frame, on the peer port is refused as a malformed hello', async () => {
    const node = await startNode('n1');
    nodes.push(node);
    const packr = new Packr({ useRecords: false });
    const frames = [
      packr.pack({ t: 'hello', v: 1, principal: 'control', password: 'password' }),
      Buffer.alloc(4000, 0x91),
      Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (const frame of frames) {
      const code = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${node.transport.address.port}${peerPath}`);
        ws.on('message', () => ws.send(frame));
        ws.on('close', (closeCode) => resolve(closeCode));
        ws.on('error', () => undefined);
      });
      expect(code).toBe(4004);
    }
    expect(node.logs.filter((e) => e.event === 'peer_handshake_rejected')).toHaveLength(frames.length);
  }, 30_000);
});
