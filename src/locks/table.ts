// The lock table: the replicated state machine that the Raft log drives. Pure and deterministic —
// the same entries applied in the same order give the same results, effects and snapshot bytes on
// every replica. Time enters only as `Entry.timeMs`, stamped by the leader.
//
// The rules it implements are SPEC.md S1–S8, S11, S14 and S15; docs/semantics.md explains each one
// and the choices made where the SPEC leaves room.

import { AssertionError, assert, assertNever } from '../assert.ts';
import type { ErrorCode } from '../errors.ts';
import { ProtocolError } from '../errors.ts';
import { listLocksMax } from '../limits.ts';
import { findAnswer, rememberAnswer } from './answers.ts';
import { anyMatches, type Grants } from './permissions.ts';
import {
  readSnapshot,
  snapshotMemberContextLengthMax,
  snapshotMemberIdLengthMax,
  snapshotMembersMax,
  writeSnapshot,
} from './snapshot.ts';
import {
  AcquireRequest,
  appendWaiter,
  type DedupeValue,
  grantAnswer,
  grantAnswerScope,
  grantAnswerSequence,
  LockState,
  linkOwned,
  noDeadlineMs,
  ownedLocks,
  SessionState,
  TableState,
  unlinkOwned,
  unlinkWaiter,
  Waiter,
} from './state.ts';
import type {
  AcquireCommand,
  ApplyOutput,
  CancelCommand,
  Command,
  Effect,
  Entry,
  ErrorResult,
  ListLocksOptions,
  LockInfo,
  ReleaseCommand,
  ReleaseReason,
  Result,
  SessionEndReason,
  SessionId,
  SessionInfo,
  UnlockedResult,
  WaitEndReason,
} from './types.ts';
import { SessionLockScope } from './types.ts';
import { commandProblem, defaultLockTableLimits, type LockTableLimits } from './validate.ts';

export interface LockTableOptions {
  /** Overrides of the bounds in src/limits.ts (tests use small ones to reach the edges). */
  readonly limits?: Partial<LockTableLimits>;
}

/** Distinct grants remembered for sharing; past this the memo starts over (grants change rarely). */
const grantsSharedMax = 1024;

const SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS;
const CONNECTION = SessionLockScope.UNLOCK_ON_CONNECTION_LOSS;

// Fixed results are shared, frozen objects: the hot path allocates nothing for them.
const unlockedOwned: UnlockedResult = Object.freeze({ kind: 'unlocked', owned: true });
const unlockedNotOwned: UnlockedResult = Object.freeze({ kind: 'unlocked', owned: false });
const done: Result = Object.freeze({ kind: 'done' });
const ignored: Result = Object.freeze({ kind: 'ignored' });
const cancelWithdrawn: Result = Object.freeze({ kind: 'cancelled', outcome: 'withdrawn' });
const cancelReleased: Result = Object.freeze({ kind: 'cancelled', outcome: 'released' });
const cancelNone: Result = Object.freeze({ kind: 'cancelled', outcome: 'none' });
const staleRequest: ErrorResult = errorResult(
  'STALE_REQUEST',
  'request number is older than the retained dedupe window',
);
/** Left by a cancel that arrived before its acquire: the acquire, when it comes, is answered with it. */
const abortedBeforeArrival: ErrorResult = errorResult('ABORTED', 'request was cancelled before it applied');

function errorResult(code: ErrorCode, message: string): ErrorResult {
  return Object.freeze({ kind: 'error', code, message });
}

/** The error a withdrawn acquire completes with (its retries get the same). */
function waitEndError(reason: WaitEndReason): ErrorResult {
  switch (reason) {
    case 'cancelled':
      return errorResult('ABORTED', 'lock request was cancelled');
    case 'timeout':
      return errorResult('TIMEOUT', 'lock request timed out');
    case 'connectionLost':
      return errorResult('CONNECTION_LOST', 'connection was lost while the request waited');
    case 'sessionClosed':
      return errorResult('SESSION_CLOSED', 'session closed while the request waited');
    case 'sessionExpired':
      return errorResult('SESSION_CLOSED', 'session expired while the request waited');
    default:
      return assertNever(reason, 'wait end reason');
  }
}
const waitEndErrors: Readonly<Record<WaitEndReason, ErrorResult>> = {
  cancelled: waitEndError('cancelled'),
  timeout: waitEndError('timeout'),
  connectionLost: waitEndError('connectionLost'),
  sessionClosed: waitEndError('sessionClosed'),
  sessionExpired: waitEndError('sessionExpired'),
};

