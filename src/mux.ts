// Shared connections (docs/protocol.md "Shared connections"): many sessions over one WebSocket. A leaf
// like protocol.ts: the client and the gateway both import it.
//
// A client that asks for the `raftlock-mux.1` subprotocol opens *channels* on the socket. A channel is a
// client connection in every sense the protocol has: it starts with a hello, carries one session, and
// its end is that session's connection loss (S10, C6). The socket carries channels' frames in *records*;
// one WebSocket message holds one or more records, so the answers for many sessions that one entry
// produces leave in one message and one write:
//
//   record: channel u32 ‖ kind u8 ‖ length u32 ‖ payload (all big-endian)
//   kind 1 (frame): payload is one frame, msgpack, exactly as on a connection of its own
//   kind 2 (close): payload is code u16 ‖ reason (UTF-8); the channel is closed from then on
//
// The client numbers its channels from 1 up, never reusing one: a frame on a number above every earlier
// one opens a channel (its first frame must be a hello); a record for a number at or below the highest
// opened whose channel has closed is stale and ignored — so neither side can mistake a closed channel's
// late frames for a new one's. A close from the client is its goodbye on that channel (like close code
// 1000 on a connection of its own); the socket's end is the end of every channel on it.

import { assert } from './assert.ts';
import { readU16BE, readU32BE, writeU32BE } from './bytes.ts';
import { clientFrameBytesMax } from './protocol.ts';

/** The WebSocket subprotocol a client asks for to share its connection among sessions. */
export const muxProtocol = 'raftlock-mux.1';

export const MuxKind = { frame: 1, close: 2 } as const;
export type MuxKind = (typeof MuxKind)[keyof typeof MuxKind];

export const muxLimits = {
  /** Bytes of a record's header. */
  headerBytes: 9,
  /** Channels one shared connection may have open at once. */
  channelsMax: 4096,
  /** The outbox starts a new message once the next record would pass this; a bigger record goes alone. */
  batchBytesMax: 1024 * 1024,
  /** Largest close reason in bytes (as a WebSocket close frame allows). */
  closeReasonBytesMax: 123,
  /** Highest channel number. */
  channelMax: 0xffffffff,
} as const;

/** How large frames and messages may be in one direction. */
export interface MuxBounds {
  readonly frameBytesMax: number;
  readonly messageBytesMax: number;
}

/** Client → node: frames as on a socket of its own (64 KiB); messages up to 1 MiB, the node's `maxPayload`. */
export const toNode: MuxBounds = { frameBytesMax: clientFrameBytesMax, messageBytesMax: 1024 * 1024 };

/**
 * Node → client: frames as large as a socket of its own takes (the client's 64 MiB `maxPayload`) — a
 * `locks` page or a resume's welcome can pass 64 KiB — and a message holds at least one of them.
 */
export const toClient: MuxBounds = {
  frameBytesMax: 64 * 1024 * 1024,
  messageBytesMax: 64 * 1024 * 1024 + muxLimits.headerBytes,
};

assert(
  toNode.messageBytesMax >= toNode.frameBytesMax + muxLimits.headerBytes &&
    toClient.messageBytesMax >= toClient.frameBytesMax + muxLimits.headerBytes &&
    muxLimits.batchBytesMax <= Math.min(toNode.messageBytesMax, toClient.messageBytesMax),
  'mux limits: a message must hold a frame of the largest size, and a batch fit a message',
);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Calls `each` for every record of `message`, after checking all of them; returns what is wrong, or null. */
export function readMuxMessage(
  message: Uint8Array,
  bounds: MuxBounds,
  each: (channel: number, kind: MuxKind, payload: Uint8Array) => void,
): string | null {
  const problem = muxMessageProblem(message, bounds);
  if (problem !== null) return problem;
  let at = 0;
  while (at < message.length) {
    const channel = readU32BE(message, at);
    const kind = message[at + 4] as MuxKind;
    const length = readU32BE(message, at + 5);
    at += muxLimits.headerBytes;
    each(channel, kind, message.subarray(at, at + length));
    at += length;
  }
  return null;
}

