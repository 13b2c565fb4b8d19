// Shared connections on the client (src/mux.ts has the format): the sessions that connect with the same
// ConnectionPool share one WebSocket per server URL, each on a channel of its own. A channel is a client
// connection in every sense the protocol has — hello, welcome, its end is that session's connection loss —
// so session.ts and connection.ts use it as they use a WebSocket (the FrameSocket subset). What the
// sharing buys is writes: every channel's frames of one tick leave in one message, one write.
//
// Rules kept here:
// - A channel takes its number when it first sends, so numbers rise in the order the server sees them
//   (a number at or below the highest it has seen is a closed channel's). A channel closed before it sent
//   anything sends nothing at all.
// - Frames sent before the shared socket opens wait in its outbox and leave with the first flush after.
// - The socket's end — closed, failed, a malformed message, `pool.close()` — closes every channel on it,
//   and the pool forgets the socket: the next channel to that URL dials a new one.
// - A socket left without channels at the end of a tick closes (1000): no idle socket lingers.
// - At most muxLimits.channelsMax channels share a socket; one more to the same URL opens another socket
//   (the server refuses more channels than that on one socket: a session must never be the one too many).
// - terminate() of a channel that heard nothing for a while, on a socket that heard nothing since either,
//   is a sign the socket itself is dead (a half-open connection): the pool pings it, and ends it if no
//   answer comes within as long again (1–10 s). Otherwise a session that drops its silent connection would
//   reconnect onto the same dead socket, again and again, where a socket of its own would have redialed.

import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { ProtocolError, SessionClosedError } from '../errors.ts';
import {
  isCloseCode,
  MuxKind,
  MuxOutbox,
  muxLimits,
  muxProtocol,
  readMuxClose,
  readMuxMessage,
  toClient,
  toNode,
} from '../mux.ts';
import { caOption, type FrameSocket, type TrustedCa, toBuffer } from './connection.ts';

/** The close record of `terminate()`: not a goodbye, so the server counts it a lost connection. */
const terminateCode = 4000;
/** What a channel's 'close' says when its connection dropped without a close from the other side. */
const abnormalCode = 1006;
/** What every channel's 'close' says when the server broke the shared-connection format. */
const protocolErrorCode = 1002;
/** How long a silent socket may take to answer the pool's ping, at least and at most. */
const probeMsMin = 1_000;
const probeMsMax = 10_000;
/** How long a socket that the pool closed may take to finish its closing handshake. */
const closeGraceMs = 1_000;

const noReason = Buffer.alloc(0);
const now = () => performance.now();

type ChannelState = 'open' | 'closed';

/**
 * One client connection on a pool's shared WebSocket: the FrameSocket subset of a `ws` WebSocket.
 * 'message' listeners get (data: Buffer, isBinary: true); 'close' listeners (code, reason: Buffer).
 */
export class PoolChannel implements FrameSocket {
  private readonly events = new EventEmitter();
  private state: ChannelState = 'open';
  /** The channel's number on the socket; 0 until it first sends. */
  number = 0;
  /** When the channel last heard from the server (or its socket opened for it). */
  lastHeardMs = now();
  /** True while its 'message' listeners run: a terminate() then answers what it heard, not silence. */
  private dispatching = false;

  /** @internal */
  constructor(private readonly socket: SharedSocket) {}