export class LockTable {
  readonly limits: LockTableLimits;
  private state: TableState;
  /** The effects list of the entry being applied. */
  private effects: Effect[] = [];
  /** Distinct grants seen in openSession, shared by their sessions (see `shared`). Not replicated state. */
  private readonly grantsByKey = new Map<string, Grants>();

  constructor(options: LockTableOptions = {}) {
    this.limits = Object.freeze({ ...defaultLockTableLimits, ...options.limits });
    for (const [key, value] of Object.entries(this.limits)) {
      assert(Number.isSafeInteger(value) && value >= 1, `limit ${key} must be a positive integer`);
    }
    this.state = new TableState();
  }

  /** Rebuilds a table from `snapshot()` bytes; throws PROTOCOL_ERROR on bytes that are not one. */
  static restore(bytes: Uint8Array, options: LockTableOptions = {}): LockTable {
    const table = new LockTable(options);
    table.state = readSnapshot(bytes, table.limits.dedupeResultsPerSessionMax);
    try {
      table.assertInvariants();
    } catch (error) {
      if (error instanceof AssertionError)
        throw new ProtocolError(`snapshot is inconsistent: ${error.message}`);
      throw error;
    }
    return table;
  }

  /** The cluster members' contexts (their addresses), by id, as the node last set them (C5). */
  get members(): ReadonlyMap<string, string> {
    return this.state.members;
  }

  /** Records (or, with null, forgets) a member's context; only snapshots read it back. */
  setMember(id: string, context: string | null): void {
    assert(id.length > 0 && id.length <= snapshotMemberIdLengthMax, 'table: bad member id');
    if (context === null) {
      this.state.members.delete(id);
      return;
    }
    assert(context.length <= snapshotMemberContextLengthMax, 'table: member context too long');
    assert(
      this.state.members.has(id) || this.state.members.size < snapshotMembersMax,
      'table: too many members',
    );
    this.state.members.set(id, context);
  }

  /** The whole replicated state; equal tables give equal bytes. */
  snapshot(): Uint8Array {
    return writeSnapshot(this.state, this.limits.dedupeResultsPerSessionMax);
  }

  get appliedIndex(): number {
    return this.state.appliedIndex;
  }
  get nowMs(): number {
    return this.state.nowMs;
  }
  get lastSequence(): number {
    return this.state.lastSequence;
  }
  get sessionCount(): number {
    return this.state.sessions.size;
  }
  get lockCount(): number {
    return this.state.locks.size;
  }
  /** Waiting (session, lock) pairs over all locks. */
  get waiterCount(): number {
    return this.state.waiterTotal;
  }

  /**
   * Applies one committed entry. `index` is its Raft index: it must grow from call to call (gaps for
   * entries that carry no commands are fine). Returns one result per command and every effect, in order.
   */
  apply(index: number, entry: Entry): ApplyOutput {
    const state = this.state;
    assert(
      Number.isSafeInteger(index) && index > state.appliedIndex,
      'entries are applied in index order, once',
    );
    assert(Number.isSafeInteger(entry.timeMs) && entry.timeMs >= 0, 'entry time is a safe integer');
    state.appliedIndex = index;
    if (entry.timeMs > state.nowMs) state.nowMs = entry.timeMs;
    const effects: Effect[] = [];
    this.effects = effects;
    // Deadlines first, so that a command in this entry sees a world where overdue waits are gone.
    if (state.deadlines.size > 0) this.expireDeadlines();
    const commands = entry.commands;
    const results = new Array<Result>(commands.length);
    for (let i = 0; i < commands.length; i++) results[i] = this.applyCommand(commands[i] as Command);
    return { results, effects };
  }

  // --- Commands ------------------------------------------------------------------------------------

