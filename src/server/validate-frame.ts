// Checks every client frame field by field and rebuilds it from the checked fields alone (C7): nothing a
// client sends reaches the node without passing here. Domain rules (name length, request windows) stay
// with the lock table, which answers them with typed errors.

import { InvalidArgumentError, ProtocolError, type RaftlockError } from '../errors.ts';
import { listLocksMax, lockNameBytesMax, principalBytesMax, reconnectionWindowMsMax } from '../limits.ts';
import type { ClientFrame, Scope } from '../protocol.ts';

export type ParsedFrame =
  | { readonly ok: true; readonly frame: ClientFrame }
  /** `id` is the request id when one could be read, so the error can answer that request. */
  | { readonly ok: false; readonly id: number | null; readonly error: RaftlockError };

const passwordBytesMax = 1024;
/** Membership requests: the id and address checks proper are the node's (src/server/members.ts). */
const memberIdBytesMax = 128;
const memberAddressBytesMax = 512;
const tokenBytesMax = 128;
/** Longest lock timeout a request may ask for: one day. */
const lockTimeoutMsMax = 24 * 60 * 60 * 1000;

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function isCount(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}

function isString(value: unknown, bytesMax: number, minLength = 0): value is string {
  return typeof value === 'string' && value.length >= minLength && Buffer.byteLength(value) <= bytesMax;
}

function isScope(value: unknown): value is Scope {
  return value === 'UNLOCK_ON_SESSION_LOSS' || value === 'UNLOCK_ON_CONNECTION_LOSS';
}

export function parseClientFrame(value: unknown): ParsedFrame {
  if (!isRecord(value)) return { ok: false, id: null, error: new ProtocolError('a frame must be a map') };
  if (value.t === 'hello') return parseHello(value);
  if (value.t !== 'req') return { ok: false, id: null, error: new ProtocolError('unknown frame type') };
  if (!isCount(value.id, 0)) return { ok: false, id: null, error: new ProtocolError('request id') };
  const id = value.id;
  switch (value.op) {
    case 'lock': {
      if (!isCount(value.requestNo, 1)) return bad(id, 'requestNo must be a positive integer');
      if (!isString(value.name, lockNameBytesMax, 1))
        return bad(id, `name must be a non-empty string of at most ${lockNameBytesMax} bytes`);
      const scope = value.scope ?? 'UNLOCK_ON_SESSION_LOSS';
      if (!isScope(scope)) return bad(id, 'unknown scope');
      const timeoutMs = value.timeoutMs ?? undefined;
      if (timeoutMs !== undefined && !(isCount(timeoutMs, 0) && timeoutMs <= lockTimeoutMsMax))
        return bad(id, `timeoutMs must be an integer in [0, ${lockTimeoutMsMax}]`);
      return {
        ok: true,
        frame: { t: 'req', id, op: 'lock', requestNo: value.requestNo, name: value.name, scope, timeoutMs },
      };
    }
    case 'unlock': {
      if (!isCount(value.requestNo, 1)) return bad(id, 'requestNo must be a positive integer');
      if (!isString(value.name, lockNameBytesMax, 1)) return bad(id, 'name must be a non-empty string');
      const sequence = value.sequence ?? undefined;
      if (sequence !== undefined && !isCount(sequence, 1))
        return bad(id, 'sequence must be a positive integer');
      return {
        ok: true,
        frame: { t: 'req', id, op: 'unlock', requestNo: value.requestNo, name: value.name, sequence },
      };
    }
    case 'cancel':
      if (!isCount(value.requestNo, 1)) return bad(id, 'requestNo must be a positive integer');
      return { ok: true, frame: { t: 'req', id, op: 'cancel', requestNo: value.requestNo } };
    case 'close':
    case 'ping':
    case 'status':
      return { ok: true, frame: { t: 'req', id, op: value.op } };
    case 'locks': {
      const prefix = value.prefix ?? undefined;
      const after = value.after ?? undefined;
      const limit = value.limit ?? undefined;
      if (prefix !== undefined && !isString(prefix, lockNameBytesMax)) return bad(id, 'prefix');
      if (after !== undefined && !isString(after, lockNameBytesMax)) return bad(id, 'after');
      if (limit !== undefined && !(isCount(limit, 1) && limit <= listLocksMax))
        return bad(id, `limit must be in [1, ${listLocksMax}]`);
      return { ok: true, frame: { t: 'req', id, op: 'locks', prefix, after, limit } };
    }
    case 'members':
      return { ok: true, frame: { t: 'req', id, op: 'members' } };
    case 'addMember': {
      if (!isString(value.member, memberIdBytesMax, 1)) return bad(id, 'member must be a non-empty id');
      if (!isString(value.peerAddress, memberAddressBytesMax, 1))
        return bad(id, 'peerAddress must be HOST:PORT');
      if (!isString(value.clientUrl, memberAddressBytesMax, 1))
        return bad(id, 'clientUrl must be a ws:// URL');
      return {
        ok: true,
        frame: {
          t: 'req',
          id,
          op: 'addMember',
          member: value.member,
          peerAddress: value.peerAddress,
          clientUrl: value.clientUrl,
        },
      };
    }
    case 'removeMember':
    case 'transferLeader':
      if (!isString(value.member, memberIdBytesMax, 1)) return bad(id, 'member must be a non-empty id');
      return { ok: true, frame: { t: 'req', id, op: value.op, member: value.member } };
    default:
      return { ok: false, id, error: new InvalidArgumentError('unknown op') };
  }
}

/** A request refused for one of its fields: a module function, not a closure per request. */
function bad(id: number, message: string): ParsedFrame {
  return { ok: false, id, error: new InvalidArgumentError(message) };
}

/** A hello refused: a protocol error, answered without a request id. */
function badHello(message: string): ParsedFrame {
  return { ok: false, id: null, error: new ProtocolError(message) };
}

function parseHello(value: Record<string, unknown>): ParsedFrame {
  if (!isCount(value.v, 0)) return badHello('hello: v');
  if (!isString(value.principal, principalBytesMax, 1)) return badHello('hello: principal');
  if (!isString(value.password, passwordBytesMax)) return badHello('hello: password');
  let session: { id: number; token: string } | undefined;
  if (value.session !== undefined && value.session !== null) {
    if (!isRecord(value.session)) return badHello('hello: session');
    const { id, token } = value.session;
    if (!isCount(id, 1) || !isString(token, tokenBytesMax, 1)) return badHello('hello: session id/token');
    session = { id, token };
  }
  const window = value.reconnectionWindowMs ?? undefined;
  if (window !== undefined && !(isCount(window, 1) && window <= reconnectionWindowMsMax))
    return badHello(`hello: reconnectionWindowMs must be in [1, ${reconnectionWindowMsMax}]`);
  return {
    ok: true,
    frame: {
      t: 'hello',
      v: value.v,
      principal: value.principal,
      password: value.password,
      session,
      reconnectionWindowMs: window,
    },
  };
}
