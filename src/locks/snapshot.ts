// The table's snapshot: one msgpack array of primitives, written in the table's own iteration orders
// so that two replicas with the same state write the same bytes, and a restored table iterates — and
// so behaves and snapshots — exactly like the original.
//
//   header    version, appliedIndex, nowMs, lastSequence, lastSessionId, sessionCount, lockCount,
//             grantCount (version 2)
//   grants    (version 2) per distinct grant, in order of first use: acquire pattern count, patterns,
//             read pattern count, patterns, admin 0|1
//   sessions  per session (opening order): id, principal, reconnectionWindowMs, epoch, connected,
//             connectionLostAtMs, requestNoMax, grant (version 2: 0 = every permission, k = grant k)
//   locks     per lock (map order): name, owner id, sequence, scope code
//   per session, same order:
//             owned count, lock positions (grant order)
//             wait count, per wait (order started): lock position, request count,
//                                                   per request: requestNo, scope code, deadlineMs
//             answer count, per answer in the window (by request number): requestNo, tag, fields
//   queues    per lock, same order: waiter count, session ids (earliest first)
//   members   (version 3) member count, per member (by id): id, context — the cluster members'
//             addresses as the node stored them (src/server/members.ts); opaque to the table
//
// Lock positions (indexes into the locks list) stand in for names to keep the bytes and the restore
// work small. Derived state (deadline heap, waiter total, pending index) is rebuilt, not stored.
// Restoring trusts nothing: any byte sequence gives a table or a PROTOCOL_ERROR (C7).

import { Unpackr } from 'msgpackr';
import { isErrorCode, ProtocolError } from '../errors.ts';
import { answersInOrder, rememberAnswer, reserveAnswers } from './answers.ts';
import { type Grants, grantPatternsMax, grantsProblem } from './permissions.ts';
import {
  AcquireRequest,
  appendWaiter,
  type DedupeValue,
  LockState,
  linkOwned,
  noDeadlineMs,
  SessionState,
  TableState,
  Waiter,
} from './state.ts';
import type { ErrorResult, UnlockedResult } from './types.ts';
import { SessionLockScope } from './types.ts';

/**
 * Version 2 added the sessions' grants (S12); version 1 snapshots restore with every permission.
 * Version 3 added the members section (C5); older snapshots restore with none.
 */
export const snapshotFormatVersion = 3;

/** Members a snapshot may list, and the longest member id / context it accepts. */
export const snapshotMembersMax = 256;
export const snapshotMemberIdLengthMax = 64;
export const snapshotMemberContextLengthMax = 1024;

/** The snapshot writer's chunk size (see FlatWriter). */
const writerChunkBytes = 1024 * 1024;
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

const scopes: readonly SessionLockScope[] = [
  SessionLockScope.UNLOCK_ON_SESSION_LOSS,
  SessionLockScope.UNLOCK_ON_CONNECTION_LOSS,
];
const Tag = {
  unlockedNotOwned: 0,
  unlockedOwned: 1,
  error: 2,
  acquirePending: 3,
  /** Followed by the grant answer number (sequence × 2 + scope bit). */
  acquireGranted: 4,
} as const;

const unlockedOwned: UnlockedResult = Object.freeze({ kind: 'unlocked', owned: true });
const unlockedNotOwned: UnlockedResult = Object.freeze({ kind: 'unlocked', owned: false });

function scopeCode(scope: SessionLockScope): number {
  return scope === SessionLockScope.UNLOCK_ON_SESSION_LOSS ? 0 : 1;
}