  private applyCommand(command: Command): Result {
    const problem = commandProblem(command, this.limits);
    if (problem !== null) return errorResult('INVALID_ARGUMENT', problem);
    switch (command.type) {
      case 'acquire':
        return this.acquire(command);
      case 'release':
        return this.release(command);
      case 'cancel':
        return this.cancel(command);
      case 'openSession':
        return this.openSession(command.principal, command.reconnectionWindowMs, command.grants ?? null);
      case 'reconnect':
        return this.reconnect(command.session, command.epoch);
      case 'connectionLost':
        return this.connectionLost(command.session, command.epoch);
      case 'closeSession': {
        const session = this.state.sessions.get(command.session);
        if (session === undefined) return this.missingSession(command.session);
        this.endSession(session, 'closed');
        return done;
      }
      case 'expireSession': {
        const session = this.state.sessions.get(command.session);
        if (session === undefined) return this.missingSession(command.session);
        // A reconnect since the leader decided to expire it makes the decision stale (C6).
        if (command.epoch !== session.epoch) return ignored;
        this.endSession(session, 'expired');
        return done;
      }
      default:
        return assertNever(command, 'command');
    }
  }

  private missingSession(id: number): ErrorResult {
    // Ids are handed out in order, so an id at or below the last one belonged to a session that ended;
    // this tells the two cases apart without remembering every ended session.
    return id <= this.state.lastSessionId
      ? errorResult('SESSION_CLOSED', `session ${id} is closed`)
      : errorResult('SESSION_NOT_FOUND', `session ${id} does not exist`);
  }

  private openSession(principal: string, reconnectionWindowMs: number, grants: Grants | null): Result {
    const state = this.state;
    if (state.sessions.size >= this.limits.sessionsMax) {
      return errorResult('LIMIT_EXCEEDED', `${this.limits.sessionsMax} sessions are open already`);
    }
    const id = ++state.lastSessionId;
    state.sessions.set(id, new SessionState(id, principal, reconnectionWindowMs, this.shared(grants)));
    return { kind: 'opened', session: id };
  }

  /**
   * One frozen Grants object per distinct grant, shared by every session holding it (a principal's
   * sessions all carry the same grant, each decoded afresh from its entry): at 100,000 sessions that is
   * about 20 MB of heap. Sharing is invisible to behaviour and to the snapshot, which stores each
   * distinct grant once anyway.
   */
  private shared(grants: Grants | null): Grants | null {
    if (grants === null) return null;
    const key = JSON.stringify([grants.acquire, grants.read, grants.admin]);
    const known = this.grantsByKey.get(key);
    if (known !== undefined) return known;
    if (this.grantsByKey.size >= grantsSharedMax) this.grantsByKey.clear();
    const frozen: Grants = Object.freeze({
      acquire: Object.freeze([...grants.acquire]),
      read: Object.freeze([...grants.read]),
      admin: grants.admin,
    });
    this.grantsByKey.set(key, frozen);
    return frozen;
  }

  private reconnect(id: number, epoch: number): Result {
    const session = this.state.sessions.get(id);
    if (session === undefined) return this.missingSession(id);
    if (epoch === session.epoch && session.connected) return done; // a retry of the reconnect that won
    if (epoch <= session.epoch) {
      return errorResult('STALE_REQUEST', `connection epoch ${epoch} is not newer than ${session.epoch}`);
    }
    // A newer connection means the current one is gone, whether or not the leader noticed yet: the
    // client already treats its UNLOCK_ON_CONNECTION_LOSS locks as lost (S10), so the table must too.
    if (session.connected) this.dropConnection(session);
    session.epoch = epoch;
    session.connected = true;
    session.connectionLostAtMs = -1;
    return done;
  }

  private connectionLost(id: number, epoch: number): Result {
    const session = this.state.sessions.get(id);
    if (session === undefined) return this.missingSession(id);
    // Only the current connection can be lost; a report about an older one comes too late to matter.
    if (epoch !== session.epoch || !session.connected) return ignored;
    this.dropConnection(session);
    session.connected = false;
    session.connectionLostAtMs = this.state.nowMs;
    return done;
  }

