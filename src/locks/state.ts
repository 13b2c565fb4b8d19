// The lock table's records. Internal to src/locks: the table mutates them, the snapshot writes and
// rebuilds them, nothing else sees them.
//
// Iteration order is part of the replicated state: closing a session releases its locks in
// `owned` order, which decides who gets which sequence. So every Map here is iterated only in its
// insertion order, and the snapshot stores and restores exactly that order. `pending` is the one
// Map that is never iterated (lookups only), so its order does not matter.

import { DeadlineHeap, type DeadlineItem } from './deadline-heap.ts';
import type { Grants } from './permissions.ts';
import type { ErrorResult, UnlockedResult } from './types.ts';
import { SessionLockScope } from './types.ts';

/** No deadline: the request waits until granted, cancelled or its session ends. */
export const noDeadlineMs = -1;
/** `connectionLostAtMs` while connected. */
export const connectedAtMs = -1;

const noAnswers: (DedupeValue | undefined)[] = [];

export class SessionState {
  epoch = 0;
  connected = true;
  connectionLostAtMs = connectedAtMs;
  /**
   * Owned locks in the order they were granted: an intrusive list through LockState.ownerPrev/Next,
   * cheaper than a Map on the hot path (ownership by name is `locks.get(name).owner === session`).
   */
  ownedHead: LockState | null = null;
  ownedTail: LockState | null = null;
  ownedCount = 0;
  // Most sessions never wait, so these two Maps are made on first use: at 100,000 sessions that saves
  // 200,000 Maps of heap, and their allocation when a snapshot is restored.
  private waitsMap: Map<string, Waiter> | null = null;
  private pendingMap: Map<number, AcquireRequest> | null = null;
  /**
   * Answers for retried requests, for request numbers in (requestNoMax − window, requestNoMax]; see
   * answers.ts. `answerKeys` is null until the first answer, so idle sessions pay nothing for it.
   */
  answerKeys: number[] | null = null;
  answerValues: (DedupeValue | undefined)[] = noAnswers;
  /** The highest request number this session has used; it places the dedupe window. */
  requestNoMax = 0;

  constructor(
    readonly id: number,
    readonly principal: string,
    readonly reconnectionWindowMs: number,
    /** What the session may do (S12, S15); null: everything. Fixed when the session opens. */
    readonly grants: Grants | null = null,
  ) {}

  /** This session's place in lock queues by name, in the order it started waiting. */
  get waits(): ReadonlyMap<string, Waiter> {
    return this.waitsMap ?? noWaits;
  }
  mutableWaits(): Map<string, Waiter> {
    if (this.waitsMap === null) this.waitsMap = new Map();
    return this.waitsMap;
  }

  /** Pending acquire requests by request number (also found once their answer has left the window). */
  get pending(): ReadonlyMap<number, AcquireRequest> {
    return this.pendingMap ?? noPending;
  }
  mutablePending(): Map<number, AcquireRequest> {
    if (this.pendingMap === null) this.pendingMap = new Map();
    return this.pendingMap;
  }
}

const noWaits: ReadonlyMap<string, Waiter> = new Map();
const noPending: ReadonlyMap<number, AcquireRequest> = new Map();

/** Appends `lock` to its new owner's list (grant order). */
export function linkOwned(session: SessionState, lock: LockState): void {
  lock.ownerPrev = session.ownedTail;
  lock.ownerNext = null;
  if (session.ownedTail === null) session.ownedHead = lock;
  else session.ownedTail.ownerNext = lock;
  session.ownedTail = lock;
  session.ownedCount++;
}

export function unlinkOwned(session: SessionState, lock: LockState): void {
  if (lock.ownerPrev === null) session.ownedHead = lock.ownerNext;
  else lock.ownerPrev.ownerNext = lock.ownerNext;
  if (lock.ownerNext === null) session.ownedTail = lock.ownerPrev;
  else lock.ownerNext.ownerPrev = lock.ownerPrev;
  lock.ownerPrev = null;
  lock.ownerNext = null;
  session.ownedCount--;
}

/** The session's locks in grant order, as an array (safe to release while iterating). */
export function ownedLocks(session: SessionState): LockState[] {
  const locks: LockState[] = [];
  for (let lock = session.ownedHead; lock !== null; lock = lock.ownerNext) locks.push(lock);
  return locks;
}

/** A lock's queue of waiting sessions, earliest first (S7): a doubly linked list of Waiters. */
export class WaitQueue {
  tail: Waiter;
  count = 1;

  constructor(public head: Waiter) {
    this.tail = head;
  }
}

