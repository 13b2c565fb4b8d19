// A second, deliberately naive implementation of the lock-table rules: plain arrays and linear scans,
// no indexes, no linked lists, no heap. It is the yardstick for the model test — slow and obvious.
// Order rules it spells out (and the real table must match):
//   - a lock's queue is its waits in the order they were created; a session's waits likewise;
//   - a session's locks are in the order it was granted them;
//   - at each entry, overdue waits go first, by (deadline, session, request number);
//   - ending a session withdraws its waits (queue order), then releases its locks (grant order).

import type {
  Command,
  Effect,
  Entry,
  LockTableLimits,
  ReleaseReason,
  Result,
  SessionLockScope,
  WaitEndReason,
} from '../../src/locks/index.ts';
import { SessionLockScope as Scope } from '../../src/locks/index.ts';
import type { Grants } from '../../src/locks/permissions.ts';

const SESSION = Scope.UNLOCK_ON_SESSION_LOSS;
const CONNECTION = Scope.UNLOCK_ON_CONNECTION_LOSS;

/** Results as the model compares them: errors by code only (messages are prose). */
export type ModelResult = Exclude<Result, { kind: 'error' }> | { kind: 'error'; code: string };

export function normalize(result: Result): ModelResult {
  return result.kind === 'error' ? { kind: 'error', code: result.code } : result;
}

interface Request {
  session: number;
  requestNo: number;
  name: string;
  scope: SessionLockScope;
  deadlineMs: number | null;
  status: 'pending' | 'granted' | 'withdrawn';
  sequence: number;
  grantedScope: SessionLockScope;
  reason: WaitEndReason | null;
}

type Answer = { request: Request } | { fixed: ModelResult };

/** The model's own reading of a grant pattern: `*` is any run of characters (S12). */
export function modelMayAcquire(grants: Grants | null, name: string): boolean {
  if (grants === null) return true;
  return grants.acquire.some((pattern) => {
    const source = pattern
      .split('*')
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('[\\s\\S]*');
    return new RegExp(`^${source}$`, 'u').test(name);
  });
}

interface Session {
  id: number;
  principal: string;
  reconnectionWindowMs: number;
  grants: Grants | null;
  epoch: number;
  connected: boolean;
  lostAtMs: number | null;
  owned: string[];
  /** Every answer ever given; only those within the window count. */
  answers: [number, Answer][];
  requestNoMax: number;
}

interface Lock {
  owner: number;
  sequence: number;
  scope: SessionLockScope;
}

interface Wait {
  session: number;
  name: string;
  requests: Request[];
}

const reasonCode: Record<WaitEndReason, string> = {
  cancelled: 'ABORTED',
  timeout: 'TIMEOUT',
  connectionLost: 'CONNECTION_LOST',
  sessionClosed: 'SESSION_CLOSED',
  sessionExpired: 'SESSION_CLOSED',
};

function utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

export class Model {
  nowMs = 0;
  lastSequence = 0;
  lastSessionId = 0;
  sessions: Session[] = [];
  locks = new Map<string, Lock>();
  waits: Wait[] = [];
  effects: Effect[] = [];

  constructor(readonly limits: LockTableLimits) {}

  apply(entry: Entry): { results: ModelResult[]; effects: Effect[] } {
    this.effects = [];
    this.nowMs = Math.max(this.nowMs, entry.timeMs);
    const overdue = this.allPending()
      .filter((r) => r.deadlineMs !== null && r.deadlineMs <= this.nowMs)
      .sort(
        (x, y) =>
          (x.deadlineMs as number) - (y.deadlineMs as number) ||
          x.session - y.session ||
          x.requestNo - y.requestNo,
      );
    for (const request of overdue) this.withdraw(request, 'timeout');
    const results = entry.commands.map((command) => this.command(command));
    return { results, effects: this.effects };
  }

  // --- views used by the test ---

  queue(name: string): number[] {
    return this.waits.filter((w) => w.name === name).map((w) => w.session);
  }

  session(id: number): Session | undefined {
    return this.sessions.find((s) => s.id === id);
  }

  // --- commands ---