  private acquire(command: AcquireCommand): Result {
    const session = this.state.sessions.get(command.session);
    if (session === undefined) return this.missingSession(command.session);
    const requestNo = command.requestNo;
    const name = command.name;
    const prior = this.lookupRequest(session, requestNo);
    if (prior !== undefined) {
      // A retry: answered from what the first request did. Its arguments are not compared (the client
      // resends the same request), only its kind.
      if (typeof prior === 'number') return this.grantOutcome(session, name, prior);
      if (prior instanceof AcquireRequest) return { kind: 'waiting', name: prior.name };
      if (prior.kind === 'unlocked') return this.reusedRequestNo(requestNo);
      return prior;
    }
    // S12: decided here, at apply, from the grants the session was opened with — the same on every
    // replica, whichever node forwarded or proposed the command. A denial changes nothing but the
    // session's dedupe window, so a retry gets the same answer.
    if (session.grants !== null && !anyMatches(session.grants.acquire, name)) {
      return this.remember(
        session,
        requestNo,
        errorResult('PERMISSION_DENIED', `principal ${session.principal} may not acquire this lock`),
      );
    }

    const scope = command.scope;
    if (scope === CONNECTION && !session.connected) {
      // It would be released the moment it was granted: the session has no connection to lose.
      return this.remember(session, requestNo, errorResult('CONNECTION_LOST', 'session has no connection'));
    }
    const lock = this.state.locks.get(name);

    if (lock === undefined) {
      if (this.claimsFull(session)) return this.remember(session, requestNo, this.claimsError());
      const sequence = ++this.state.lastSequence;
      const granted = new LockState(name, session, sequence, scope);
      this.state.locks.set(name, granted);
      linkOwned(session, granted);
      this.remember(session, requestNo, grantAnswer(sequence, scope));
      this.effects.push({
        kind: 'granted',
        session: session.id,
        name,
        sequence,
        scope,
        requestNos: [requestNo],
      });
      return { kind: 'granted', name, sequence, scope, held: true };
    }

    if (lock.owner === session) {
      // S4: a repeat call completes at once with the grant it already has. S5: a weaker scope weakens
      // the grant for every call that shares it, so all of them report the same scope.
      if (scope === CONNECTION && lock.scope === SESSION) {
        lock.scope = CONNECTION;
        this.effects.push({
          kind: 'scopeChanged',
          session: session.id,
          name,
          sequence: lock.sequence,
          scope: CONNECTION,
        });
      }
      this.remember(session, requestNo, grantAnswer(lock.sequence, lock.scope));
      return { kind: 'granted', name, sequence: lock.sequence, scope: lock.scope, held: true };
    }

    // Someone else owns it: wait (S3), unless the deadline has already passed.
    const deadlineMs = command.deadlineMs ?? noDeadlineMs;
    if (deadlineMs !== noDeadlineMs && deadlineMs <= this.state.nowMs) {
      return this.remember(session, requestNo, waitEndErrors.timeout);
    }
    if (this.claimsFull(session)) return this.remember(session, requestNo, this.claimsError());
    let waiter = session.waits.get(name);
    if (waiter === undefined) {
      if (lock.waiterCount >= this.limits.waitersPerLockMax) {
        return this.remember(
          session,
          requestNo,
          errorResult('LIMIT_EXCEEDED', `lock has ${this.limits.waitersPerLockMax} waiters already`),
        );
      }
      waiter = new Waiter(session, lock);
      this.enqueue(lock, waiter);
      session.mutableWaits().set(name, waiter);
    }
    const request = new AcquireRequest(session, requestNo, name, scope, deadlineMs);
    request.waiter = waiter;
    waiter.requests.push(request);
    session.mutablePending().set(requestNo, request);
    if (deadlineMs !== noDeadlineMs) this.state.deadlines.push(request);
    this.remember(session, requestNo, request);
    this.effects.push({ kind: 'waiting', session: session.id, name, requestNo });
    return { kind: 'waiting', name };
  }

  private release(command: ReleaseCommand): Result {
    const session = this.state.sessions.get(command.session);
    if (session === undefined) return this.missingSession(command.session);
    const prior = this.lookupRequest(session, command.requestNo);
    // A retry gets its first answer and changes nothing, even if the session has since re-acquired the
    // lock (etcd#22082): the dedupe check comes before any look at the lock.
    if (prior !== undefined) {
      return typeof prior === 'number' || prior instanceof AcquireRequest
        ? this.reusedRequestNo(command.requestNo)
        : prior;
    }
    const lock = this.state.locks.get(command.name);
    let result = unlockedNotOwned;
    if (
      lock !== undefined &&
      lock.owner === session &&
      (command.sequence === undefined || command.sequence === lock.sequence)
    ) {
      this.releaseLock(lock, 'unlock');
      result = unlockedOwned;
    }
    return this.remember(session, command.requestNo, result);
  }