  /** The server URL of its shared socket. */
  get url(): string {
    return this.socket.url;
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /**
   * Queues one frame (kept by reference until the tick's flush: do not reuse its bytes). Before the shared
   * socket opens, it waits for it; after the channel closed, it is dropped, as a closed WebSocket drops it.
   */
  send(data: Uint8Array): void {
    if (this.state === 'closed') return;
    this.socket.sendFrame(this, data);
  }

  /** Sends the channel's close record (1000/1001: a goodbye) and closes it; 'close' follows in this tick. */
  close(code = 1000, reason = ''): void {
    if (this.state === 'closed') return;
    if (!isCloseCode(code))
      throw new TypeError(`a channel's close code is 1000, 1001 or 4000–4999, not ${code}`);
    this.socket.closeChannel(this, code, reason);
    this.closeLater(code, Buffer.from(reason, 'utf8'));
  }

  /** Drops the channel without a goodbye (close record 4000); 'close' (1006) follows in this tick. */
  terminate(): void {
    if (this.state === 'closed') return;
    const silent = !this.dispatching && this.socket.silentSince(this.lastHeardMs);
    this.socket.closeChannel(this, terminateCode, '');
    this.closeLater(abnormalCode, noReason);
    if (silent) this.socket.probe();
  }

  on(event: 'open', listener: () => void): this;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: string, listener: (...args: never[]) => void): this {
    this.events.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off(event: 'open', listener: () => void): this;
  off(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  off(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  off(event: 'error', listener: (error: Error) => void): this;
  off(event: string, listener: (...args: never[]) => void): this {
    this.events.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** @internal The shared socket is open (or was when the channel was made). */
  opened(): void {
    if (this.state !== 'open') return;
    this.lastHeardMs = now();
    this.events.emit('open');
  }

  /** @internal One frame for this channel. */
  deliver(frame: Buffer): void {
    if (this.state === 'closed') return;
    this.lastHeardMs = now();
    this.dispatching = true;
    try {
      this.events.emit('message', frame, true);
    } finally {
      this.dispatching = false;
    }
  }

  /** @internal The server closed the channel, or its socket ended: 'error' (if any, and heard), then 'close'. */
  ended(code: number, reason: Buffer, error: Error | null): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (error !== null && this.events.listenerCount('error') > 0) this.events.emit('error', error);
    this.events.emit('close', code, reason);
  }

  private closeLater(code: number, reason: Buffer): void {
    this.state = 'closed';
    process.nextTick(() => this.events.emit('close', code, reason));
  }
}

/** What a shared socket asks of its pool. */
interface SocketOwner {
  /** Flush `socket` at the end of this tick, with every other socket written to in it. */
  schedule(socket: SharedSocket): void;
  /** The socket ended: the next channel to its URL dials anew. */
  forget(socket: SharedSocket): void;
}

/** One WebSocket of the pool, speaking `raftlock-mux.1`, and the channels on it. */
class SharedSocket {
  private readonly ws: WebSocket;
  private readonly outbox = new MuxOutbox(toNode);
  /** Every open channel, numbered or not yet. */
  private readonly members = new Set<PoolChannel>();
  private readonly byNumber = new Map<number, PoolChannel>();
  private nextNumber = 1;
  /** Channels ever made on this socket: each takes at most one number. */
  private made = 0;
  private isOpen = false;
  private isEnded = false;
  /** The server's response did not select the subprotocol. */
  private refused = false;
  private lastHeardMs = now();
  /** A message came on this socket (the first one tells a node without shared connections apart). */
  private heardMessage = false;
  private probeTimer: NodeJS.Timeout | null = null;
  /** Resolves once the WebSocket has closed. */
  readonly gone: Promise<void>;

  constructor(
    private readonly pool: SocketOwner,
    readonly url: string,
    timeoutMs: number,
    ca: TrustedCa | undefined,
  ) {
    this.ws = new WebSocket(url, [muxProtocol], {
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
      maxPayload: toClient.messageBytesMax,
      ...caOption(ca),
    });
    const ws = this.ws;
    this.gone = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.on('upgrade', (response) => {
      if (response.headers['sec-websocket-protocol'] !== muxProtocol) this.refused = true;
    });
    ws.on('open', () => this.onOpen());
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('ping', () => this.heard());
    ws.on('pong', () => this.heard());
    ws.on('error', (error) => {
      const failure = this.refused ? this.refusal() : error;
      this.end(abnormalCode, noReason, failure, 'none');
    });
    ws.on('close', (code, reason) => this.end(code || abnormalCode, reason, null, 'none'));
  }

  get ended(): boolean {
    return this.isEnded;
  }

  get channelCount(): number {
    return this.members.size;
  }

  /** Room for one more channel. */
  get hasRoom(): boolean {
    return (
      !this.isEnded &&
      this.ws.readyState <= WebSocket.OPEN &&
      this.members.size < muxLimits.channelsMax &&
      this.made < muxLimits.channelMax
    );
  }

  attach(): PoolChannel {
    const channel = new PoolChannel(this);
    this.members.add(channel);
    this.made++;
    if (this.isOpen) process.nextTick(() => channel.opened());
    return channel;
  }

  sendFrame(channel: PoolChannel, frame: Uint8Array): void {
    if (channel.number === 0) {
      channel.number = this.nextNumber++;
      this.byNumber.set(channel.number, channel);
    }
    this.outbox.pushFrame(channel.number, frame);
    this.pool.schedule(this);
  }

  /** The channel closes from this side: its close record, if the server ever heard of it. */
  closeChannel(channel: PoolChannel, code: number, reason: string): void {
    this.detach(channel);
    if (this.isEnded) return;
    if (channel.number !== 0) this.outbox.pushClose(channel.number, code, reason);
    // Also when nothing was queued: the flush closes the socket if this was its last channel.
    this.pool.schedule(this);
  }

  /** The socket heard nothing after `sinceMs`. */
  silentSince(sinceMs: number): boolean {
    return this.isOpen && !this.isEnded && this.lastHeardMs <= sinceMs;
  }

  /** Pings a socket that seems silent; ends it if nothing at all comes back in time. */
  probe(): void {
    if (this.isEnded || this.probeTimer !== null || this.ws.readyState !== WebSocket.OPEN) return;
    const since = this.lastHeardMs;
    const waitMs = Math.min(probeMsMax, Math.max(probeMsMin, now() - since));
    this.ws.ping();
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.lastHeardMs === since)
        this.end(abnormalCode, Buffer.from('shared connection silent'), null, 'terminate');
    }, waitMs);
    this.probeTimer.unref();
  }

