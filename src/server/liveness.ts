// Session liveness on the leader (DESIGN.md "Sessions across a cluster", SPEC C6, S11).
//
// `SessionDirectory` mirrors, from the applied log, the little the leader needs per session (epoch,
// connected, when the connection was lost, the reconnection window), so a check does not walk the lock
// table's records. `LivenessClock` holds the leader's in-memory last-seen times and decides which
// `connectionLost` / `expireSession` commands to propose. A new leader starts every session's clock at
// the moment it became leader (C6): nothing is released before a full bound has passed on its watch.
// Stale decisions are harmless: both commands name the connection epoch, and the table ignores a
// command about an older connection.
//
// A check costs what is due, not what exists: each session sits in a deadline heap at the earliest time
// it could need a decision. A touch only moves that time later, so it costs nothing until the session
// comes up; a session whose record changed (opened, reconnected, lost) is looked at on the next check.
// A new leader looks at every session once.

import { assert } from '../assert.ts';
import { DeadlineHeap, type DeadlineItem } from '../locks/deadline-heap.ts';
import type { Command, Effect, LockTable, Result, SessionId } from '../locks/index.ts';

/** Changed sessions remembered between checks; past this the next check looks at every session. */
const changedSessionsMax = 65_536;

export interface SessionRecord {
  epoch: number;
  connected: boolean;
  /** Leader time (entry time) of the connectionLost that disconnected it; -1 while connected. */
  lostAtMs: number;
  readonly reconnectionWindowMs: number;
}

export class SessionDirectory {
  readonly sessions = new Map<SessionId, SessionRecord>();
  /** Sessions whose record changed since `takeChanges()`; null: too many to list, look at all of them. */
  private changed: Set<SessionId> | null = null;

  /** The sessions changed since the last call, or null when every session must be looked at. */
  takeChanges(): Set<SessionId> | null {
    const changed = this.changed;
    this.changed = new Set();
    return changed;
  }

  private noteChange(id: SessionId): void {
    if (this.changed === null) return;
    if (this.changed.size >= changedSessionsMax) this.changed = null;
    else this.changed.add(id);
  }

  /** Rebuilds the mirror from a table (start-up, snapshot install). */
  rebuild(table: LockTable): void {
    this.changed = null;
    this.sessions.clear();
    for (const id of table.sessionIds()) {
      const info = table.getSession(id);
      if (info === null) continue;
      this.sessions.set(id, {
        epoch: info.connectionEpoch,
        connected: info.connected,
        lostAtMs: info.connectionLostAtMs ?? -1,
        reconnectionWindowMs: info.reconnectionWindowMs,
      });
    }
  }

  /** Follows one applied command and its result. */
  onCommand(command: Command, result: Result, entryTimeMs: number): void {
    switch (command.type) {
      case 'openSession':
        if (result.kind === 'opened') {
          this.noteChange(result.session);
          this.sessions.set(result.session, {
            epoch: 0,
            connected: true,
            lostAtMs: -1,
            reconnectionWindowMs: command.reconnectionWindowMs,
          });
        }
        return;
      case 'reconnect': {
        const record = this.sessions.get(command.session);
        if (record !== undefined && result.kind === 'done') {
          this.noteChange(command.session);
          record.epoch = command.epoch;
          record.connected = true;
          record.lostAtMs = -1;
        }
        return;
      }
      case 'connectionLost': {
        const record = this.sessions.get(command.session);
        if (record !== undefined && result.kind === 'done') {
          this.noteChange(command.session);
          record.connected = false;
          record.lostAtMs = entryTimeMs;
        }
        return;
      }
      default:
        return;
    }
  }

  onEffect(effect: Effect): void {
    if (effect.kind === 'sessionEnded' && this.sessions.delete(effect.session))
      this.noteChange(effect.session);
  }

  get(id: SessionId): SessionRecord | undefined {
    return this.sessions.get(id);
  }
}

export interface LivenessOptions {
  readonly connectionTimeoutMs: number;
  readonly retryMs: number;
  readonly proposalsPerCheckMax: number;
}

/** A session's place in the clock's heap: the earliest time it may need a decision. */
interface DueItem extends DeadlineItem {
  readonly requestNo: 0;
}

export class LivenessClock {
  /** When this node last became leader; -1 while it is not the leader. */
  private leaderSinceMs = -1;
  private readonly lastSeenMs = new Map<SessionId, number>();
  /** Liveness commands proposed and not yet seen applied, by session, with when they were proposed. */
  private readonly proposedAtMs = new Map<SessionId, number>();
  private due = new DeadlineHeap<DueItem>();
  private readonly dueBySession = new Map<SessionId, DueItem>();
  /** Set by a new leadership: the next check looks at every session. */
  private lookAtAll = false;
  /** How often a silent session held open by this node's gateway is looked at again. */
  private readonly heldRecheckMs: number;
  /** Sessions looked at by checks so far (for tests: a check costs what is due). */
  evaluations = 0;