/** `windowSize` is the table's dedupeResultsPerSessionMax; it decides which answers are still live. */
export function writeSnapshot(state: TableState, windowSize: number): Uint8Array {
  // Sessions of one principal share one grant: store each distinct grant once, in order of first use.
  const grantRefs = new Map<Grants, number>();
  const grantKeys = new Map<string, number>();
  const grantList: Grants[] = [];
  for (const session of state.sessions.values()) {
    const grants = session.grants;
    if (grants === null || grantRefs.has(grants)) continue;
    const key = JSON.stringify([grants.acquire, grants.read, grants.admin]);
    let ref = grantKeys.get(key);
    if (ref === undefined) {
      grantList.push(grants);
      ref = grantList.length;
      grantKeys.set(key, ref);
    }
    grantRefs.set(grants, ref);
  }
  const out = new FlatWriter();
  out.push(
    snapshotFormatVersion,
    state.appliedIndex,
    state.nowMs,
    state.lastSequence,
    state.lastSessionId,
    state.sessions.size,
    state.locks.size,
    grantList.length,
  );
  for (const grants of grantList) {
    out.push(
      grants.acquire.length,
      ...grants.acquire,
      grants.read.length,
      ...grants.read,
      grants.admin ? 1 : 0,
    );
  }
  for (const session of state.sessions.values()) {
    out.push(
      session.id,
      session.principal,
      session.reconnectionWindowMs,
      session.epoch,
      session.connected ? 1 : 0,
      session.connectionLostAtMs,
      session.requestNoMax,
      session.grants === null ? 0 : (grantRefs.get(session.grants) as number),
    );
  }
  let position = 0;
  for (const lock of state.locks.values()) {
    lock.position = position++;
    out.push(lock.name, lock.owner.id, lock.sequence, scopeCode(lock.scope));
  }
  for (const session of state.sessions.values()) {
    out.push(session.ownedCount);
    for (let lock = session.ownedHead; lock !== null; lock = lock.ownerNext) out.push(lock.position);
    out.push(session.waits.size);
    for (const waiter of session.waits.values()) {
      out.push(waiter.lock.position, waiter.requests.length);
      for (const request of waiter.requests)
        out.push(request.requestNo, scopeCode(request.scope), request.deadlineMs);
    }
    const answers = answersInOrder(session, windowSize);
    out.push(answers.length);
    for (const [requestNo, value] of answers) {
      out.push(requestNo);
      writeDedupeValue(out, value);
    }
  }
  for (const lock of state.locks.values()) {
    out.push(lock.waiterCount);
    for (let waiter = lock.head; waiter !== null; waiter = waiter.next) out.push(waiter.session.id);
  }
  const members = [...state.members].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  out.push(members.length);
  for (const [id, context] of members) out.push(id, context);
  return out.finish();
}

/**
 * Writes one flat msgpack array of integers and strings item by item, in 1 MiB chunks, then copies the
 * chunks into one buffer of exactly the snapshot's size. The bytes are those msgpackr gives for the
 * whole array (smallest integer and string headers, floats for integers past 32 bits, short strings
 * encoded by hand as msgpackr does), without building the array first: at 1,000,000 locks that array
 * held 10 million items (80 MB of heap, more while it grew), and msgpackr's process-wide scratch buffer
 * grew past the snapshot's size and stayed pinned by it (see codec.ts).
 */
class FlatWriter {
  private readonly chunks: Buffer[] = [];
  private chunk: Buffer = Buffer.allocUnsafeSlow(writerChunkBytes);
  private at = 0;
  private count = 0;
  private bytes = 0;

  push(...items: (number | string)[]): void {
    for (const item of items) {
      if (typeof item === 'number') this.number(item);
      else this.string(item);
    }
  }

  private room(bytesMax: number): void {
    if (this.at + bytesMax <= this.chunk.length) return;
    this.chunks.push(this.chunk.subarray(0, this.at));
    this.bytes += this.at;
    this.chunk = Buffer.allocUnsafeSlow(Math.max(writerChunkBytes, bytesMax));
    this.at = 0;
  }

  private number(value: number): void {
    this.count++;
    this.room(9);
    const chunk = this.chunk;
    if (value >>> 0 === value) {
      if (value < 0x80) chunk[this.at++] = value;
      else if (value < 0x100) {
        chunk[this.at++] = 0xcc;
        chunk[this.at++] = value;
      } else if (value < 0x10000) {
        chunk[this.at++] = 0xcd;
        this.at = chunk.writeUInt16BE(value, this.at);
      } else {
        chunk[this.at++] = 0xce;
        this.at = chunk.writeUInt32BE(value, this.at);
      }
    } else if (value >> 0 === value) {
      if (value >= -0x20) chunk[this.at++] = 0x100 + value;
      else if (value >= -0x80) {
        chunk[this.at++] = 0xd0;
        chunk[this.at++] = value + 0x100;
      } else if (value >= -0x8000) {
        chunk[this.at++] = 0xd1;
        this.at = chunk.writeInt16BE(value, this.at);
      } else {
        chunk[this.at++] = 0xd2;
        this.at = chunk.writeInt32BE(value, this.at);
      }
    } else {
      chunk[this.at++] = 0xcb;
      this.at = chunk.writeDoubleBE(value, this.at);
    }
  }