  private command(c: Command): ModelResult {
    const invalid = this.invalid(c);
    if (invalid) return { kind: 'error', code: 'INVALID_ARGUMENT' };
    if (c.type === 'openSession') {
      if (this.sessions.length >= this.limits.sessionsMax) return { kind: 'error', code: 'LIMIT_EXCEEDED' };
      const id = ++this.lastSessionId;
      this.sessions.push({
        id,
        principal: c.principal,
        reconnectionWindowMs: c.reconnectionWindowMs,
        grants: c.grants ?? null,
        epoch: 0,
        connected: true,
        lostAtMs: null,
        owned: [],
        answers: [],
        requestNoMax: 0,
      });
      return { kind: 'opened', session: id };
    }
    const s = this.session(c.session);
    if (!s) {
      return {
        kind: 'error',
        code: c.session <= this.lastSessionId ? 'SESSION_CLOSED' : 'SESSION_NOT_FOUND',
      };
    }
    switch (c.type) {
      case 'closeSession':
        this.end(s, 'closed');
        return { kind: 'done' };
      case 'expireSession':
        if (c.epoch !== s.epoch) return { kind: 'ignored' };
        this.end(s, 'expired');
        return { kind: 'done' };
      case 'connectionLost':
        if (c.epoch !== s.epoch || !s.connected) return { kind: 'ignored' };
        this.loseConnection(s);
        s.connected = false;
        s.lostAtMs = this.nowMs;
        return { kind: 'done' };
      case 'reconnect':
        if (c.epoch === s.epoch && s.connected) return { kind: 'done' };
        if (c.epoch <= s.epoch) return { kind: 'error', code: 'STALE_REQUEST' };
        if (s.connected) this.loseConnection(s);
        s.epoch = c.epoch;
        s.connected = true;
        s.lostAtMs = null;
        return { kind: 'done' };
      case 'acquire':
        return this.acquire(s, c.requestNo, c.name, c.scope, c.deadlineMs ?? null);
      case 'release':
        return this.release(s, c.requestNo, c.name, c.sequence);
      case 'cancel':
        return this.cancel(s, c.requestNo);
      default:
        throw new Error('unreachable');
    }
  }

  private invalid(c: Command): boolean {
    const pos = (n: number) => Number.isSafeInteger(n) && n >= 1;
    const nat = (n: number) => Number.isSafeInteger(n) && n >= 0;
    const name = (text: string, max: number) =>
      text.length > 0 && !/\p{Cs}/u.test(text) && utf8Bytes(text) <= max;
    switch (c.type) {
      case 'openSession':
        return (
          !name(c.principal, this.limits.principalBytesMax) ||
          !nat(c.reconnectionWindowMs) ||
          c.reconnectionWindowMs > this.limits.reconnectionWindowMsMax
        );
      case 'closeSession':
        return !pos(c.session);
      case 'reconnect':
      case 'connectionLost':
      case 'expireSession':
        return !pos(c.session) || !nat(c.epoch);
      case 'acquire':
        return (
          !pos(c.session) ||
          !pos(c.requestNo) ||
          !name(c.name, this.limits.lockNameBytesMax) ||
          (c.scope !== SESSION && c.scope !== CONNECTION) ||
          (c.deadlineMs !== undefined && !nat(c.deadlineMs))
        );
      case 'cancel':
        return !pos(c.session) || !pos(c.requestNo);
      case 'release':
        return (
          !pos(c.session) ||
          !pos(c.requestNo) ||
          !name(c.name, this.limits.lockNameBytesMax) ||
          (c.sequence !== undefined && !pos(c.sequence))
        );
    }
  }

  /** A previous answer for this request number: 'new', 'stale', or the answer. */
  /** The window: request numbers above this are remembered (if answered). */
  private windowFloor(s: Session): number {
    return s.requestNoMax - this.limits.dedupeResultsPerSessionMax;
  }

  private previous(s: Session, requestNo: number): Answer | 'new' | 'stale' {
    const answered = s.answers.find(([n]) => n === requestNo);
    if (answered && requestNo > this.windowFloor(s)) return answered[1];
    const pending = this.allPending().find((r) => r.session === s.id && r.requestNo === requestNo);
    if (pending) return { request: pending };
    return requestNo <= this.windowFloor(s) ? 'stale' : 'new';
  }

  private remember(s: Session, requestNo: number, answer: Answer): void {
    s.answers.push([requestNo, answer]);
    s.requestNoMax = Math.max(s.requestNoMax, requestNo);
  }

  private fixed(s: Session, requestNo: number, result: ModelResult): ModelResult {
    this.remember(s, requestNo, { fixed: result });
    return result;
  }