  constructor(private readonly options: LivenessOptions) {
    assert(options.connectionTimeoutMs > 0 && options.retryMs > 0, 'liveness: timeouts must be positive');
    this.heldRecheckMs = Math.max(1, Math.min(options.retryMs, Math.floor(options.connectionTimeoutMs / 4)));
  }

  becameLeader(nowMs: number): void {
    this.reset();
    this.leaderSinceMs = nowMs;
    this.lookAtAll = true;
  }

  steppedDown(): void {
    this.reset();
    this.leaderSinceMs = -1;
  }

  private reset(): void {
    this.lastSeenMs.clear();
    this.proposedAtMs.clear();
    this.due = new DeadlineHeap<DueItem>();
    this.dueBySession.clear();
  }

  /** The session's client was heard from (a frame on its connection, or a gateway's report). */
  touch(id: SessionId, nowMs: number): void {
    if (this.leaderSinceMs >= 0) this.lastSeenMs.set(id, nowMs);
  }

  forget(id: SessionId): void {
    this.lastSeenMs.delete(id);
    this.proposedAtMs.delete(id);
    this.unschedule(id);
  }

  /** A liveness decision about `id` got applied (or failed): the next check may decide again. */
  settled(id: SessionId): void {
    this.proposedAtMs.delete(id);
    if (this.leaderSinceMs >= 0) this.schedule(id, 0);
  }

  /** Sessions waiting in the heap; for tests and invariant checks. */
  get scheduled(): number {
    return this.due.size;
  }

  /**
   * The commands the leader should propose now. `heldHere(id, epoch)` says whether this node's gateway
   * holds that connection open (its own idle watchdog then covers the connection-loss bound).
   */
  check(
    nowMs: number,
    directory: SessionDirectory,
    heldHere: (id: SessionId, epoch: number) => boolean,
  ): Command[] {
    const changes = directory.takeChanges();
    if (this.leaderSinceMs < 0) return [];
    if (this.lookAtAll || changes === null) {
      this.lookAtAll = false;
      for (const id of directory.sessions.keys()) this.schedule(id, 0);
    } else {
      for (const id of changes) this.schedule(id, 0);
    }
    const { connectionTimeoutMs, retryMs, proposalsPerCheckMax } = this.options;
    const commands: Command[] = [];
    for (;;) {
      if (commands.length >= proposalsPerCheckMax) break;
      const top = this.due.peek();
      if (top === undefined || top.deadlineMs > nowMs) break;
      const id = top.sessionId;
      this.unschedule(id);
      this.evaluations++;
      const record = directory.get(id);
      if (record === undefined) continue;
      const proposedAt = this.proposedAtMs.get(id);
      if (proposedAt !== undefined && nowMs - proposedAt < retryMs) {
        this.schedule(id, proposedAt + retryMs);
        continue;
      }
      const dueMs = record.connected
        ? Math.max(this.lastSeenMs.get(id) ?? 0, this.leaderSinceMs) + connectionTimeoutMs
        : Math.max(record.lostAtMs, this.leaderSinceMs) + record.reconnectionWindowMs;
      if (dueMs > nowMs) {
        this.schedule(id, dueMs);
        continue;
      }
      if (record.connected && heldHere(id, record.epoch)) {
        this.schedule(id, nowMs + this.heldRecheckMs);
        continue;
      }
      commands.push(
        record.connected
          ? { type: 'connectionLost', session: id, epoch: record.epoch }
          : { type: 'expireSession', session: id, epoch: record.epoch },
      );
      this.proposedAtMs.set(id, nowMs);
      this.schedule(id, nowMs + retryMs);
    }
    return commands;
  }

  /** Puts `id` in the heap at `atMs`, or earlier if it is already due sooner. */
  private schedule(id: SessionId, atMs: number): void {
    const current = this.dueBySession.get(id);
    if (current !== undefined) {
      if (current.deadlineMs <= atMs) return;
      this.due.remove(current);
    }
    const item: DueItem = { deadlineMs: atMs, sessionId: id, requestNo: 0, heapIndex: -1 };
    this.due.push(item);
    this.dueBySession.set(id, item);
  }

  private unschedule(id: SessionId): void {
    const current = this.dueBySession.get(id);
    if (current === undefined) return;
    this.due.remove(current);
    this.dueBySession.delete(id);
  }
}