  private cancel(command: CancelCommand): Result {
    const session = this.state.sessions.get(command.session);
    if (session === undefined) return this.missingSession(command.session);
    const requestNo = command.requestNo;
    const prior = this.lookupRequest(session, requestNo);
    if (prior === undefined) {
      // The cancel overtook its acquire (a retry after failover, say): leave the answer for it.
      this.remember(session, requestNo, abortedBeforeArrival);
      return cancelNone;
    }
    if (prior === staleRequest) return staleRequest;
    if (prior instanceof AcquireRequest) {
      this.withdraw(prior, 'cancelled');
      return cancelWithdrawn;
    }
    if (typeof prior !== 'number') return cancelNone;
    // S14: the grant won the race. Release it — but only that grant: if the lock was released and
    // granted again since, the newer grant has another sequence and is left alone.
    const sequence = grantAnswerSequence(prior);
    for (let lock = session.ownedHead; lock !== null; lock = lock.ownerNext) {
      if (lock.sequence !== sequence) continue;
      this.remember(session, requestNo, waitEndErrors.cancelled); // the call now ends with ABORTED
      this.releaseLock(lock, 'cancelled');
      return cancelReleased;
    }
    return cancelNone;
  }

  // --- Exactly-once -------------------------------------------------------------------------------

  /** The answer for a request number this session used before, `staleRequest`, or undefined if new. */
  private lookupRequest(session: SessionState, requestNo: number): DedupeValue | undefined {
    if (requestNo > session.requestNoMax) return undefined; // the common case: the next request
    const windowSize = this.limits.dedupeResultsPerSessionMax;
    const seen = findAnswer(session, requestNo, windowSize);
    if (seen !== undefined) return seen;
    const pending = session.pending.get(requestNo);
    if (pending !== undefined) return pending;
    // Below the window we no longer know whether it applied, so it must not apply now.
    if (requestNo <= session.requestNoMax - windowSize) return staleRequest;
    return undefined;
  }

  private remember<T extends DedupeValue>(session: SessionState, requestNo: number, value: T): T {
    rememberAnswer(session, requestNo, value, this.limits.dedupeResultsPerSessionMax);
    return value;
  }

  /** Replaces the answer of a request that just ended, if its answer is still kept. */
  private updateAnswer(request: AcquireRequest, value: DedupeValue): void {
    const windowSize = this.limits.dedupeResultsPerSessionMax;
    if (findAnswer(request.session, request.requestNo, windowSize) === request) {
      rememberAnswer(request.session, request.requestNo, value, windowSize);
    }
  }

  private reusedRequestNo(requestNo: number): ErrorResult {
    return errorResult(
      'INVALID_ARGUMENT',
      `request number ${requestNo} was used by a different kind of request`,
    );
  }

  /** A retried acquire that was granted: the grant as it is now if still held, else as it was. */
  private grantOutcome(session: SessionState, name: string, answer: number): Result {
    const sequence = grantAnswerSequence(answer);
    const lock = this.state.locks.get(name);
    if (lock !== undefined && lock.owner === session && lock.sequence === sequence) {
      return { kind: 'granted', name, sequence, scope: lock.scope, held: true };
    }
    return { kind: 'granted', name, sequence, scope: grantAnswerScope(answer), held: false };
  }

  // --- Grants, releases, waits --------------------------------------------------------------------

  private claimsFull(session: SessionState): boolean {
    return session.ownedCount + session.pending.size >= this.limits.locksAndWaitsPerSessionMax;
  }

  private claimsError(): ErrorResult {
    return errorResult(
      'LIMIT_EXCEEDED',
      `session holds or waits for ${this.limits.locksAndWaitsPerSessionMax} locks already`,
    );
  }

  /** Releases `lock` from its owner and, in the same step, grants it to the earliest waiter (S7). */
  private releaseLock(lock: LockState, reason: ReleaseReason): void {
    const owner = lock.owner;
    unlinkOwned(owner, lock);
    this.effects.push({
      kind: 'released',
      session: owner.id,
      name: lock.name,
      sequence: lock.sequence,
      reason,
    });
    const next = lock.head;
    if (next === null) {
      // An idle lock leaves no record; sequences stay unique because the counter is table-wide (S8).
      this.state.locks.delete(lock.name);
      return;
    }
    this.dequeue(lock, next);
    this.grantWaiter(lock, next);
  }

