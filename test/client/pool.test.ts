// ConnectionPool (src/client/pool.ts) against a small fake server that speaks `raftlock-mux.1` records
// (src/mux.ts): batching, channel numbers, routing, closes either way, the socket's end, refusals.

import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { decode, encode, type FrameSocket, openConnection } from '../../src/client/connection.ts';
import { connect, ProtocolError, SessionClosedError } from '../../src/client/index.ts';
import { ConnectionPool, type PoolChannel } from '../../src/client/pool.ts';
import {
  MuxKind,
  MuxOutbox,
  muxLimits,
  muxProtocol,
  readMuxClose,
  readMuxMessage,
  toClient,
  toNode,
} from '../../src/mux.ts';
import { type ClientFrame, clientProtocolVersion, type ServerFrame } from '../../src/protocol.ts';

interface ReadRecord {
  readonly channel: number;
  readonly kind: MuxKind;
  readonly payload: Buffer;
}

type WriteRecord =
  | readonly [channel: number, frame: Uint8Array]
  | readonly [channel: number, close: number, reason: string];

/** One client socket as the fake server sees it: its messages, decoded, in order. */
class ServerSocket {
  readonly messages: ReadRecord[][] = [];
  readonly problems: string[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private read = 0;
  private wake: (() => void) | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const records: ReadRecord[] = [];
      const problem = readMuxMessage(data, toNode, (channel, kind, payload) =>
        records.push({ channel, kind, payload: Buffer.from(payload) }),
      );
      if (problem !== null) this.problems.push(problem);
      this.messages.push(records);
      this.wake?.();
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
  }

  /** The next message not read yet. */
  async next(): Promise<ReadRecord[]> {
    while (this.read >= this.messages.length) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.messages[this.read++]!;
  }

  /** Sends all records in one message. */
  send(...records: WriteRecord[]): void {
    const outbox = new MuxOutbox(toClient);
    for (const record of records) {
      if (record.length === 2) outbox.pushFrame(record[0], record[1]);
      else outbox.pushClose(record[0], record[1], record[2]);
    }
    const messages = outbox.take();
    expect(messages).toHaveLength(1);
    this.ws.send(messages[0]!);
  }
}