  private string(value: string): void {
    this.count++;
    const length = value.length;
    this.room(length * 3 + 5);
    const chunk = this.chunk;
    // Encode after the largest header the string may need, then move it next to the real header.
    const headerMax = length < 0x20 ? 1 : length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
    const start = this.at + headerMax;
    let end = start;
    if (length < 0x40) {
      // msgpackr's own loop for short strings (a lone surrogate becomes its 3-byte form, as there).
      for (let i = 0; i < length; i++) {
        let c1 = value.charCodeAt(i);
        const c2 = i + 1 < length ? value.charCodeAt(i + 1) : 0;
        if (c1 < 0x80) chunk[end++] = c1;
        else if (c1 < 0x800) {
          chunk[end++] = (c1 >> 6) | 0xc0;
          chunk[end++] = (c1 & 0x3f) | 0x80;
        } else if ((c1 & 0xfc00) === 0xd800 && (c2 & 0xfc00) === 0xdc00) {
          c1 = 0x10000 + ((c1 & 0x03ff) << 10) + (c2 & 0x03ff);
          i++;
          chunk[end++] = (c1 >> 18) | 0xf0;
          chunk[end++] = ((c1 >> 12) & 0x3f) | 0x80;
          chunk[end++] = ((c1 >> 6) & 0x3f) | 0x80;
          chunk[end++] = (c1 & 0x3f) | 0x80;
        } else {
          chunk[end++] = (c1 >> 12) | 0xe0;
          chunk[end++] = ((c1 >> 6) & 0x3f) | 0x80;
          chunk[end++] = (c1 & 0x3f) | 0x80;
        }
      }
    } else end += chunk.write(value, start, 'utf8');
    const bytes = end - start;
    const header = bytes < 0x20 ? 1 : bytes < 0x100 ? 2 : bytes < 0x10000 ? 3 : 5;
    if (header !== headerMax) chunk.copyWithin(this.at + header, start, end);
    let at = this.at;
    if (header === 1) chunk[at++] = 0xa0 | bytes;
    else if (header === 2) {
      chunk[at++] = 0xd9;
      chunk[at++] = bytes;
    } else if (header === 3) {
      chunk[at++] = 0xda;
      at = chunk.writeUInt16BE(bytes, at);
    } else {
      chunk[at++] = 0xdb;
      at = chunk.writeUInt32BE(bytes, at);
    }
    this.at = at + bytes;
  }

  /** The array header and every item, in one buffer of exactly their size. */
  finish(): Uint8Array {
    const count = this.count;
    const header =
      count < 0x10
        ? Uint8Array.of(0x90 | count)
        : count < 0x10000
          ? Uint8Array.of(0xdc, count >> 8, count & 0xff)
          : Uint8Array.of(0xdd, count >>> 24, (count >> 16) & 0xff, (count >> 8) & 0xff, count & 0xff);
    const bytes = new Uint8Array(header.length + this.bytes + this.at);
    bytes.set(header, 0);
    let at = header.length;
    for (const chunk of [...this.chunks, this.chunk.subarray(0, this.at)]) {
      bytes.set(chunk, at);
      at += chunk.length;
    }
    this.chunks.length = 0;
    return bytes;
  }
}

function writeDedupeValue(out: FlatWriter, value: DedupeValue): void {
  if (typeof value === 'number') out.push(Tag.acquireGranted, value);
  else if (value instanceof AcquireRequest) out.push(Tag.acquirePending);
  else if (value.kind === 'unlocked') out.push(value.owned ? Tag.unlockedOwned : Tag.unlockedNotOwned);
  else out.push(Tag.error, value.code, value.message);
}

/** Reads the flat array with a type check on every value, so bad input ends in one typed error. */
class Reader {
  private at = 0;

  constructor(private readonly items: readonly unknown[]) {}

