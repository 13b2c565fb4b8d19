// What the gateway writes a client connection's frames to: a WebSocket of its own (`SocketLink`), or one
// channel of a shared WebSocket (`SharedSocket`, src/mux.ts). Both leave in one write per socket per tick:
// the frames that one entry's apply sends to a client go out together, and on a shared socket so do the
// frames for all its sessions.

import type { Duplex } from 'node:stream';
import { type RawData, WebSocket } from 'ws';
import { assert } from '../assert.ts';
import { MuxKind, MuxOutbox, muxLimits, readMuxClose, readMuxMessage, toClient, toNode } from '../mux.ts';
import { ClientCloseCode } from '../protocol.ts';

export interface ClientLink {
  /** Frames sent now reach the client (unless the link drops later). */
  readonly open: boolean;
  /** Bytes written and not yet taken by the client; the gateway closes a link that lets it grow. */
  readonly bufferedAmount: number;
  send(frame: Uint8Array): void;
  /** Ends the link with a close code (ClientCloseCode) and reason; the gateway forgets the connection itself. */
  close(code: number, reason: string): void;
}

interface TickFlush {
  flush(): void;
}

const flushAtTickEnd = new Set<TickFlush>();

function flushAll(): void {
  const items = [...flushAtTickEnd];
  flushAtTickEnd.clear();
  for (const item of items) item.flush();
}

/** One callback at the end of the tick flushes every link written to in the tick. */
function scheduleFlush(item: TickFlush): void {
  if (flushAtTickEnd.has(item)) return;
  if (flushAtTickEnd.size === 0) process.nextTick(flushAll);
  flushAtTickEnd.add(item);
}

/** A connection of its own: one WebSocket, corked until the tick's work is done (ws has no cork itself). */
export class SocketLink implements ClientLink, TickFlush {
  private corked: Duplex | null = null;

  constructor(private readonly ws: WebSocket) {}

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(frame: Uint8Array): void {
    if (this.corked === null) {
      const socket = (this.ws as unknown as { _socket?: Duplex | null })._socket;
      if (socket !== undefined && socket !== null) {
        socket.cork();
        this.corked = socket;
        scheduleFlush(this);
      }
    }
    this.ws.send(frame);
  }

  flush(): void {
    const socket = this.corked;
    this.corked = null;
    socket?.uncork();
  }

  close(code: number, reason: string): void {
    closeWithGrace(this.ws, code, reason);
  }
}

/** Closes `ws` (if open or opening) with a close frame; a peer that never answers it must not pin the socket. */
function closeWithGrace(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState !== WebSocket.OPEN && ws.readyState !== WebSocket.CONNECTING) return;
  ws.close(code, reason.slice(0, muxLimits.closeReasonBytesMax));
  setTimeout(() => ws.terminate(), 1_000).unref();
}

/** What the gateway does with one channel of a shared socket. */
export interface ChannelHandler {
  frame(data: Buffer): void;
  /** The channel ended from the client's side: its close record (`goodbye` if 1000/1001) or the socket's end. */
  closed(goodbye: boolean): void;
}

export interface SharedSocketOptions {
  /** A client opened a channel: its handler, or null when refused (the opener closed `link` already). */
  readonly open: (link: ClientLink) => ChannelHandler | null;
  /** The node is closing the socket — format or limits broken, no channel for `idleMs`, shutting down — for the log. */
  readonly terminating: (reason: string) => void;
  /** Socket without channels closes after this (C7: no idle unauthenticated sockets). */
  readonly idleMs: number;
}

class ChannelLink implements ClientLink {
  handler: ChannelHandler | null = null;
  closed = false;

  constructor(
    private readonly socket: SharedSocket,
    readonly channel: number,
  ) {}

  get open(): boolean {
    return !this.closed && this.socket.open;
  }

  get bufferedAmount(): number {
    return this.socket.bufferedAmount;
  }