  /** Sends what the tick queued; closes the socket if no channel is left on it. */
  flush(): void {
    if (this.isEnded) return;
    if (this.ws.readyState === WebSocket.OPEN)
      for (const message of this.outbox.take()) this.ws.send(message);
    if (this.members.size === 0) this.end(1000, noReason, null, 'close');
  }

  /**
   * Ends the socket: every channel on it gets 'close' (after 'error' when `error`), now, before the
   * socket's own close goes out; the pool forgets it. `action` is what to do with the WebSocket.
   */
  end(code: number, reason: Buffer, error: Error | null, action: 'close' | 'terminate' | 'none'): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.pool.forget(this);
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    const channels = [...this.members];
    this.members.clear();
    this.byNumber.clear();
    for (const channel of channels) channel.ended(code, reason, error);
    const ws = this.ws;
    if (action === 'terminate' || (action === 'close' && ws.readyState !== WebSocket.OPEN)) {
      ws.terminate();
    } else if (action === 'close') {
      // Close records of this tick (the last channel's goodbye) go before the socket's close.
      for (const message of this.outbox.take()) ws.send(message);
      ws.close(1000);
      setTimeout(() => ws.terminate(), closeGraceMs).unref();
    }
  }

  private detach(channel: PoolChannel): void {
    this.members.delete(channel);
    if (channel.number !== 0) this.byNumber.delete(channel.number);
  }

  private refusal(): ProtocolError {
    return new ProtocolError(
      `${this.url}: the server does not support shared connections (it did not select the ${muxProtocol} subprotocol)`,
    );
  }

  private heard(): void {
    this.lastHeardMs = now();
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
  }

  private onOpen(): void {
    if (this.isEnded) return;
    if (this.ws.protocol !== muxProtocol) {
      const error = this.refusal();
      this.end(protocolErrorCode, Buffer.from(error.message.slice(0, 100)), error, 'terminate');
      return;
    }
    this.isOpen = true;
    this.lastHeardMs = now();
    for (const channel of [...this.members]) channel.opened();
    // Frames queued before the socket opened (and the hellos just sent) leave with this tick's flush.
    this.pool.schedule(this);
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.isEnded) return;
    this.heard();
    const bytes = toBuffer(data);
    const first = !this.heardMessage;
    this.heardMessage = true;
    const problem = !isBinary
      ? 'a text message'
      : readMuxMessage(bytes, toClient, (number, kind, payload) => {
          if (this.isEnded) return;
          const channel = this.byNumber.get(number);
          if (channel === undefined) return; // closed, or never opened: stale
          if (kind === MuxKind.frame) {
            channel.deliver(payload as Buffer);
          } else {
            const { code, reason } = readMuxClose(payload);
            this.detach(channel);
            channel.ended(code, Buffer.from(reason, 'utf8'), null);
            // Its last channel gone: the flush closes the socket.
            this.pool.schedule(this);
          }
        });
    if (problem === null) return;
    // A node from before shared connections accepts the subprotocol (ws picks the first one offered) and
    // answers with plain frames: a msgpack map where a record's channel number should be.
    const plainFrame = first && isBinary && isMsgpackMapStart(bytes[0]);
    const error = new ProtocolError(
      plainFrame
        ? `${this.url}: the server answered with a plain frame: it does not support shared connections (${problem})`
        : `${this.url}: shared connection: ${problem}`,
    );
    this.end(protocolErrorCode, Buffer.from(error.message.slice(0, 100)), error, 'terminate');
  }
}