  private grantWaiter(lock: LockState, waiter: Waiter): void {
    const session = waiter.session;
    assert(session !== lock.owner, 'a waiter never waits for a lock it owns');
    session.mutableWaits().delete(lock.name);
    const requests = waiter.requests;
    assert(requests.length > 0, 'a waiter has at least one pending request');
    // S5: the grant takes the weakest scope any of the requests it fulfils asked for.
    let scope: SessionLockScope = SESSION;
    for (let i = 0; i < requests.length; i++)
      if ((requests[i] as AcquireRequest).scope === CONNECTION) scope = CONNECTION;
    assert(scope === SESSION || session.connected, 'no connection-scoped request waits without a connection');
    lock.owner = session;
    lock.sequence = ++this.state.lastSequence;
    lock.scope = scope;
    linkOwned(session, lock);
    const requestNos = new Array<number>(requests.length);
    const answer = grantAnswer(lock.sequence, scope);
    for (let i = 0; i < requests.length; i++) {
      const request = requests[i] as AcquireRequest;
      requestNos[i] = request.requestNo;
      request.waiter = null;
      session.mutablePending().delete(request.requestNo);
      if (request.heapIndex !== -1) this.state.deadlines.remove(request);
      this.updateAnswer(request, answer);
    }
    requests.length = 0;
    this.effects.push({
      kind: 'granted',
      session: session.id,
      name: lock.name,
      sequence: lock.sequence,
      scope,
      requestNos,
    });
  }

  /** Takes one pending request out of its wait; the wait goes when its last request does. */
  private withdraw(request: AcquireRequest, reason: WaitEndReason): void {
    const waiter = request.waiter;
    assert(waiter !== null, 'only a pending request is withdrawn');
    const requests = waiter.requests;
    const at = requests.indexOf(request);
    assert(at >= 0, 'a pending request is in its waiter');
    requests.splice(at, 1);
    const session = request.session;
    request.waiter = null;
    this.updateAnswer(request, waitEndErrors[reason]);
    session.mutablePending().delete(request.requestNo);
    if (request.heapIndex !== -1) this.state.deadlines.remove(request);
    this.effects.push({
      kind: 'waitEnded',
      session: session.id,
      name: request.name,
      requestNo: request.requestNo,
      reason,
    });
    if (requests.length === 0) {
      this.dequeue(waiter.lock, waiter);
      session.mutableWaits().delete(request.name);
    }
  }

  private expireDeadlines(): void {
    const deadlines = this.state.deadlines;
    const nowMs = this.state.nowMs;
    for (;;) {
      const first = deadlines.peek();
      if (first === undefined || first.deadlineMs > nowMs) return;
      this.withdraw(first, 'timeout');
    }
  }

  /**
   * The current connection is gone: its UNLOCK_ON_CONNECTION_LOSS locks are released (S5) and its
   * connection-scoped waits withdrawn (they could only be granted to be released at once). Session-scoped
   * locks and waits stay through the reconnection window (S11).
   */
  private dropConnection(session: SessionState): void {
    if (session.pending.size > 0) {
      for (const waiter of [...session.waits.values()]) {
        for (const request of [...waiter.requests]) {
          if (request.scope === CONNECTION) this.withdraw(request, 'connectionLost');
        }
      }
    }
    for (const lock of ownedLocks(session)) {
      if (lock.scope === CONNECTION) this.releaseLock(lock, 'connectionLost');
    }
  }

  /** S11: closing and expiring withdraw every wait, then release every lock, handing each on (S7). */
  private endSession(session: SessionState, reason: SessionEndReason): void {
    const waitReason: WaitEndReason = reason === 'closed' ? 'sessionClosed' : 'sessionExpired';
    const releaseReason: ReleaseReason = waitReason;
    for (const waiter of [...session.waits.values()]) {
      for (const request of [...waiter.requests]) this.withdraw(request, waitReason);
    }
    for (const lock of ownedLocks(session)) this.releaseLock(lock, releaseReason);
    assert(session.waits.size === 0 && session.pending.size === 0, 'an ended session waits for nothing');
    this.state.sessions.delete(session.id);
    this.effects.push({ kind: 'sessionEnded', session: session.id, reason });
  }