export class LockState {
  /**
   * Its waiters; null while none waits. Most locks never have a waiter: one field instead of three is
   * 16 MB of heap less at 1,000,000 locks (W5).
   */
  queue: WaitQueue | null = null;
  /** Neighbours in the owner's list of locks (grant order). */
  ownerPrev: LockState | null = null;
  ownerNext: LockState | null = null;
  /** Scratch for the snapshot writer (this lock's place in the locks list); not replicated state. */
  position = 0;

  constructor(
    readonly name: string,
    public owner: SessionState,
    public sequence: number,
    public scope: SessionLockScope,
  ) {}

  get head(): Waiter | null {
    return this.queue === null ? null : this.queue.head;
  }
  get tail(): Waiter | null {
    return this.queue === null ? null : this.queue.tail;
  }
  get waiterCount(): number {
    return this.queue === null ? 0 : this.queue.count;
  }
}

/** Appends `waiter` to the end of `lock`'s queue. */
export function appendWaiter(lock: LockState, waiter: Waiter): void {
  waiter.next = null;
  const queue = lock.queue;
  if (queue === null) {
    waiter.prev = null;
    lock.queue = new WaitQueue(waiter);
    return;
  }
  waiter.prev = queue.tail;
  queue.tail.next = waiter;
  queue.tail = waiter;
  queue.count++;
}

/** Takes `waiter` out of `lock`'s queue; the queue goes with its last waiter. */
export function unlinkWaiter(lock: LockState, waiter: Waiter): void {
  const queue = lock.queue as WaitQueue;
  if (queue.count === 1) lock.queue = null;
  else {
    if (waiter.prev === null) queue.head = waiter.next as Waiter;
    else waiter.prev.next = waiter.next;
    if (waiter.next === null) queue.tail = waiter.prev as Waiter;
    else waiter.next.prev = waiter.prev;
    queue.count--;
  }
  waiter.prev = null;
  waiter.next = null;
}

/** One session's wait for one lock: the group of its pending acquire requests for that name (S4). */
export class Waiter {
  readonly requests: AcquireRequest[] = [];
  prev: Waiter | null = null;
  next: Waiter | null = null;

  constructor(
    readonly session: SessionState,
    readonly lock: LockState,
  ) {}
}

/** One pending acquire request. It exists only while it waits; its outcome is kept as an answer. */
export class AcquireRequest implements DeadlineItem {
  /** The group it waits in; null once granted or withdrawn. */
  waiter: Waiter | null = null;
  heapIndex = -1;

  constructor(
    readonly session: SessionState,
    readonly requestNo: number,
    readonly name: string,
    readonly scope: SessionLockScope,
    readonly deadlineMs: number,
  ) {}

  get sessionId(): number {
    return this.session.id;
  }
}

/**
 * What a retried request is answered with:
 * - a number: an acquire that was granted, as `grantAnswer(sequence, scope)` — a plain number, so the
 *   common case (an immediate grant) allocates nothing and keeps nothing alive;
 * - an AcquireRequest: an acquire still waiting;
 * - a fixed result: an unlock's answer, or the error an acquire ended with (timeout, cancel, limits…).
 */
export type DedupeValue = number | AcquireRequest | UnlockedResult | ErrorResult;

export function grantAnswer(sequence: number, scope: SessionLockScope): number {
  return sequence * 2 + (scope === SessionLockScope.UNLOCK_ON_CONNECTION_LOSS ? 1 : 0);
}
export function grantAnswerSequence(answer: number): number {
  return Math.floor(answer / 2);
}
export function grantAnswerScope(answer: number): SessionLockScope {
  return answer % 2 === 1
    ? SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
    : SessionLockScope.UNLOCK_ON_SESSION_LOSS;
}

/** Everything the table replicates; the snapshot is exactly this. */
export class TableState {
  appliedIndex = 0;
  /** The latest leader time seen; never goes back even if a new leader's clock is behind. */
  nowMs = 0;
  lastSequence = 0;
  lastSessionId = 0;
  readonly sessions = new Map<number, SessionState>();
  readonly locks = new Map<string, LockState>();
  /** Derived from pending requests that have a deadline; rebuilt on restore. */
  readonly deadlines = new DeadlineHeap<AcquireRequest>();
  /** Derived: waiters over all locks. */
  waiterTotal = 0;
  /**
   * Cluster members' contexts (their addresses, opaque here): set by the node as membership changes
   * apply, kept only so that snapshots carry them (format version 3).
   */
  readonly members = new Map<string, string>();
}