/** The first byte of a msgpack map (fixmap, map 16, map 32): how every plain frame starts. */
function isMsgpackMapStart(byte: number | undefined): boolean {
  return byte !== undefined && ((byte >= 0x80 && byte <= 0x8f) || byte === 0xde || byte === 0xdf);
}

/**
 * Lets sessions share WebSockets: `connect({ servers, …, pool })` puts the session on a channel of the
 * pool's socket to its server (one per URL, more past muxLimits.channelsMax channels) instead of a
 * WebSocket of its own. The server must support shared connections (subprotocol `raftlock-mux.1`), or
 * connecting fails with PROTOCOL_ERROR. One pool per process is the usual use; sessions may move between
 * servers on reconnects and take channels wherever they go.
 */
export class ConnectionPool {
  /** Live sockets by URL; a URL has more than one only past channelsMax channels. */
  private readonly sockets = new Map<string, SharedSocket[]>();
  /** Sockets with something to flush (or to close) at the end of this tick. */
  private readonly dirty = new Set<SharedSocket>();
  private isClosed = false;
  private readonly owner: SocketOwner = {
    schedule: (socket) => {
      if (this.dirty.has(socket)) return;
      if (this.dirty.size === 0) process.nextTick(() => this.flush());
      this.dirty.add(socket);
    },
    forget: (socket) => {
      this.dirty.delete(socket);
      const list = this.sockets.get(socket.url);
      if (list === undefined) return;
      const at = list.indexOf(socket);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0) this.sockets.delete(socket.url);
    },
  };

  /** `close()` was called: no channel opens any more. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Shared WebSockets open or opening. */
  get socketCount(): number {
    let count = 0;
    for (const list of this.sockets.values()) count += list.length;
    return count;
  }

  /** Channels open on them. */
  get channelCount(): number {
    let count = 0;
    for (const list of this.sockets.values()) for (const socket of list) count += socket.channelCount;
    return count;
  }

  /**
   * @internal A new channel to `url`: on the open (or opening) socket there, or on one dialled now with
   * `timeoutMs` as its handshake timeout and `ca` for wss:// (the dialling channel's settings serve every
   * later channel on that socket). 'open' fires once the socket is open. Throws SessionClosedError once
   * the pool is closed.
   */
  openChannel(url: string, timeoutMs: number, ca?: TrustedCa): PoolChannel {
    if (this.isClosed) throw new SessionClosedError('the connection pool is closed');
    let list = this.sockets.get(url);
    if (list === undefined) {
      list = [];
      this.sockets.set(url, list);
    }
    let socket = list.find((candidate) => candidate.hasRoom);
    if (socket === undefined) {
      socket = new SharedSocket(this.owner, url, timeoutMs, ca);
      list.push(socket);
    }
    return socket.attach();
  }

  /**
   * Closes every shared socket (1000). The channels on them close first, so their sessions see a lost
   * connection at once; those sessions then fail to reconnect (SESSION_CLOSED) and end, and the cluster
   * lets their sessions expire. Close the sessions first to end them cleanly. Resolves once the sockets
   * have closed.
   */
  async close(): Promise<void> {
    this.isClosed = true;
    const sockets = [...this.sockets.values()].flat();
    for (const socket of sockets) socket.end(1000, Buffer.from('connection pool closed'), null, 'close');
    await Promise.all(sockets.map((socket) => socket.gone));
  }

  private flush(): void {
    const sockets = [...this.dirty];
    this.dirty.clear();
    for (const socket of sockets) socket.flush();
  }
}