  private enqueue(lock: LockState, waiter: Waiter): void {
    appendWaiter(lock, waiter);
    this.state.waiterTotal++;
  }

  private dequeue(lock: LockState, waiter: Waiter): void {
    unlinkWaiter(lock, waiter);
    this.state.waiterTotal--;
  }

  // --- Inspection (S15): pure reads ---------------------------------------------------------------

  /** The session that holds `name`, or null when nobody does. Cheaper than `getLock` (no waiter list). */
  ownerOf(name: string): SessionId | null {
    return this.state.locks.get(name)?.owner.id ?? null;
  }

  getLock(name: string): LockInfo | null {
    const lock = this.state.locks.get(name);
    return lock === undefined ? null : lockInfo(lock);
  }

  /** Locks sorted by name, filtered by `prefix`, after `after`, at most `limit` (≤ listLocksMax). */
  listLocks(options: ListLocksOptions = {}): LockInfo[] {
    const prefix = options.prefix ?? '';
    const after = options.after;
    const limit = Math.min(Math.max(0, Math.floor(options.limit ?? listLocksMax)), listLocksMax);
    const names: string[] = [];
    for (const name of this.state.locks.keys()) {
      if (name.startsWith(prefix) && (after === undefined || name > after)) names.push(name);
    }
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const page = names.length > limit ? names.slice(0, limit) : names;
    return page.map((name) => lockInfo(this.state.locks.get(name) as LockState));
  }

  getSession(id: number): SessionInfo | null {
    const session = this.state.sessions.get(id);
    if (session === undefined) return null;
    return {
      id: session.id,
      principal: session.principal,
      reconnectionWindowMs: session.reconnectionWindowMs,
      grants: session.grants,
      connectionEpoch: session.epoch,
      connected: session.connected,
      connectionLostAtMs: session.connected ? null : session.connectionLostAtMs,
      locks: ownedLocks(session).map((lock) => ({
        name: lock.name,
        sequence: lock.sequence,
        scope: lock.scope,
      })),
      waits: [...session.waits.values()].map((waiter) => ({
        name: waiter.lock.name,
        requestNos: waiter.requests.map((request) => request.requestNo),
      })),
    };
  }

  /** Session ids in the order they were opened. */
  sessionIds(): number[] {
    return [...this.state.sessions.keys()];
  }

  /**
   * Each session's connection state, in opening order, without building a SessionInfo (whose lists of
   * locks cost a million objects at W5's size): what the leader's liveness mirror is rebuilt from.
   */
  forEachSessionConnection(
    visit: (
      id: number,
      connectionEpoch: number,
      connected: boolean,
      connectionLostAtMs: number | null,
      reconnectionWindowMs: number,
    ) => void,
  ): void {
    for (const session of this.state.sessions.values()) {
      visit(
        session.id,
        session.epoch,
        session.connected,
        session.connected ? null : session.connectionLostAtMs,
        session.reconnectionWindowMs,
      );
    }
  }

  // --- Invariants --------------------------------------------------------------------------------