  send(frame: Uint8Array): void {
    if (!this.open) return;
    if (!this.socket.fits(frame)) {
      // On a socket of its own the client would close it (1009); here only this channel goes.
      this.close(ClientCloseCode.overloaded, `a frame of ${frame.length} bytes is too large`);
      return;
    }
    this.socket.queueFrame(this.channel, frame);
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.closeChannel(this, code, reason);
  }
}

/**
 * A WebSocket that speaks `raftlock-mux.1`: demultiplexes records to channels, and gathers every channel's
 * frames of a tick into one message (src/mux.ts has the format and the channel-number rules).
 */
export class SharedSocket implements TickFlush {
  private readonly channels = new Map<number, ChannelLink>();
  private readonly outbox = new MuxOutbox(toClient);
  private highestChannel = 0;
  private ended = false;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly options: SharedSocketOptions,
  ) {
    ws.on('message', (data: RawData, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', (code: number) => this.onEnd(code === 1000 || code === 1001));
    this.armIdle();
  }

  get open(): boolean {
    return !this.ended && this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  get channelCount(): number {
    return this.channels.size;
  }

  fits(frame: Uint8Array): boolean {
    return this.outbox.fits(frame);
  }

  queueFrame(channel: number, frame: Uint8Array): void {
    this.outbox.pushFrame(channel, frame);
    scheduleFlush(this);
  }

  closeChannel(link: ChannelLink, code: number, reason: string): void {
    assert(this.channels.get(link.channel) === link, 'shared socket: closing a channel it does not hold');
    this.channels.delete(link.channel);
    if (this.open) {
      this.outbox.pushClose(link.channel, code, reason);
      scheduleFlush(this);
    }
    this.armIdle();
  }

  flush(): void {
    if (!this.open) return;
    for (const message of this.outbox.take()) this.ws.send(message);
  }

  /** Ends the socket and every channel on it; the channels' handlers hear of it as a lost connection. */
  terminate(code: number, reason: string): void {
    if (this.ended) return;
    this.options.terminating(reason);
    this.flush();
    closeWithGrace(this.ws, code, reason);
    this.onEnd(false);
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.ended) return;
    if (!isBinary || !Buffer.isBuffer(data)) {
      this.terminate(ClientCloseCode.protocolError, 'messages must be binary');
      return;
    }
    const problem = readMuxMessage(data, toNode, (channel, kind, payload) => {
      if (this.ended) return;
      if (kind === MuxKind.frame) this.onChannelFrame(channel, payload as Buffer);
      else this.onChannelClose(channel, readMuxClose(payload).code);
    });
    if (problem !== null) this.terminate(ClientCloseCode.protocolError, `bad message: ${problem}`);
  }

  private onChannelFrame(channel: number, frame: Buffer): void {
    let link = this.channels.get(channel);
    if (link === undefined) {
      if (channel <= this.highestChannel) return; // a closed channel's late frame
      if (this.channels.size >= muxLimits.channelsMax) {
        this.terminate(ClientCloseCode.overloaded, `more than ${muxLimits.channelsMax} channels`);
        return;
      }
      this.highestChannel = channel;
      link = new ChannelLink(this, channel);
      this.channels.set(channel, link);
      this.disarmIdle();
      link.handler = this.options.open(link);
      if (link.handler === null) return;
    }
    link.handler?.frame(frame);
  }

  private onChannelClose(channel: number, code: number): void {
    if (channel > this.highestChannel) this.highestChannel = channel;
    const link = this.channels.get(channel);
    if (link === undefined) return;
    link.closed = true;
    this.channels.delete(channel);
    this.armIdle();
    link.handler?.closed(code === 1000 || code === 1001);
  }

  private onEnd(goodbye: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.disarmIdle();
    const links = [...this.channels.values()];
    this.channels.clear();
    for (const link of links) {
      link.closed = true;
      link.handler?.closed(goodbye);
    }
  }

  private armIdle(): void {
    if (this.ended || this.channels.size > 0 || this.idleTimer !== null) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.terminate(ClientCloseCode.helloTimeout, 'no channel open');
    }, this.options.idleMs);
    this.idleTimer.unref();
  }

  private disarmIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}
