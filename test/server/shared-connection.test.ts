// Shared connections (src/mux.ts, src/server/client-link.ts) on a live in-process node, driven by a raw
// `raftlock-mux.1` client: each channel is a client connection of its own (S10, C6), the frames for many
// channels leave in one message, and a socket that breaks the format goes with all its channels (C7).

import { Packr, Unpackr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ConnectionPool, connect, type Session, SessionLockScope } from '../../src/client/index.ts';
import {
  MuxKind,
  MuxOutbox,
  muxProtocol,
  readMuxClose,
  readMuxMessage,
  toClient,
  toNode,
} from '../../src/mux.ts';
import { ClientCloseCode, clientProtocolVersion } from '../../src/protocol.ts';
import { TcpProxy } from '../client/proxy.ts';
import { type LiveCluster, startLiveCluster } from '../security/live.ts';

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

type Frame = Record<string, unknown>;

interface Received {
  readonly channel: number;
  readonly frame?: Frame;
  readonly close?: { code: number; reason: string };
}

/** A raw shared-connection client: sends records, keeps every message it gets (as lists of records). */
class RawShared {
  readonly messages: Received[][] = [];
  closeCode: number | null = null;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const records: Received[] = [];
      const problem = readMuxMessage(data, toClient, (channel, kind, payload) => {
        if (kind === MuxKind.frame) records.push({ channel, frame: unpackr.unpack(payload) as Frame });
        else records.push({ channel, close: readMuxClose(payload) });
      });
      if (problem !== null) throw new Error(`server sent a bad message: ${problem}`);
      this.messages.push(records);
      this.wake();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.wake();
    });
  }

  static open(url: string): Promise<RawShared> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, [muxProtocol], { perMessageDeflate: false });
      ws.once('open', () => resolve(new RawShared(ws)));
      ws.once('error', reject);
    });
  }

  /** Sends records as one message. */
  send(records: readonly ({ channel: number; frame: Frame } | { channel: number; close: number })[]): void {
    const outbox = new MuxOutbox(toNode);
    for (const record of records) {
      if ('frame' in record) outbox.pushFrame(record.channel, packr.pack(record.frame));
      else outbox.pushClose(record.channel, record.close, 'bye');
    }
    for (const message of outbox.take()) this.ws.send(message);
  }

  get records(): Received[] {
    return this.messages.flat();
  }

  async until(what: string, done: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The frame answering request `id` on `channel`, once it came. */
  async answer(channel: number, id: number): Promise<Frame> {
    let found: Frame | undefined;
    await this.until(`answer ${id} on channel ${channel}`, () => {
      found = this.records.find(
        (r) => r.channel === channel && r.frame?.t === 'res' && r.frame.id === id,
      )?.frame;
      return found !== undefined;
    });
    return found!;
  }

  async welcome(channel: number): Promise<{ id: number }> {
    await this.until(`welcome on channel ${channel}`, () =>
      this.records.some((r) => r.channel === channel && r.frame?.t === 'welcome'),
    );
    const frame = this.records.find((r) => r.channel === channel && r.frame?.t === 'welcome')!.frame!;
    return frame.session as { id: number };
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

const hello = { t: 'hello', v: clientProtocolVersion, principal: 'control', password: 'password' };
const lock = (id: number, name: string, scope = 'UNLOCK_ON_SESSION_LOSS') => ({
  t: 'req',
  id,
  op: 'lock',
  requestNo: id,
  name,
  scope,
});

let cluster: LiveCluster;

beforeAll(async () => {
  cluster = await startLiveCluster({ size: 1 });
  await cluster.waitForLeader();
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('shared connections', () => {
  it('C6: two sessions on one socket get welcomes of their own and lock independently; the answers one entry makes for both leave in one message', async () => {
    const raw = await RawShared.open(cluster.urls[0]!);
    try {
      raw.send([
        { channel: 1, frame: hello },
        { channel: 2, frame: hello },
      ]);
      const [one, two] = [await raw.welcome(1), await raw.welcome(2)];
      expect(one.id).not.toBe(two.id);
      expect(cluster.servers[0]!.gateway.connectionCount).toBe(2);
      const before = raw.messages.length;
      raw.send([
        { channel: 1, frame: lock(1, 'shared/a') },
        { channel: 2, frame: lock(1, 'shared/b') },
      ]);
      const [a, b] = [await raw.answer(1, 1), await raw.answer(2, 1)];
      expect(a).toMatchObject({ ok: true, result: { kind: 'granted', name: 'shared/a' } });
      expect(b).toMatchObject({ ok: true, result: { kind: 'granted', name: 'shared/b' } });
      // Both requests arrived in one message, were proposed in one turn and applied in one entry.
      const answers = raw.messages.slice(before).filter((m) => m.some((r) => r.frame?.t === 'res'));
      expect(answers).toHaveLength(1);
      expect([...new Set(answers[0]!.map((r) => r.channel))].sort()).toEqual([1, 2]);
      const table = cluster.servers[0]!.node.lockTable;
      expect(table.getLock('shared/a')?.owner).toBe(one.id);
      expect(table.getLock('shared/b')?.owner).toBe(two.id);
      // The same name from the other channel's session waits: they are different sessions.
      raw.send([{ channel: 2, frame: lock(2, 'shared/a') }]);
      expect(await raw.answer(2, 2)).toMatchObject({ ok: true, result: { kind: 'waiting' } });
    } finally {
      raw.ws.close(1000);
    }
  }, 30_000);

  it('S10: a channel that says goodbye releases its connection-scoped lock at once; the socket and the other channel stay', async () => {
    const raw = await RawShared.open(cluster.urls[0]!);
    try {
      raw.send([
        { channel: 1, frame: hello },
        { channel: 2, frame: hello },
      ]);
      const [, two] = [await raw.welcome(1), await raw.welcome(2)];
      raw.send([
        { channel: 1, frame: lock(1, 'scoped/a', 'UNLOCK_ON_CONNECTION_LOSS') },
        { channel: 2, frame: lock(1, 'scoped/b', 'UNLOCK_ON_CONNECTION_LOSS') },
      ]);
      await raw.answer(1, 1);
      await raw.answer(2, 1);
      raw.send([{ channel: 1, close: 1000 }]);
      raw.send([{ channel: 2, frame: lock(2, 'scoped/a') }]);
      expect(await raw.answer(2, 2)).toMatchObject({
        ok: true,
        result: { kind: 'granted', name: 'scoped/a' },
      });
      const table = cluster.servers[0]!.node.lockTable;
      expect(table.getLock('scoped/a')?.owner).toBe(two.id);
      expect(table.getLock('scoped/b')?.owner).toBe(two.id);
      expect(raw.closeCode).toBeNull();
      // A frame on the closed channel's number is stale: ignored, it opens nothing.
      const connections = cluster.servers[0]!.gateway.connectionCount;
      raw.send([{ channel: 1, frame: hello }]);
      raw.send([{ channel: 2, frame: { t: 'req', id: 3, op: 'ping' } }]);
      await raw.answer(2, 3);
      expect(cluster.servers[0]!.gateway.connectionCount).toBe(connections);
      expect(raw.records.filter((r) => r.channel === 1 && r.frame?.t === 'welcome')).toHaveLength(1);
    } finally {
      raw.ws.close(1000);
    }
  }, 30_000);

  it('C7: a request before the hello closes only that channel, with an error and 4000', async () => {
    const raw = await RawShared.open(cluster.urls[0]!);
    try {
      raw.send([
        { channel: 1, frame: hello },
        { channel: 2, frame: { t: 'req', id: 1, op: 'ping' } },
      ]);
      await raw.welcome(1);
      await raw.until('channel 2 closed', () =>
        raw.records.some((r) => r.channel === 2 && r.close !== undefined),
      );
      const closed = raw.records.filter((r) => r.channel === 2);
      expect(closed[0]?.frame).toMatchObject({ t: 'error', code: 'PROTOCOL_ERROR' });
      expect(closed[1]?.close?.code).toBe(ClientCloseCode.protocolError);
      raw.send([{ channel: 1, frame: { t: 'req', id: 1, op: 'ping' } }]);
      expect(await raw.answer(1, 1)).toMatchObject({ ok: true, result: { kind: 'pong' } });
    } finally {
      raw.ws.close(1000);
    }
  }, 30_000);

  it('C7: a malformed message closes the socket with 4000 and ends every channel on it; their sessions lose the connection', async () => {
    const raw = await RawShared.open(cluster.urls[0]!);
    raw.send([
      { channel: 1, frame: hello },
      { channel: 2, frame: hello },
    ]);
    await raw.welcome(1);
    await raw.welcome(2);
    const connections = cluster.servers[0]!.gateway.connectionCount;
    // A record that declares more bytes than the message has.
    raw.ws.send(Buffer.from([0, 0, 0, 1, MuxKind.frame, 0, 0, 0, 9, 0x80]));
    await raw.until('socket closed', () => raw.closeCode !== null);
    expect(raw.closeCode).toBe(ClientCloseCode.protocolError);
    expect(cluster.servers[0]!.gateway.connectionCount).toBe(connections - 2);
    expect(
      cluster.logs.some(
        (r) => r.event === 'client_shared_socket_closed' && String(r.reason).includes('declared'),
      ),
    ).toBe(true);
  }, 30_000);

  it('C7: text messages and an unknown record kind are refused the same way', async () => {
    for (const bad of ['hello', Buffer.from([0, 0, 0, 1, 7, 0, 0, 0, 0])]) {
      const raw = await RawShared.open(cluster.urls[0]!);
      raw.ws.send(bad, { binary: typeof bad !== 'string' });
      await raw.until('socket closed', () => raw.closeCode !== null);
      expect(raw.closeCode).toBe(ClientCloseCode.protocolError);
    }
  }, 30_000);

  it("C6: sessions of one pool share one socket; its loss is every session's connection loss (S5), and each resumes on a new shared socket", async () => {
    const proxy = await TcpProxy.start(cluster.urls[0]!);
    const pool = new ConnectionPool();
    const sessions: Session[] = [];
    try {
      const options = { servers: [proxy.url], principal: 'control', password: 'password', pool };
      sessions.push(await connect(options), await connect(options), await connect(options));
      expect(pool.socketCount).toBe(1);
      expect(pool.channelCount).toBe(3);
      const [s1, s2, s3] = sessions as [Session, Session, Session];
      expect(new Set(sessions.map((s) => s.sessionId)).size).toBe(3);
      const kept = await s1.lock('pool/kept');
      const scoped = await s2.lock('pool/scoped', SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
      const table = cluster.servers[0]!.node.lockTable;
      expect(table.getLock('pool/scoped')?.owner).toBe(s2.sessionId);
      const lost = new Promise((resolve) => s2.once('lockLost', resolve));
      proxy.cut();
      await lost;
      expect(scoped.isOwned()).toBe(false);
      // Every session comes back on one new shared socket, within its window.
      await Promise.all(
        sessions.map((s) => new Promise<void>((resolve) => s.once('reconnected', () => resolve()))),
      );
      expect(pool.socketCount).toBe(1);
      expect(pool.channelCount).toBe(3);
      // S5: the connection-scoped lock went with the connection; the session-scoped one stayed.
      expect(table.getLock('pool/kept')?.owner).toBe(s1.sessionId);
      await cluster.servers[0]!.node.readBarrier();
      expect(table.getLock('pool/scoped')).toBeNull();
      expect(kept.isOwned()).toBe(true);
      const again = await s3.lock('pool/scoped');
      expect(again.isOwned()).toBe(true);
      await again.unlock();
      await kept.unlock();
      for (const session of sessions) await session.close();
      expect(pool.channelCount).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(pool.socketCount).toBe(0);
    } finally {
      for (const session of sessions) await session.close().catch(() => undefined);
      await pool.close();
      await proxy.stop();
    }
  }, 60_000);

  it('C7: mutated shared-socket messages never crash the node or move a lock; each socket is answered or closed', async () => {
    const table = cluster.servers[0]!.node.lockTable;
    const owner = await connect({ servers: cluster.urls, principal: 'control', password: 'password' });
    try {
      const held = await owner.lock('fuzz/held');
      const before = JSON.stringify(table.getLock('fuzz/held'));
      let seed = 0x5eed;
      const random = () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed / 0x80000000;
      };
      const valid = new MuxOutbox(toNode);
      valid.pushFrame(1, packr.pack(hello));
      valid.pushFrame(1, packr.pack({ t: 'req', id: 1, op: 'unlock', requestNo: 1, name: 'fuzz/held' }));
      valid.pushClose(2, 1000, 'bye');
      const template = valid.take()[0]!;
      let closed = 0;
      let answered = 0;
      for (let run = 0; run < 25; run++) {
        const raw = await RawShared.open(cluster.urls[0]!);
        const bytes = Buffer.from(template);
        for (let k = 1 + Math.floor(random() * 4); k > 0; k--) {
          const at = Math.floor(random() * bytes.length);
          bytes[at] = (bytes[at] as number) ^ (1 << Math.floor(random() * 8));
        }
        const cut = random() < 0.3 ? bytes.subarray(0, 1 + Math.floor(random() * (bytes.length - 1))) : bytes;
        raw.ws.send(cut);
        // Whatever the node made of it, a fresh channel is welcomed — unless it closed the socket.
        raw.send([{ channel: 1000, frame: hello }]);
        await raw.until(
          'the welcome or the close',
          () => raw.closeCode !== null || raw.records.some((r) => r.channel === 1000),
        );
        if (raw.closeCode !== null) closed++;
        else answered++;
        raw.ws.terminate();
      }
      expect(closed).toBeGreaterThan(4);
      expect(answered).toBeGreaterThan(0);
      expect(cluster.fatal).toEqual([]);
      expect(JSON.stringify(table.getLock('fuzz/held'))).toBe(before);
      expect(held.isOwned()).toBe(true);
      await held.unlock();
    } finally {
      await owner.close();
    }
  }, 60_000);
});