class FakeServer {
  readonly sockets: ServerSocket[] = [];
  private waiters: ((socket: ServerSocket) => void)[] = [];

  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
  ) {
    wss.on('connection', (ws) => {
      const socket = new ServerSocket(ws);
      this.sockets.push(socket);
      for (const waiter of this.waiters.splice(0)) waiter(socket);
    });
  }

  static async start(options: { pick?: boolean; autoPong?: boolean } = {}): Promise<FakeServer> {
    const wss = new WebSocketServer({
      port: 0,
      host: '127.0.0.1',
      autoPong: options.autoPong ?? true,
      handleProtocols: (protocols) =>
        options.pick !== false && protocols.has(muxProtocol) ? muxProtocol : false,
    });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    const { port } = wss.address() as { port: number };
    return new FakeServer(wss, `ws://127.0.0.1:${port}`);
  }

  /** The `index`th socket a client opened (0 first), once it is there. */
  socket(index: number): Promise<ServerSocket> {
    const socket = this.sockets[index];
    if (socket !== undefined) return Promise.resolve(socket);
    return new Promise((resolve) => {
      const wait = () => {
        const found = this.sockets[index];
        if (found !== undefined) resolve(found);
        else this.waiters.push(wait);
      };
      this.waiters.push(wait);
    });
  }

  async stop(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

const frames = (records: readonly ReadRecord[]) =>
  records.map((record) =>
    record.kind === MuxKind.frame
      ? { channel: record.channel, frame: record.payload.toString() }
      : { channel: record.channel, close: readMuxClose(record.payload) },
  );

const opened = (channel: FrameSocket) => new Promise<void>((resolve) => channel.on('open', resolve));
const closeOf = (channel: FrameSocket) =>
  new Promise<{ code: number; reason: string }>((resolve) =>
    channel.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
const errorOf = (channel: FrameSocket) =>
  new Promise<Error>((resolve) => channel.on('error', (error) => resolve(error)));
/** Everything a channel receives, as strings. */
const inbox = (channel: FrameSocket) => {
  const received: string[] = [];
  channel.on('message', (data, isBinary) => {
    expect(isBinary).toBe(true);
    expect(Buffer.isBuffer(data)).toBe(true);
    received.push((data as Buffer).toString());
  });
  return received;
};

describe('ConnectionPool', () => {
  const pools: ConnectionPool[] = [];
  const servers: FakeServer[] = [];

  const setup = async (options: { pick?: boolean; autoPong?: boolean } = {}) => {
    const server = await FakeServer.start(options);
    servers.push(server);
    const pool = new ConnectionPool();
    pools.push(pool);
    return { server, pool };
  };
  /**
   * `count` channels on a new socket (the server's `socketIndex`th), each sending `hello <i>` once open;
   * resolves with the server's first message on that socket.
   */
  const channels = async (pool: ConnectionPool, server: FakeServer, count: number, socketIndex = 0) => {
    const list = Array.from({ length: count }, () => pool.openChannel(server.url, 2_000));
    for (const [i, channel] of list.entries())
      channel.on('open', () => channel.send(Buffer.from(`hello ${i}`)));
    const socket = await server.socket(socketIndex);
    const first = await socket.next();
    return { list, socket, first };
  };

  afterEach(async () => {
    await Promise.all(pools.splice(0).map((pool) => pool.close()));
    await Promise.all(servers.splice(0).map((server) => server.stop()));
  });

  it('channels opened in one tick share one socket; their hellos leave in one message, numbered from 1 up', async () => {
    const { server, pool } = await setup();
    const { list, socket, first } = await channels(pool, server, 32);
    expect(frames(first)).toEqual(list.map((_, i) => ({ channel: i + 1, frame: `hello ${i}` })));
    expect(list.map((channel) => channel.number)).toEqual(list.map((_, i) => i + 1));
    expect(server.sockets).toHaveLength(1);
    expect(pool.socketCount).toBe(1);
    expect(pool.channelCount).toBe(32);

    // On the open socket too: two new channels and a frame of an old one in one tick, one message.
    const late = [pool.openChannel(server.url, 2_000), pool.openChannel(server.url, 2_000)];
    await Promise.all(late.map(opened));
    late[1]!.send(Buffer.from('b'));
    late[0]!.send(Buffer.from('a'));
    list[5]!.send(Buffer.from('five'));
    expect(frames(await socket.next())).toEqual([
      { channel: 33, frame: 'b' },
      { channel: 34, frame: 'a' },
      { channel: 6, frame: 'five' },
    ]);
    expect(socket.messages).toHaveLength(2);
    expect(socket.problems).toEqual([]);
    expect(server.sockets).toHaveLength(1);
  });

  it('routes each frame of a message to its channel; records for unknown channels are ignored', async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 2);
    const [a, b] = [inbox(list[0]!), inbox(list[1]!)];
    const bHeard = new Promise<void>((resolve) => list[1]!.on('message', () => resolve()));
    socket.send(
      [2, Buffer.from('for b')],
      [1, Buffer.from('for a')],
      [7, Buffer.from('nobody')],
      [1, Buffer.from('again a')],
    );
    await bHeard;
    expect(a).toEqual(['for a', 'again a']);
    expect(b).toEqual(['for b']);
  });

  it("a server's close record closes that channel alone, with its code and reason; its later frames are dropped", async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 2);
    const [one, two] = list as [PoolChannel, PoolChannel];
    const a = inbox(one);
    const b = inbox(two);
    const closed = closeOf(one);
    socket.send([1, 4003, 'not the leader']);
    expect(await closed).toEqual({ code: 4003, reason: 'not the leader' });
    expect(one.isClosed).toBe(true);
    expect(pool.channelCount).toBe(1);

    const bHeard = new Promise<void>((resolve) => two.on('message', () => resolve()));
    socket.send([1, Buffer.from('late for a')], [2, Buffer.from('for b')]);
    await bHeard;
    expect(a).toEqual([]);
    expect(b).toEqual(['for b']);
    expect(two.isClosed).toBe(false);
    expect(pool.socketCount).toBe(1);
  });

  it("the socket's close closes every channel with its code; the next channel dials a new socket", async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 3);
    const closes = list.map(closeOf);
    socket.ws.close(1001, 'going away');
    expect(await Promise.all(closes)).toEqual(list.map(() => ({ code: 1001, reason: 'going away' })));
    expect(pool.socketCount).toBe(0);
    expect(pool.channelCount).toBe(0);

    const again = pool.openChannel(server.url, 2_000);
    await opened(again);
    again.send(Buffer.from('hello again'));
    const second = await server.socket(1);
    expect(frames(await second.next())).toEqual([{ channel: 1, frame: 'hello again' }]);
    expect(pool.socketCount).toBe(1);
  });

  it('close() sends a close record (1000: a goodbye), terminate() one with 4000; both close locally and are once only', async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 3);
    const [a, b, c] = list as [PoolChannel, PoolChannel, PoolChannel];
    const silent = pool.openChannel(server.url, 2_000); // never sends: its close sends nothing
    await opened(silent);

    const aClosed = closeOf(a);
    const bClosed = closeOf(b);
    let early = false;
    a.on('close', () => (early = true));
    a.close();
    expect(early).toBe(false); // asynchronous, as on a WebSocket
    b.terminate();
    silent.close(1000, 'never used');
    a.close(4001, 'twice');
    b.terminate();
    a.send(Buffer.from('after close'));
    expect(await aClosed).toEqual({ code: 1000, reason: '' });
    expect(await bClosed).toEqual({ code: 1006, reason: '' });
    expect(frames(await socket.next())).toEqual([
      { channel: 1, close: { code: 1000, reason: '' } },
      { channel: 2, close: { code: 4000, reason: '' } },
    ]);

    c.close(4005, 'replaced by a test');
    expect(frames(await socket.next())).toEqual([
      { channel: 3, close: { code: 4005, reason: 'replaced by a test' } },
    ]);
    expect(() => pool.openChannel(server.url, 2_000).close(1002)).toThrow(TypeError);
  });

  it("the last channel's close closes the socket (1000) after its close record", async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 2);
    list[0]!.close();
    list[1]!.close(1001, 'done');
    expect(frames(await socket.next())).toEqual([
      { channel: 1, close: { code: 1000, reason: '' } },
      { channel: 2, close: { code: 1001, reason: 'done' } },
    ]);
    expect((await socket.closed).code).toBe(1000);
    expect(pool.socketCount).toBe(0);
  });

  it('a channel closed and another opened in the same tick keep the socket', async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 1);
    list[0]!.terminate();
    const next = pool.openChannel(server.url, 2_000);
    await opened(next);
    next.send(Buffer.from('resumed'));
    expect(frames(await socket.next())).toEqual([{ channel: 1, close: { code: 4000, reason: '' } }]);
    expect(frames(await socket.next())).toEqual([{ channel: 2, frame: 'resumed' }]);
    expect(server.sockets).toHaveLength(1);
  });

  it('a malformed message from the server ends the socket: every channel gets a ProtocolError and closes (1002)', async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 2);
    const errors = list.map(errorOf);
    const closes = list.map(closeOf);
    const received = inbox(list[0]!);
    // A good frame record for channel 1, then a record of an unknown kind: nothing of it is delivered.
    const good = new MuxOutbox(toClient);
    good.pushFrame(1, Buffer.from('fine'));
    const bad = Buffer.from([0, 0, 0, 2, 9, 0, 0, 0, 1, 0x61]);
    socket.ws.send(Buffer.concat([good.take()[0]!, bad]));
    for (const error of await Promise.all(errors)) {
      expect(error).toBeInstanceOf(ProtocolError);
      expect(error.message).toContain('unknown kind 9');
    }
    expect((await Promise.all(closes)).map((close) => close.code)).toEqual([1002, 1002]);
    expect(received).toEqual([]);
    expect(pool.socketCount).toBe(0);
    expect((await socket.closed).code).toBe(1006); // dropped, not closed politely

    // A text message breaks the format as well.
    const { list: more, socket: second } = await channels(pool, server, 1, 1);
    const closed = closeOf(more[0]!);
    second.ws.send('text');
    expect((await closed).code).toBe(1002);
  });

  it('a server that does not select raftlock-mux.1 is refused with a PROTOCOL_ERROR saying so', async () => {
    const { server, pool } = await setup({ pick: false });
    const channel = pool.openChannel(server.url, 2_000);
    const [error, closed] = await Promise.all([errorOf(channel), closeOf(channel)]);
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error.message).toMatch(/does not support shared connections/);
    expect(closed.code).toBe(1006);
    expect(pool.socketCount).toBe(0);

    // Through openConnection, as connect() uses it: the typed error, not UNAVAILABLE.
    const refused = openConnection(server.url, { principal: 'p', password: 'x' }, 2_000, undefined, pool);
    await expect(refused).rejects.toBeInstanceOf(ProtocolError);
    await expect(
      connect({ servers: [server.url], principal: 'p', password: 'x', pool, connectDeadlineMs: 5_000 }),
    ).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

  it('a node from before shared connections (it takes the subprotocol, answers plain frames) fails PROTOCOL_ERROR saying so', async () => {
    // ws picks the first offered subprotocol unless told otherwise: such a node says yes, then speaks v1.
    const old = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((resolve) => old.once('listening', () => resolve()));
    old.on('connection', (ws) =>
      ws.on('message', () => ws.send(encode({ t: 'error', code: 'NOT_LEADER', message: 'v1' } as never))),
    );
    const pool = new ConnectionPool();
    try {
      const url = `ws://127.0.0.1:${(old.address() as { port: number }).port}`;
      const refused = openConnection(url, { principal: 'p', password: 'x' }, 2_000, undefined, pool);
      await expect(refused).rejects.toBeInstanceOf(ProtocolError);
      await expect(refused).rejects.toThrow(/plain frame: it does not support shared connections/);
      expect(pool.socketCount).toBe(0);
    } finally {
      await pool.close();
      await new Promise((resolve) => old.close(resolve));
    }
  });

  it('pool.close() closes every socket (1000) and its channels; later channels fail SESSION_CLOSED', async () => {
    const { server, pool } = await setup();
    const { list, socket } = await channels(pool, server, 2);
    const closes = list.map(closeOf);
    await pool.close();
    expect((await Promise.all(closes)).map((close) => close.code)).toEqual([1000, 1000]);
    expect((await socket.closed).code).toBe(1000);
    expect(pool.closed).toBe(true);
    expect(pool.socketCount).toBe(0);
    expect(() => pool.openChannel(server.url, 2_000)).toThrow(SessionClosedError);
    await expect(
      openConnection(server.url, { principal: 'p', password: 'x' }, 2_000, undefined, pool),
    ).rejects.toBeInstanceOf(SessionClosedError);
    const started = performance.now();
    await expect(
      connect({ servers: [server.url], principal: 'p', password: 'x', pool }),
    ).rejects.toBeInstanceOf(SessionClosedError);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it(`past ${muxLimits.channelsMax} channels on a socket, the next one opens another socket to the URL`, async () => {
    const { server, pool } = await setup();
    const list = Array.from({ length: muxLimits.channelsMax + 1 }, () => pool.openChannel(server.url, 2_000));
    expect(pool.socketCount).toBe(2);
    expect(pool.channelCount).toBe(muxLimits.channelsMax + 1);
    await Promise.all([opened(list[0]!), opened(list.at(-1)!)]);
    list.at(-1)!.send(Buffer.from('on the second'));
    expect(frames(await (await server.socket(1)).next())).toEqual([{ channel: 1, frame: 'on the second' }]);
    for (const channel of list) channel.close();
    await Promise.all(server.sockets.map((socket) => socket.closed));
    expect(pool.socketCount).toBe(0);
  });

  it('a terminate() after silence pings the socket: a dead socket ends every channel, a live one stays', async () => {
    const live = await setup();
    const dead = await setup({ autoPong: false });
    const onLive = await channels(live.pool, live.server, 2);
    const onDead = await channels(dead.pool, dead.server, 2);
    const pinged = new Promise<void>((resolve) => onLive.socket.ws.once('ping', () => resolve()));
    const deadClosed = closeOf(onDead.list[1]!);
    onLive.list[0]!.terminate();
    onDead.list[0]!.terminate();
    await pinged;
    expect(await deadClosed).toMatchObject({ code: 1006 });
    expect(dead.pool.socketCount).toBe(0);
    // The live socket answered; its probe ended before the dead one's did.
    expect(onLive.list[1]!.isClosed).toBe(false);
    expect(live.pool.socketCount).toBe(1);

    // A terminate() that answers a frame is not about silence: no ping.
    const { list, socket } = { list: onLive.list, socket: onLive.socket };
    let pings = 0;
    socket.ws.on('ping', () => pings++);
    const third = live.pool.openChannel(live.server.url, 2_000);
    await opened(third);
    third.send(Buffer.from('hello'));
    await socket.next(); // the terminate's close record
    await socket.next(); // the hello
    const terminated = closeOf(third);
    third.on('message', () => third.terminate());
    socket.send([3, Buffer.from('bad answer')]);
    await terminated;
    list[1]!.send(Buffer.from('still here'));
    expect(frames(await socket.next())).toEqual([{ channel: 3, close: { code: 4000, reason: '' } }]);
    expect(frames(await socket.next())).toEqual([{ channel: 2, frame: 'still here' }]);
    expect(pings).toBe(0);
  });

  it('sessions of connect({ pool }) share the socket; a channel close ends one, the socket lost reconnects both', async () => {
    const { server, pool } = await setup();
    let nextId = 1;
    /** Answers every hello with a welcome (resuming when asked) and every request with an error. */
    const serve = (socket: ServerSocket) => {
      socket.ws.on('message', (data: Buffer) => {
        const replies: [number, Uint8Array][] = [];
        readMuxMessage(data, toNode, (channel, kind, payload) => {
          if (kind !== MuxKind.frame) return;
          const frame = decodeClient(payload);
          if (frame.t === 'hello') {
            const id = frame.session?.id ?? nextId++;
            replies.push([channel, encodeServer(welcome(id, frame.session !== undefined))]);
          }
        });
        if (replies.length > 0) socket.send(...replies);
      });
    };
    const firstSocket = server.socket(0).then((socket) => {
      serve(socket);
      return socket;
    });
    const options = { servers: [server.url], principal: 'p', password: 'x', pool };
    const [one, two] = await Promise.all([connect(options), connect(options)]);
    const socket = await firstSocket;
    expect([one.sessionId, two.sessionId].sort()).toEqual([1, 2]);
    expect(server.sockets).toHaveLength(1);
    expect(frames(await socket.next()).map((record) => record.channel)).toEqual([1, 2]); // both hellos, one message

    // The server ends one session's channel (4006: session ended): that session closes, the other not.
    const channelOfOne = one.sessionId === 1 ? 1 : 2;
    const oneClosed = new Promise((resolve) => one.once('closed', resolve));
    socket.send([channelOfOne, 4006, 'session ended']);
    expect(await oneClosed).toBeInstanceOf(SessionClosedError);
    expect(two.isClosed).toBe(false);

    // The shared socket drops: the other session reconnects, resuming, on a new socket.
    const secondSocket = server.socket(1).then((next) => {
      serve(next);
      return next;
    });
    const reconnected = new Promise<void>((resolve) => two.once('reconnected', () => resolve()));
    socket.ws.terminate();
    await reconnected;
    const hello = decodeClient((await (await secondSocket).next())[0]!.payload);
    expect(hello).toMatchObject({ t: 'hello', session: { id: two.sessionId } });
    expect(pool.socketCount).toBe(1);
    expect(pool.channelCount).toBe(1);
  });

  it('S6: frames of one message are handled in wire order: a grant answered and then lost in the same message ends up lost', async () => {
    const { server, pool } = await setup();
    const firstSocket = server.socket(0);
    const connecting = connect({ servers: [server.url], principal: 'p', password: 'x', pool });
    const socket = await firstSocket;
    const [hello] = await socket.next();
    socket.send([hello!.channel, encodeServer(welcome(1, false))]);
    const session = await connecting;
    const locking = session.lock('a');
    const [request] = await socket.next();
    const frame = decodeClient(request!.payload);
    expect(frame).toMatchObject({ t: 'req', op: 'lock', name: 'a' });
    const lost = new Promise<unknown[]>((resolve) => session.once('lockLost', (...args) => resolve(args)));
    // The grant's answer, then (the same step on the node: the session's grant ended at once) its loss.
    const answer: ServerFrame = {
      t: 'res',
      id: (frame as { id: number }).id,
      ok: true,
      result: { kind: 'granted', name: 'a', sequence: 7, scope: 'UNLOCK_ON_SESSION_LOSS', held: true },
    };
    const notice: ServerFrame = { t: 'notice', notice: 'lost', name: 'a', sequence: 7, reason: 'released' };
    socket.send([hello!.channel, encodeServer(answer)], [hello!.channel, encodeServer(notice)]);
    const lock = await locking;
    expect(lock.getSequence()).toBe(7);
    expect(lock.isOwned()).toBe(false);
    const [lostLock, reason] = await lost;
    expect(lostLock).toBe(lock);
    expect(reason).toBe('released');
  });
});

function decodeClient(payload: Uint8Array): ClientFrame {
  return decode(Buffer.from(payload)) as unknown as ClientFrame;
}

function encodeServer(frame: ServerFrame): Buffer {
  return encode(frame as unknown as ClientFrame);
}

function welcome(id: number, resumed: boolean): ServerFrame {
  return {
    t: 'welcome',
    v: clientProtocolVersion,
    node: 'fake',
    session: { id, token: `token-${id}`, epoch: 1, principal: 'p', reconnectionWindowMs: 30_000 },
    resumed,
    connectionTimeoutMs: 60_000,
    locks: [],
    waits: [],
  };
}
