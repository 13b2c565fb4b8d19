import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import type { Message } from '../../src/raft/types.ts';
import {
  computeProof,
  newNonce,
  PeerCloseCode,
  peerPath,
  peerProtocolVersion,
} from '../../src/transport/handshake.ts';
import { TransportConfigError } from '../../src/transport/peer-transport.ts';
import {
  append,
  clusterId,
  fastLimits,
  fullyConnected,
  heartbeat,
  type Node,
  secret,
  startNode,
  waitFor,
  wire,
} from './helpers.ts';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const started: Node[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

async function node(...args: Parameters<typeof startNode>): Promise<Node> {
  const n = await startNode(...args);
  started.push(n);
  return n;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((n) => n.transport.close()));
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** A raw socket on a transport's peer port, as a stranger would open it. */
async function rawSocket(n: Node): Promise<{ ws: WebSocket; challenge: Record<string, unknown> }> {
  const { port } = n.transport.address;
  const ws = new WebSocket(`ws://127.0.0.1:${port}${peerPath}`);
  ws.on('error', () => {});
  const [data] = (await once(ws, 'message')) as [Buffer];
  return { ws, challenge: packr.unpack(data) as Record<string, unknown> };
}

function closeCode(ws: WebSocket): Promise<number> {
  return once(ws, 'close').then(([code]) => code as number);
}

describe('PeerTransport', () => {
  it('three nodes exchange batches of messages, binary entry data intact, one frame per turn', async () => {
    const nodes = [await node('n1'), await node('n2'), await node('n3')];
    wire(nodes);
    await fullyConnected(nodes);
    const [n1, n2, n3] = nodes as [Node, Node, Node];
    const framesBefore = n1.transport.stats().peers.n2!.framesSent;

    const toN2: Message[] = [append('n1', 'n2', 0, 40, 300), heartbeat('n1', 'n2', 7)];
    const toN3: Message[] = [append('n1', 'n3', 10, 3, 5), heartbeat('n1', 'n3', 8)];
    // Interleaved, over two calls in the same turn: each peer still gets one frame.
    n1.transport.send([toN2[0]!, toN3[0]!]);
    n1.transport.send([toN2[1]!, toN3[1]!]);
    await waitFor(() => n2.received.length === 2 && n3.received.length === 2, 'delivery');

    expect(n2.received).toEqual(toN2);
    expect(n3.received).toEqual(toN3);
    const delivered = n2.received[0];
    assertAppend(delivered);
    for (const e of delivered.entries) expect(e.data.constructor).toBe(Uint8Array);
    expect(n1.transport.stats().peers.n2!.framesSent - framesBefore).toBe(1);
    expect(n1.transport.stats().peers.n2!.messagesSent).toBe(2);

    // And back: replies travel over the other direction's link.
    n2.transport.send([
      {
        type: 'appendResp',
        from: 'n2',
        to: 'n1',
        term: 2,
        reject: false,
        index: 40,
        hintIndex: 0,
        hintTerm: 0,
      },
    ]);
    await waitFor(() => n1.received.length === 1, 'reply');
    expect(n1.received[0]).toMatchObject({ type: 'appendResp', from: 'n2', index: 40 });
  });

  it('app messages share the links and frames with Raft messages, reach onAppMessages in order, and report drops', async () => {
    const nodes = [await node('n1'), await node('n2')];
    const [n1, n2] = nodes as [Node, Node];
    const apps: { kind: string; body: number[]; from: string }[] = [];
    n2.transport.onAppMessages((messages, from) => {
      for (const m of messages) apps.push({ kind: m.kind, body: [...m.body], from });
    });
    // No link yet: dropped, and the caller is told.
    expect(n1.transport.sendApp('n2', 'forward', Uint8Array.of(1))).toBe(false);
    expect(n1.transport.sendApp('n9', 'forward', Uint8Array.of(1))).toBe(false);
    wire(nodes);
    await fullyConnected(nodes);
    const framesBefore = n1.transport.stats().peers.n2!.framesSent;
    expect(n1.transport.sendApp('n2', 'forward', Uint8Array.of(1, 2))).toBe(true);
    n1.transport.send([heartbeat('n1', 'n2', 3)]);
    expect(n1.transport.sendApp('n2', 'liveness', Uint8Array.of(3))).toBe(true);
    await waitFor(() => apps.length === 2 && n2.received.length === 1, 'delivery');
    expect(apps).toEqual([
      { kind: 'forward', body: [1, 2], from: 'n1' },
      { kind: 'liveness', body: [3], from: 'n1' },
    ]);
    expect(n2.received[0]).toEqual(heartbeat('n1', 'n2', 3));
    expect(n1.transport.stats().peers.n2!.framesSent - framesBefore).toBe(1);
  });

  it('C7: a peer with the wrong secret is refused both ways, and no message crosses', async () => {
    const n1 = await node('n1');
    const n2 = await node('n2', { secret: 'a different secret, same length!' });
    wire([n1, n2]);
    await waitFor(
      () => n1.transport.stats().handshakesRejected >= 2 && n2.transport.stats().handshakesRejected >= 2,
      'rejections on both sides',
    );
    expect(n1.transport.peerConnected('n2')).toBe(false);
    expect(n2.transport.peerConnected('n1')).toBe(false);
    expect(n1.transport.stats().peers.n2!.authFailures).toBeGreaterThan(0);
    expect(
      n1.logs.some((e) => e.event === 'peer_handshake_rejected' && e.code === PeerCloseCode.authFailed),
    ).toBe(true);
    n1.transport.send([heartbeat('n1', 'n2', 1)]);
    expect(n1.transport.stats().peers.n2!.dropsDisconnected).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(n2.received).toEqual([]);
  });

  it('C7: a hello from a non-member, or for another node, is refused with unknownPeer', async () => {
    const n1 = await node('n1');
    wire([n1], new Map([['n2', { host: '127.0.0.1', port: 1 }]]));
    for (const [from, to] of [
      ['n9', 'n1'],
      ['n2', 'n3'],
    ] as const) {
      const { ws, challenge } = await rawSocket(n1);
      const dialerNonce = newNonce();
      const input = {
        cluster: clusterId,
        from,
        to,
        listenerNonce: challenge.nonce as Uint8Array,
        dialerNonce,
      };
      const proof = computeProof(Buffer.from(secret), 'hello', input);
      const closed = closeCode(ws);
      ws.send(
        packr.pack({
          t: 'hello',
          v: peerProtocolVersion,
          cluster: clusterId,
          from,
          to,
          nonce: dialerNonce,
          proof,
        }),
      );
      expect(await closed).toBe(PeerCloseCode.unknownPeer);
    }
  });

  it('C7: an unauthenticated socket is closed after the auth timeout', async () => {
    const n1 = await node('n1');
    const started = Date.now();
    const { ws, challenge } = await rawSocket(n1);
    expect(challenge).toMatchObject({ t: 'challenge', v: peerProtocolVersion });
    expect(await closeCode(ws)).toBe(PeerCloseCode.authTimeout);
    expect(Date.now() - started).toBeGreaterThanOrEqual(fastLimits.authTimeoutMs! - 20);
    expect(n1.transport.stats().handshakesTimedOut).toBe(1);
    await waitFor(() => n1.transport.stats().handshakesPending === 0, 'the pending handshake to clear');
  });

  it('C7: handshakes in progress are bounded; the next socket is refused at once', async () => {
    const n1 = await node('n1', { limits: { ...fastLimits, handshakesPendingMax: 2 } });
    const first = await rawSocket(n1);
    const second = await rawSocket(n1);
    const third = new WebSocket(`ws://127.0.0.1:${n1.transport.address.port}${peerPath}`);
    third.on('error', () => {});
    expect(await closeCode(third)).toBe(PeerCloseCode.tooManyHandshakes);
    expect(n1.transport.stats()).toMatchObject({ handshakesRefused: 1, handshakesPending: 2 });
    first.ws.terminate();
    second.ws.terminate();
  });

  it('C7: garbage and oversized frames on the listening port are refused and counted, the node carries on', async () => {
    const n1 = await node('n1');
    const n2 = await node('n2');
    wire([n1, n2]);
    await fullyConnected([n1, n2]);

    const garbage = await rawSocket(n1);
    let closed = closeCode(garbage.ws);
    garbage.ws.send(Uint8Array.of(0xc1, 0xff, 0x00, 0x13, 0x37));
    expect(await closed).toBe(PeerCloseCode.protocolError);

    const text = await rawSocket(n1);
    closed = closeCode(text.ws);
    text.ws.send('hello?');
    expect(await closed).toBe(PeerCloseCode.protocolError);

    // Bigger than handshakeFrameBytesMax: ws refuses it before we ever buffer it whole.
    const big = await rawSocket(n1);
    closed = closeCode(big.ws);
    big.ws.send(new Uint8Array(64 * 1024));
    expect(await closed).toBe(1009);

    expect(n1.transport.stats().handshakesRejected).toBe(2);
    n2.transport.send([heartbeat('n2', 'n1', 3)]);
    await waitFor(() => n1.received.length === 1, 'delivery after the garbage');
  });

  it('C7: invalid messages from an authenticated peer are dropped and counted; a garbage frame resets the link', async () => {
    // A fake n2 that knows the secret and speaks the listener side of the handshake, then misbehaves.
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0, path: peerPath });
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const connections: WebSocket[] = [];
    server.on('connection', (ws) => {
      connections.push(ws);
      cleanups.push(() => ws.terminate());
      const listenerNonce = newNonce();
      ws.send(packr.pack({ t: 'challenge', v: peerProtocolVersion, nonce: listenerNonce }));
      ws.once('message', (data: Buffer) => {
        const hello = packr.unpack(data) as { from: string; to: string; nonce: Uint8Array };
        const input = {
          cluster: clusterId,
          from: hello.from,
          to: hello.to,
          listenerNonce,
          dialerNonce: hello.nonce,
        };
        ws.send(
          packr.pack({
            t: 'welcome',
            v: peerProtocolVersion,
            proof: computeProof(Buffer.from(secret), 'welcome', input),
          }),
        );
      });
    });
    await once(server, 'listening');
    const n1 = await node('n1');
    wire([n1], new Map([['n2', { host: '127.0.0.1', port: (server.address() as AddressInfo).port }]]));
    await waitFor(() => n1.transport.peerReachable('n2'), 'n1 hears the fake n2');
    let disconnects = 0;
    n1.transport.onPeerDisconnected((peer) => {
      if (peer === 'n2') disconnects += 1;
    });

    const good = heartbeat('n2', 'n1', 5);
    const frame = [
      { ...good, extra: 'stripped' },
      { ...good, from: 'n3' }, // not the authenticated peer
      { ...good, to: 'n7' }, // not us
      { ...good, type: 'launchMissiles' },
      { ...good, term: -1 },
      { ...append('n2', 'n1', 4, 2), entries: [append('n2', 'n1', 4, 1).type, 5] },
      'just a string',
      { type: 'app', from: 'n2', to: 'n1', term: 0, kind: 'x', body: 'not bytes' },
      { type: 'app', from: 'n3', to: 'n1', term: 0, kind: 'x', body: Uint8Array.of(1) },
    ];
    connections[0]!.send(packr.pack(frame));
    await waitFor(() => n1.received.length === 1, 'the valid message');
    expect(n1.received[0]).toEqual(good);
    expect(n1.received[0]).not.toHaveProperty('extra');
    await waitFor(() => n1.transport.stats().peers.n2!.messagesInvalid === 8, 'invalid count');

    connections[0]!.send(Uint8Array.of(0xc1, 0xc1, 0xc1));
    await waitFor(() => n1.transport.stats().peers.n2!.framesInvalid === 1, 'garbage frame counted');
    await waitFor(() => disconnects === 1, 'link reset');
    await waitFor(() => connections.length === 2 && n1.transport.peerReachable('n2'), 'n1 redials');
  });

  it('reconnects, with backoff, after a peer restarts; reports the lost link at once', async () => {
    const n1 = await node('n1');
    let n2 = await node('n2');
    wire([n1, n2]);
    await fullyConnected([n1, n2]);
    const lost: string[] = [];
    n1.transport.onPeerDisconnected((peer) => lost.push(peer));

    const address = n2.transport.address;
    await n2.transport.close();
    started.splice(started.indexOf(n2), 1);
    await waitFor(() => lost.length === 1, 'disconnect event');
    expect(lost).toEqual(['n2']);
    expect(n1.transport.peerConnected('n2')).toBe(false);
    n1.transport.send([heartbeat('n1', 'n2', 1)]);
    expect(n1.transport.stats().peers.n2!.dropsDisconnected).toBeGreaterThanOrEqual(1);

    // Down for a few backoff rounds, then back on the same port.
    await new Promise((resolve) => setTimeout(resolve, 150));
    n2 = await node('n2', {}, address.port);
    wire(
      [n1, n2],
      new Map([
        ['n1', n1.transport.address],
        ['n2', address],
      ]),
    );
    await fullyConnected([n1, n2]);
    n1.transport.send([heartbeat('n1', 'n2', 2)]);
    await waitFor(() => n2.received.length === 1, 'delivery after restart');
    expect(n1.transport.stats().peers.n2!.receiveLinksUp).toBe(2);
  });

  it('bounds each send queue in messages and bytes, counting drops', async () => {
    const limits = { ...fastLimits, sendQueueMessagesMax: 10 };
    const n1 = await node('n1', { limits });
    const n2 = await node('n2', { limits });
    wire([n1, n2]);
    await fullyConnected([n1, n2]);

    n1.transport.send(Array.from({ length: 100 }, (_, k) => heartbeat('n1', 'n2', k)));
    expect(n1.transport.stats().peers.n2!).toMatchObject({ queueMessages: 10, dropsQueueFull: 90 });
    await waitFor(() => n2.received.length === 10, 'the ten that fit');
    expect(n2.received.map((m) => (m.type === 'heartbeat' ? m.readRound : -1))).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ]);
    expect(n1.transport.stats().peers.n2!.queueMessages).toBe(0);

    const byteLimits = { ...fastLimits, peerFrameBytesMax: 64 * 1024, sendQueueBytesMax: 64 * 1024 };
    const n3 = await node('n3', { limits: byteLimits });
    const n4 = await node('n4', { limits: byteLimits });
    wire([n3, n4]);
    await fullyConnected([n3, n4]);
    // ~20 KiB each: three fit in 64 KiB, the rest are dropped; one of 70 KiB can never be framed.
    n3.transport.send(Array.from({ length: 10 }, (_, k) => append('n3', 'n4', k, 1, 20 * 1024)));
    n3.transport.send([append('n3', 'n4', 0, 1, 70 * 1024)]);
    expect(n3.transport.stats().peers.n4!).toMatchObject({
      queueMessages: 3,
      dropsQueueFull: 7,
      dropsOversize: 1,
    });
    await waitFor(() => n4.received.length === 3, 'the three that fit');
  });

  it('pauses above the socket high-water mark and resumes as writes complete, in order', async () => {
    const limits = { ...fastLimits, socketBufferedBytesHighWater: 1, frameMessagesMax: 10 };
    const n1 = await node('n1', { limits });
    const n2 = await node('n2', { limits });
    wire([n1, n2]);
    await fullyConnected([n1, n2]);
    n1.transport.send(Array.from({ length: 200 }, (_, k) => append('n1', 'n2', k, 1, 2000)));
    await waitFor(() => n2.received.length === 200, 'all 200');
    expect(n2.received.map((m) => (m.type === 'append' ? m.prevIndex : -1))).toEqual(
      Array.from({ length: 200 }, (_, k) => k),
    );
    const stats = n1.transport.stats().peers.n2!;
    expect(stats.framesSent).toBeGreaterThanOrEqual(20);
    expect(stats.dropsQueueFull).toBe(0);
  });

  it('a link that goes silent (no close, no pongs) is dropped and reported', async () => {
    const n1 = await node('n1');
    const n2 = await node('n2');
    // n1 reaches n2 through a TCP relay we can freeze, as when a host dies without closing its sockets.
    const sockets: Socket[] = [];
    const relay = createServer((inbound) => {
      const outbound = connect(n2.transport.address.port, '127.0.0.1');
      sockets.push(inbound, outbound);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      inbound.on('error', () => {});
      outbound.on('error', () => {});
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
      relay.close();
    });
    const relayPort = (relay.address() as AddressInfo).port;
    wire(
      [n1, n2],
      new Map([
        ['n1', n1.transport.address],
        ['n2', { host: '127.0.0.1', port: relayPort }],
      ]),
    );
    await fullyConnected([n1, n2]);
    const lost: string[] = [];
    n1.transport.onPeerDisconnected((peer) => lost.push(peer));

    for (const socket of sockets) {
      socket.unpipe();
      socket.pause();
      socket.removeAllListeners('end');
      socket.removeAllListeners('close');
    }
    const frozenAt = Date.now();
    await waitFor(() => lost.includes('n2'), 'idle detection', 2000);
    expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(
      fastLimits.linkIdleTimeoutMs! - fastLimits.pingIntervalMs!,
    );
    expect(n1.logs.some((e) => e.event === 'peer_link_idle' && e.peer === 'n2')).toBe(true);
  });

  it('refuses unusable options with a typed error', async () => {
    await expect(startNode('n1', { secret: 'short' })).rejects.toBeInstanceOf(TransportConfigError);
    await expect(startNode('', {})).rejects.toBeInstanceOf(TransportConfigError);
  });
});

function assertAppend(message: Message | undefined): asserts message is Extract<Message, { type: 'append' }> {
  expect(message?.type).toBe('append');
}