  int(what: string, min = 0): number {
    const value = this.items[this.at++];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new ProtocolError(`snapshot: ${what} must be an integer ≥ ${min}`);
    }
    return value;
  }

  below(what: string, bound: number): number {
    const value = this.int(what);
    if (value >= bound) throw new ProtocolError(`snapshot: ${what} out of range`);
    return value;
  }

  str(what: string): string {
    const value = this.items[this.at++];
    if (typeof value !== 'string') throw new ProtocolError(`snapshot: ${what} must be a string`);
    return value;
  }

  /** A count then that many non-empty strings, the count at most `countMax`. */
  strings(what: string, countMax: number): readonly string[] {
    const count = this.count(`${what} count`, 1);
    if (count > countMax) throw new ProtocolError(`snapshot: too many ${what}`);
    const list: string[] = [];
    for (let i = 0; i < count; i++) list.push(this.str(what));
    return Object.freeze(list);
  }

  scope(): SessionLockScope {
    return scopes[this.below('scope', scopes.length)] as SessionLockScope;
  }

  /** A count of following records, each at least `widthMin` items long: bounds it by what is left. */
  count(what: string, widthMin: number): number {
    const value = this.int(what);
    if (value * widthMin > this.items.length - this.at)
      throw new ProtocolError(`snapshot: ${what} too large`);
    return value;
  }

  end(): void {
    if (this.at !== this.items.length) throw new ProtocolError('snapshot: trailing data');
  }
}