  /** A retried acquire (`name` from the retry; a retry's arguments are not compared with the first's). */
  private outcome(r: Request, name: string): ModelResult {
    if (r.status === 'pending') return { kind: 'waiting', name: r.name };
    if (r.status === 'withdrawn') return { kind: 'error', code: reasonCode[r.reason as WaitEndReason] };
    const lock = this.locks.get(name);
    const held = lock !== undefined && lock.owner === r.session && lock.sequence === r.sequence;
    return {
      kind: 'granted',
      name,
      sequence: r.sequence,
      scope: held ? (lock as Lock).scope : r.grantedScope,
      held,
    };
  }

  private claims(s: Session): number {
    return s.owned.length + this.allPending().filter((r) => r.session === s.id).length;
  }

  private acquire(
    s: Session,
    requestNo: number,
    name: string,
    scope: SessionLockScope,
    deadlineMs: number | null,
  ): ModelResult {
    const prev = this.previous(s, requestNo);
    if (prev === 'stale') return { kind: 'error', code: 'STALE_REQUEST' };
    if (prev !== 'new') {
      if ('request' in prev) return this.outcome(prev.request, name);
      return prev.fixed.kind === 'unlocked' ? { kind: 'error', code: 'INVALID_ARGUMENT' } : prev.fixed;
    }
    if (!modelMayAcquire(s.grants, name))
      return this.fixed(s, requestNo, { kind: 'error', code: 'PERMISSION_DENIED' });
    if (scope === CONNECTION && !s.connected)
      return this.fixed(s, requestNo, { kind: 'error', code: 'CONNECTION_LOST' });
    const request: Request = {
      session: s.id,
      requestNo,
      name,
      scope,
      deadlineMs: null,
      status: 'granted',
      sequence: 0,
      grantedScope: scope,
      reason: null,
    };
    const lock = this.locks.get(name);
    if (!lock) {
      if (this.claims(s) >= this.limits.locksAndWaitsPerSessionMax) {
        return this.fixed(s, requestNo, { kind: 'error', code: 'LIMIT_EXCEEDED' });
      }
      const sequence = ++this.lastSequence;
      this.locks.set(name, { owner: s.id, sequence, scope });
      s.owned.push(name);
      request.sequence = sequence;
      this.remember(s, requestNo, { request });
      this.effects.push({ kind: 'granted', session: s.id, name, sequence, scope, requestNos: [requestNo] });
      return { kind: 'granted', name, sequence, scope, held: true };
    }
    if (lock.owner === s.id) {
      if (scope === CONNECTION && lock.scope === SESSION) {
        lock.scope = CONNECTION;
        this.effects.push({
          kind: 'scopeChanged',
          session: s.id,
          name,
          sequence: lock.sequence,
          scope: CONNECTION,
        });
      }
      request.sequence = lock.sequence;
      request.grantedScope = lock.scope;
      this.remember(s, requestNo, { request });
      return { kind: 'granted', name, sequence: lock.sequence, scope: lock.scope, held: true };
    }
    if (deadlineMs !== null && deadlineMs <= this.nowMs)
      return this.fixed(s, requestNo, { kind: 'error', code: 'TIMEOUT' });
    if (this.claims(s) >= this.limits.locksAndWaitsPerSessionMax) {
      return this.fixed(s, requestNo, { kind: 'error', code: 'LIMIT_EXCEEDED' });
    }
    let wait = this.waits.find((w) => w.session === s.id && w.name === name);
    if (!wait) {
      if (this.queue(name).length >= this.limits.waitersPerLockMax) {
        return this.fixed(s, requestNo, { kind: 'error', code: 'LIMIT_EXCEEDED' });
      }
      wait = { session: s.id, name, requests: [] };
      this.waits.push(wait);
    }
    request.status = 'pending';
    request.deadlineMs = deadlineMs;
    wait.requests.push(request);
    this.remember(s, requestNo, { request });
    this.effects.push({ kind: 'waiting', session: s.id, name, requestNo });
    return { kind: 'waiting', name };
  }

