// One connection to one node, through its hello: resolves with the open socket and the welcome, or rejects
// with the node's typed error (NOT_LEADER carries the leader's URL as `leaderUrl`). The connection is a
// WebSocket of its own, or a channel of a ConnectionPool's shared WebSocket (pool.ts): both are a
// FrameSocket, and everything from the hello on is the same.

import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { errorFromCode, isErrorCode, ProtocolError, RaftlockError, UnavailableError } from '../errors.ts';
import {
  type ClientFrame,
  clientProtocolVersion,
  type HelloFrame,
  type ServerFrame,
  type WelcomeFrame,
  type WireError,
} from '../protocol.ts';
import type { ConnectionPool } from './pool.ts';

export const packr = new Packr({ useRecords: false });
export const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A RaftlockError from the wire, with the leader hint when the node gave one. */
export type WireRaftlockError = RaftlockError & { leaderUrl?: string | undefined };

export function errorFromWire(error: WireError): WireRaftlockError {
  const code = isErrorCode(error.code) ? error.code : 'INTERNAL';
  const result: WireRaftlockError = errorFromCode(code, error.message);
  if (error.leaderUrl !== undefined) result.leaderUrl = error.leaderUrl;
  return result;
}

export function encode(frame: ClientFrame): Buffer {
  return packr.pack(frame);
}

/** One Buffer of what `ws` hands a 'message' listener (a Buffer unless fragments or an ArrayBuffer). */
export function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

export function decode(data: WebSocket.RawData): ServerFrame {
  const value = unpackr.unpack(toBuffer(data)) as ServerFrame;
  if (typeof value !== 'object' || value === null || typeof (value as { t?: unknown }).t !== 'string')
    throw new ProtocolError('server sent a frame that is not a frame');
  return value;
}

/**
 * What a client connection uses of its socket: the subset of `ws`'s WebSocket that this client touches, so
 * a WebSocket of its own and a pool's channel (pool.ts) both are one. Frames are binary messages, one
 * msgpack frame each.
 */
export interface FrameSocket {
  send(data: Uint8Array): void;
  /** Says goodbye (1000/1001) or closes with an application code; 'close' follows asynchronously. */
  close(code?: number, reason?: string): void;
  /** Drops the connection at once, without a goodbye. */
  terminate(): void;
  on(event: 'open', listener: () => void): this;
  on(event: 'message', listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  off(event: 'open', listener: () => void): this;
  off(event: 'message', listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
  off(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  off(event: 'error', listener: (error: Error) => void): this;
}

/** Trusted CAs for wss:// (PEM); none or an empty list: the system's. */
export type TrustedCa = string | Buffer | readonly (string | Buffer)[];

/** The `ca` option of a WebSocket for `ca`: none when the system's CAs are meant. */
export function caOption(ca: TrustedCa | undefined): { ca?: string | Buffer | (string | Buffer)[] } {
  const trusted = ca === undefined || (Array.isArray(ca) && ca.length === 0) ? undefined : ca;
  return trusted === undefined ? {} : { ca: trusted as string | Buffer | (string | Buffer)[] };
}

export interface OpenConnection {
  readonly ws: FrameSocket;
  readonly welcome: WelcomeFrame;
  readonly url: string;
}

export function openConnection(
  url: string,
  hello: Omit<HelloFrame, 't' | 'v'>,
  timeoutMs: number,
  /** Trusted CAs for wss:// (PEM); none or an empty list: the system's. */
  ca?: TrustedCa,
  /** A channel of this pool's shared WebSocket to `url` instead of a WebSocket of its own. */
  pool?: ConnectionPool,
): Promise<OpenConnection> {
  return new Promise<OpenConnection>((resolve, reject) => {
    // A closed pool throws here, which rejects the promise with its error.
    const ws: FrameSocket =
      pool === undefined
        ? new WebSocket(url, {
            perMessageDeflate: false,
            handshakeTimeout: timeoutMs,
            maxPayload: 64 * 1024 * 1024,
            ...caOption(ca),
          })
        : pool.openChannel(url, timeoutMs, ca);
    let settled = false;
    const timer = setTimeout(
      () => finish(new UnavailableError(`${url}: no welcome within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const finish = (error: RaftlockError | null, welcome?: WelcomeFrame) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.off('message', onMessage);
      if (error !== null) {
        ws.terminate();
        reject(error);
        return;
      }
      resolve({ ws, welcome: welcome!, url });
    };
    const onMessage = (data: WebSocket.RawData) => {
      let frame: ServerFrame;
      try {
        frame = decode(data);
      } catch (error) {
        finish(error as RaftlockError);
        return;
      }
      if (frame.t === 'welcome') finish(null, frame);
      else if (frame.t === 'error') finish(errorFromWire(frame));
      else finish(new ProtocolError(`expected welcome, got ${frame.t}`));
    };
    ws.on('message', onMessage);
    ws.on('open', () => ws.send(encode({ t: 'hello', v: clientProtocolVersion, ...hello })));
    // A pool's channel may fail with a typed error (a server without shared connections: PROTOCOL_ERROR).
    ws.on('error', (error) =>
      finish(
        error instanceof RaftlockError
          ? error
          : new UnavailableError(`${url}: ${error.message}`, { cause: error }),
      ),
    );
    ws.on('close', (code, reason) =>
      finish(new UnavailableError(`${url}: closed (${code} ${reason.toString()}) before welcome`)),
    );
  });
}