/** What is wrong with a shared connection's message, or null: every record whole, of a known kind, in bounds. */
export function muxMessageProblem(message: Uint8Array, bounds: MuxBounds): string | null {
  if (message.length === 0) return 'empty message';
  if (message.length > bounds.messageBytesMax) return `message of ${message.length} bytes`;
  let at = 0;
  let records = 0;
  while (at < message.length) {
    if (message.length - at < muxLimits.headerBytes) return `record ${records}: header cut short`;
    const channel = readU32BE(message, at);
    const kind = message[at + 4];
    const length = readU32BE(message, at + 5);
    at += muxLimits.headerBytes;
    if (channel === 0) return `record ${records}: channel 0`;
    if (length > message.length - at)
      return `record ${records}: ${length} bytes declared, ${message.length - at} present`;
    if (kind === MuxKind.frame) {
      if (length === 0) return `record ${records}: empty frame`;
      if (length > bounds.frameBytesMax) return `record ${records}: frame of ${length} bytes`;
    } else if (kind === MuxKind.close) {
      if (length < 2 || length > 2 + muxLimits.closeReasonBytesMax)
        return `record ${records}: close of ${length} bytes`;
      const code = readU16BE(message, at);
      if (!isCloseCode(code)) return `record ${records}: close code ${code}`;
      try {
        utf8.decode(message.subarray(at + 2, at + length));
      } catch {
        return `record ${records}: close reason is not UTF-8`;
      }
    } else {
      return `record ${records}: unknown kind ${String(kind)}`;
    }
    at += length;
    records++;
  }
  return null;
}

/** Close codes a channel may carry: the normal ones and the application range, as on a WebSocket. */
export function isCloseCode(code: number): boolean {
  return code === 1000 || code === 1001 || (code >= 4000 && code <= 4999);
}

/** The code and reason of a close record's payload (checked by `readMuxMessage`). */
export function readMuxClose(payload: Uint8Array): { readonly code: number; readonly reason: string } {
  return { code: readU16BE(payload, 0), reason: utf8.decode(payload.subarray(2)) };
}

/**
 * Records bound for one shared connection, gathered until `take()`: then one message, or a few when they
 * pass `batchBytesMax` (a record larger than that is a message of its own). A frame is kept by reference
 * until `take()` copies it into its message, so the caller must not reuse its bytes before then (msgpackr's
 * `pack` never does).
 */
export class MuxOutbox {
  private parts: Uint8Array[] = [];
  private bytes = 0;
  private readonly ready: Buffer[] = [];

  constructor(private readonly bounds: MuxBounds) {}

  get empty(): boolean {
    return this.bytes === 0 && this.ready.length === 0;
  }

  /** Whether a frame of this size may travel in this direction at all. */
  fits(frame: Uint8Array): boolean {
    return frame.length > 0 && frame.length <= this.bounds.frameBytesMax;
  }

  pushFrame(channel: number, frame: Uint8Array): void {
    assert(this.fits(frame), `mux: a frame of ${frame.length} bytes`);
    this.push(channel, MuxKind.frame, frame);
  }

  pushClose(channel: number, code: number, reason: string): void {
    assert(isCloseCode(code), `mux: close code ${code}`);
    let text = Buffer.from(reason, 'utf8');
    if (text.length > muxLimits.closeReasonBytesMax) {
      // Cut on a character boundary: drop trailing continuation bytes of a split character.
      let end = muxLimits.closeReasonBytesMax;
      while (end > 0 && ((text[end] as number) & 0xc0) === 0x80) end--;
      text = text.subarray(0, end);
    }
    const payload = Buffer.allocUnsafe(2 + text.length);
    payload[0] = code >>> 8;
    payload[1] = code & 0xff;
    text.copy(payload, 2);
    this.push(channel, MuxKind.close, payload);
  }

  /** The messages to send, in order; empties the outbox. */
  take(): Buffer[] {
    if (this.bytes > 0) this.seal();
    return this.ready.splice(0);
  }

  private push(channel: number, kind: MuxKind, payload: Uint8Array): void {
    assert(
      Number.isInteger(channel) && channel >= 1 && channel <= muxLimits.channelMax,
      `mux: channel ${channel}`,
    );
    const size = muxLimits.headerBytes + payload.length;
    if (this.bytes > 0 && this.bytes + size > muxLimits.batchBytesMax) this.seal();
    const header = Buffer.allocUnsafe(muxLimits.headerBytes);
    writeU32BE(header, 0, channel);
    header[4] = kind;
    writeU32BE(header, 5, payload.length);
    this.parts.push(header, payload);
    this.bytes += size;
  }

  private seal(): void {
    this.ready.push(Buffer.concat(this.parts, this.bytes));
    this.parts = [];
    this.bytes = 0;
  }
}