  private release(s: Session, requestNo: number, name: string, sequence: number | undefined): ModelResult {
    const prev = this.previous(s, requestNo);
    if (prev === 'stale') return { kind: 'error', code: 'STALE_REQUEST' };
    if (prev !== 'new') {
      if (!('request' in prev)) return prev.fixed;
      // An acquire that ended in an error answers every retry with it; any other acquire is the wrong kind.
      const r = prev.request;
      return r.status === 'withdrawn'
        ? { kind: 'error', code: reasonCode[r.reason as WaitEndReason] }
        : { kind: 'error', code: 'INVALID_ARGUMENT' };
    }
    const lock = this.locks.get(name);
    const owned =
      lock !== undefined && lock.owner === s.id && (sequence === undefined || sequence === lock.sequence);
    if (owned) this.releaseLock(name, 'unlock');
    return this.fixed(s, requestNo, { kind: 'unlocked', owned });
  }

  private cancel(s: Session, requestNo: number): ModelResult {
    const prev = this.previous(s, requestNo);
    if (prev === 'stale') return { kind: 'error', code: 'STALE_REQUEST' };
    if (prev === 'new') {
      this.remember(s, requestNo, { fixed: { kind: 'error', code: 'ABORTED' } });
      return { kind: 'cancelled', outcome: 'none' };
    }
    if (!('request' in prev)) return { kind: 'cancelled', outcome: 'none' };
    const r = prev.request;
    if (r.status === 'pending') {
      this.withdraw(r, 'cancelled');
      return { kind: 'cancelled', outcome: 'withdrawn' };
    }
    if (r.status === 'granted') {
      const held = [...this.locks].find(([, lock]) => lock.owner === s.id && lock.sequence === r.sequence);
      if (held) {
        r.status = 'withdrawn';
        r.reason = 'cancelled';
        this.releaseLock(held[0], 'cancelled');
        return { kind: 'cancelled', outcome: 'released' };
      }
    }
    return { kind: 'cancelled', outcome: 'none' };
  }

  // --- transitions ---

  private allPending(): Request[] {
    return this.waits.flatMap((w) => w.requests);
  }

  private withdraw(r: Request, reason: WaitEndReason): void {
    const wait = this.waits.find((w) => w.requests.includes(r)) as Wait;
    wait.requests = wait.requests.filter((x) => x !== r);
    if (wait.requests.length === 0) this.waits = this.waits.filter((w) => w !== wait);
    r.status = 'withdrawn';
    r.reason = reason;
    this.effects.push({
      kind: 'waitEnded',
      session: r.session,
      name: r.name,
      requestNo: r.requestNo,
      reason,
    });
  }

  private releaseLock(name: string, reason: ReleaseReason): void {
    const lock = this.locks.get(name) as Lock;
    const owner = this.session(lock.owner) as Session;
    owner.owned = owner.owned.filter((n) => n !== name);
    this.effects.push({ kind: 'released', session: owner.id, name, sequence: lock.sequence, reason });
    const next = this.waits.find((w) => w.name === name);
    if (!next) {
      this.locks.delete(name);
      return;
    }
    this.waits = this.waits.filter((w) => w !== next);
    const scope = next.requests.some((r) => r.scope === CONNECTION) ? CONNECTION : SESSION;
    const sequence = ++this.lastSequence;
    this.locks.set(name, { owner: next.session, sequence, scope });
    (this.session(next.session) as Session).owned.push(name);
    for (const r of next.requests) {
      r.status = 'granted';
      r.sequence = sequence;
      r.grantedScope = scope;
    }
    this.effects.push({
      kind: 'granted',
      session: next.session,
      name,
      sequence,
      scope,
      requestNos: next.requests.map((r) => r.requestNo),
    });
  }

  private loseConnection(s: Session): void {
    for (const r of this.allPending().filter((r) => r.session === s.id && r.scope === CONNECTION)) {
      this.withdraw(r, 'connectionLost');
    }
    for (const name of [...s.owned]) {
      if ((this.locks.get(name) as Lock).scope === CONNECTION) this.releaseLock(name, 'connectionLost');
    }
  }

  private end(s: Session, how: 'closed' | 'expired'): void {
    const reason = how === 'closed' ? 'sessionClosed' : 'sessionExpired';
    for (const r of this.allPending().filter((r) => r.session === s.id)) this.withdraw(r, reason);
    for (const name of [...s.owned]) this.releaseLock(name, reason);
    this.sessions = this.sessions.filter((x) => x !== s);
    this.effects.push({ kind: 'sessionEnded', session: s.id, reason: how });
  }
}