export function readSnapshot(bytes: Uint8Array, windowSize: number): TableState {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('snapshot must be bytes');
  let raw: unknown;
  try {
    raw = unpackr.unpack(bytes);
  } catch (error) {
    throw new ProtocolError('snapshot is not valid msgpack', { cause: error });
  }
  if (!Array.isArray(raw)) throw new ProtocolError('snapshot must be an array');
  const r = new Reader(raw);
  const version = r.int('format version');
  if (version !== 1 && version !== 2 && version !== snapshotFormatVersion)
    throw new ProtocolError('unsupported snapshot format');
  const state = new TableState();
  state.appliedIndex = r.int('appliedIndex');
  state.nowMs = r.int('nowMs');
  state.lastSequence = r.int('lastSequence');
  state.lastSessionId = r.int('lastSessionId');
  const sessionCount = r.count('session count', version === 1 ? 7 : 8);
  const lockCount = r.count('lock count', 4);
  const grantList: Grants[] = [];
  if (version >= 2) {
    const grantCount = r.count('grant count', 3);
    for (let i = 0; i < grantCount; i++) {
      const acquire = r.strings('acquire patterns', grantPatternsMax);
      const read = r.strings('read patterns', grantPatternsMax);
      const grants: Grants = Object.freeze({ acquire, read, admin: r.below('admin', 2) === 1 });
      if (grantsProblem(grants) !== null) throw new ProtocolError('snapshot: invalid grant');
      grantList.push(grants);
    }
  }

  const sessions = new Array<SessionState>(sessionCount);
  for (let i = 0; i < sessionCount; i++) {
    const id = r.int('session id', 1);
    const principal = r.str('principal');
    const reconnectionWindowMs = r.int('reconnectionWindowMs');
    const epoch = r.int('epoch');
    const connected = r.below('connected', 2) === 1;
    const connectionLostAtMs = r.int('connectionLostAtMs', -1);
    const requestNoMax = r.int('requestNoMax');
    const grantRef = version === 1 ? 0 : r.below('grant', grantList.length + 1);
    const grants = grantRef === 0 ? null : (grantList[grantRef - 1] as Grants);
    const session = new SessionState(id, principal, reconnectionWindowMs, grants);
    session.epoch = epoch;
    session.connected = connected;
    session.connectionLostAtMs = connectionLostAtMs;
    session.requestNoMax = requestNoMax;
    state.sessions.set(id, session);
    if (state.sessions.size !== i + 1) throw new ProtocolError('snapshot: duplicate session');
    sessions[i] = session;
  }

  const locks = new Array<LockState>(lockCount);
  for (let i = 0; i < lockCount; i++) {
    const name = r.str('lock name');
    const owner = state.sessions.get(r.int('owner', 1));
    if (owner === undefined) throw new ProtocolError('snapshot: lock owner is not a session');
    const lock = new LockState(name, owner, r.int('sequence', 1), r.scope());
    state.locks.set(name, lock);
    if (state.locks.size !== i + 1) throw new ProtocolError('snapshot: duplicate lock');
    locks[i] = lock;
  }

  for (const session of sessions) {
    const ownedCount = r.count('owned count', 1);
    for (let i = 0; i < ownedCount; i++) {
      const lock = locks[r.below('lock position', lockCount)] as LockState;
      // A lock is listed once: its owner must be this session and it must not be linked yet.
      if (lock.owner !== session || lock.ownerPrev !== null || session.ownedHead === lock) {
        throw new ProtocolError('snapshot: ownership');
      }
      linkOwned(session, lock);
    }
    const waitCount = r.count('wait count', 2);
    for (let i = 0; i < waitCount; i++) {
      const lock = locks[r.below('lock position', lockCount)] as LockState;
      if (session.waits.has(lock.name)) throw new ProtocolError('snapshot: duplicate wait');
      const waiter = new Waiter(session, lock);
      session.mutableWaits().set(lock.name, waiter);
      const requestCount = r.count('request count', 3);
      if (requestCount === 0) throw new ProtocolError('snapshot: a wait without requests');
      for (let j = 0; j < requestCount; j++) {
        const requestNo = r.int('requestNo', 1);
        const request = new AcquireRequest(session, requestNo, lock.name, r.scope(), r.int('deadlineMs', -1));
        if (session.pending.has(requestNo)) throw new ProtocolError('snapshot: duplicate request');
        request.waiter = waiter;
        waiter.requests.push(request);
        session.mutablePending().set(requestNo, request);
        if (request.deadlineMs !== noDeadlineMs) state.deadlines.push(request);
      }
    }
    const answerCount = r.count('answer count', 2);
    if (answerCount > windowSize) throw new ProtocolError('snapshot: more answers than the window holds');
    reserveAnswers(session, answerCount);
    let previous = 0;
    for (let i = 0; i < answerCount; i++) {
      const requestNo = r.int('requestNo', 1);
      // Strictly increasing and inside the window, as the writer produces them.
      if (
        requestNo <= previous ||
        requestNo > session.requestNoMax ||
        requestNo <= session.requestNoMax - windowSize
      ) {
        throw new ProtocolError('snapshot: answer outside the window or out of order');
      }
      previous = requestNo;
      rememberAnswer(session, requestNo, readDedupeValue(r, session, requestNo), windowSize);
    }
    for (const requestNo of session.pending.keys()) {
      if (requestNo > session.requestNoMax) throw new ProtocolError('snapshot: request above requestNoMax');
    }
  }

  for (const lock of locks) {
    const waiterCount = r.count('waiter count', 1);
    for (let i = 0; i < waiterCount; i++) {
      const waiter = state.sessions.get(r.int('waiter', 1))?.waits.get(lock.name);
      if (waiter === undefined || waiter.lock !== lock)
        throw new ProtocolError('snapshot: waiter has no wait');
      if (waiter.prev !== null || lock.head === waiter)
        throw new ProtocolError('snapshot: waiter queued twice');
      appendWaiter(lock, waiter);
      state.waiterTotal++;
    }
  }
  if (version >= 3) {
    const memberCount = r.count('member count', 2);
    if (memberCount > snapshotMembersMax) throw new ProtocolError('snapshot: too many members');
    for (let i = 0; i < memberCount; i++) {
      const id = r.str('member id');
      const context = r.str('member context');
      if (id.length === 0 || id.length > snapshotMemberIdLengthMax || state.members.has(id))
        throw new ProtocolError('snapshot: bad or duplicate member id');
      if (context.length > snapshotMemberContextLengthMax)
        throw new ProtocolError('snapshot: member context too long');
      state.members.set(id, context);
    }
  }
  r.end();
  return state;
}

function readDedupeValue(r: Reader, session: SessionState, requestNo: number): DedupeValue {
  const tag = r.int('answer tag');
  switch (tag) {
    case Tag.unlockedNotOwned:
      return unlockedNotOwned;
    case Tag.unlockedOwned:
      return unlockedOwned;
    case Tag.error: {
      const code = r.str('error code');
      if (!isErrorCode(code)) throw new ProtocolError('snapshot: unknown error code');
      const result: ErrorResult = Object.freeze({ kind: 'error', code, message: r.str('error message') });
      return result;
    }
    case Tag.acquirePending: {
      const request = session.pending.get(requestNo);
      if (request === undefined)
        throw new ProtocolError('snapshot: pending answer without a pending request');
      return request;
    }
    case Tag.acquireGranted:
      return r.int('grant answer', 2);
    default:
      throw new ProtocolError('snapshot: unknown answer tag');
  }
}
