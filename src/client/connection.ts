// One WebSocket to one node, through its hello: resolves with the open socket and the welcome, or rejects
// with the node's typed error (NOT_LEADER carries the leader's URL as `leaderUrl`).

import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import {
  errorFromCode,
  isErrorCode,
  ProtocolError,
  type RaftlockError,
  UnavailableError,
} from '../errors.ts';
import {
  type ClientFrame,
  clientProtocolVersion,
  type HelloFrame,
  type ServerFrame,
  type WelcomeFrame,
  type WireError,
} from '../protocol.ts';

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

export function decode(data: WebSocket.RawData): ServerFrame {
  const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  const value = unpackr.unpack(bytes) as ServerFrame;
  if (typeof value !== 'object' || value === null || typeof (value as { t?: unknown }).t !== 'string')
    throw new ProtocolError('server sent a frame that is not a frame');
  return value;
}

export interface OpenConnection {
  readonly ws: WebSocket;
  readonly welcome: WelcomeFrame;
  readonly url: string;
}

export function openConnection(
  url: string,
  hello: Omit<HelloFrame, 't' | 'v'>,
  timeoutMs: number,
  /** Trusted CAs for wss:// (PEM); none or an empty list: the system's. */
  ca?: string | Buffer | readonly (string | Buffer)[],
): Promise<OpenConnection> {
  return new Promise<OpenConnection>((resolve, reject) => {
    const trusted = ca === undefined || (Array.isArray(ca) && ca.length === 0) ? undefined : ca;
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
      maxPayload: 64 * 1024 * 1024,
      ...(trusted === undefined ? {} : { ca: trusted as string | Buffer | (string | Buffer)[] }),
    });
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
    ws.on('error', (error) => finish(new UnavailableError(`${url}: ${error.message}`, { cause: error })));
    ws.on('close', (code, reason) =>
      finish(new UnavailableError(`${url}: closed (${code} ${reason.toString()}) before welcome`)),
    );
  });
}