  /**
   * Checks every invariant of the whole table in O(size); throws AssertionError naming the first broken
   * one. Messages are constant strings: this runs over millions of records when a snapshot is restored.
   */
  assertInvariants(): void {
    const state = this.state;
    const windowSize = this.limits.dedupeResultsPerSessionMax;
    let waiterTotal = 0;
    for (const lock of state.locks.values()) {
      const owner = lock.owner;
      assert(state.locks.get(lock.name) === lock, 'a lock is filed under its name');
      assert(state.sessions.get(owner.id) === owner, "a lock's owner is a live session");
      assert(lock.sequence >= 1 && lock.sequence <= state.lastSequence, 'a grant sequence is in range');
      assert(lock.scope === SESSION || owner.connected, 'a connection-scoped lock needs a connection');
      let count = 0;
      let prev: Waiter | null = null;
      for (let waiter = lock.head; waiter !== null; waiter = waiter.next) {
        count++;
        assert(waiter.prev === prev && waiter.lock === lock, 'lock queue links');
        assert(waiter.session !== owner, 'the owner does not wait for its own lock');
        assert(state.sessions.get(waiter.session.id) === waiter.session, 'waiters are live sessions');
        assert(waiter.session.waits.get(lock.name) === waiter, "a waiter is listed in its session's waits");
        assert(waiter.requests.length > 0, 'a waiter has pending requests');
        prev = waiter;
      }
      assert(lock.tail === prev && lock.waiterCount === count, 'lock queue tail and count');
      assert(lock.queue === null || lock.queue.count > 0, 'an empty queue is dropped');
      waiterTotal += count;
    }
    assert(waiterTotal === state.waiterTotal, 'waiter total');
    let sessionWaits = 0;
    let ownedTotal = 0;
    let deadlineCount = 0;
    for (const session of state.sessions.values()) {
      const id = session.id;
      assert(state.sessions.get(id) === session && id >= 1 && id <= state.lastSessionId, 'session ids');
      assert(
        session.connected === (session.connectionLostAtMs === -1),
        'lost time set exactly when disconnected',
      );
      let prevOwned: LockState | null = null;
      let ownedCount = 0;
      for (let lock = session.ownedHead; lock !== null; lock = lock.ownerNext) {
        assert(lock.owner === session && lock.ownerPrev === prevOwned, "a session's owned list");
        prevOwned = lock;
        ownedCount++;
      }
      assert(
        session.ownedTail === prevOwned && session.ownedCount === ownedCount,
        'owned list tail and count',
      );
      ownedTotal += ownedCount;
      sessionWaits += session.waits.size;
      let pending = 0;
      // (Most sessions wait for nothing: skip creating an iterator for them.)
      for (const [name, waiter] of session.waits) {
        assert(waiter.session === session && waiter.lock.name === name, 'a wait is filed under its name');
        assert(state.locks.get(name) === waiter.lock, 'a wait is for a live lock');
        for (const request of waiter.requests) {
          pending++;
          assert(
            request.waiter === waiter && request.session === session,
            'a pending request is in its wait',
          );
          assert(request.name === name, 'a pending request is for its wait');
          assert(session.pending.get(request.requestNo) === request, 'a pending request is indexed');
          assert(request.requestNo <= session.requestNoMax, 'requestNoMax bounds pending requests');
          assert(request.scope === SESSION || session.connected, 'connection-scoped waits need a connection');
          assert(
            (request.deadlineMs === noDeadlineMs) === (request.heapIndex === -1),
            'the deadline heap holds it',
          );
          if (request.deadlineMs !== noDeadlineMs) {
            deadlineCount++;
            assert(request.deadlineMs > state.nowMs, 'no overdue wait survives an entry');
          }
        }
      }
      assert(pending === session.pending.size, 'the pending index holds exactly the pending requests');
      const keys = session.answerKeys;
      if (keys !== null) {
        for (let slot = 0; slot < keys.length; slot++) {
          const requestNo = keys[slot] as number;
          if (requestNo === 0 || requestNo <= session.requestNoMax - windowSize) continue;
          const value = session.answerValues[slot];
          assert(requestNo <= session.requestNoMax, 'requestNoMax bounds the answers');
          assert(findAnswer(session, requestNo, windowSize) === value, 'an answer is found in its slot');
          if (typeof value === 'number') {
            const sequence = grantAnswerSequence(value);
            assert(sequence >= 1 && sequence <= state.lastSequence, 'an answered grant is in range');
          } else if (value instanceof AcquireRequest) {
            assert(session.pending.get(requestNo) === value, 'an answer that waits is a pending request');
          } else {
            assert(
              value !== undefined && (value.kind === 'unlocked' || value.kind === 'error'),
              'answer kind',
            );
          }
        }
      }
    }
    assert(sessionWaits === waiterTotal, 'every wait of a session is in its lock queue');
    // Each listed lock names its lister as owner, so equal totals mean every lock is in its owner's list.
    assert(ownedTotal === state.locks.size, "every lock is in its owner's list");
    assert(deadlineCount === state.deadlines.size, 'deadline heap size');
    state.deadlines.check();
  }
}

function lockInfo(lock: LockState): LockInfo {
  const waiters: number[] = [];
  for (let waiter = lock.head; waiter !== null; waiter = waiter.next) waiters.push(waiter.session.id);
  return { name: lock.name, owner: lock.owner.id, sequence: lock.sequence, scope: lock.scope, waiters };
}
