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
import { serverLimits } from './limits.ts';

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
    table.forEachSessionConnection((id, epoch, connected, lostAtMs, reconnectionWindowMs) => {
      this.sessions.set(id, { epoch, connected, lostAtMs: lostAtMs ?? -1, reconnectionWindowMs });
    });
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
  /** Connections one follower's list may hold (default: a gateway's clientConnectionsMax). */
  readonly peerHeldMax?: number;
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
  /** What each follower's gateway holds, from its liveness reports. */
  private readonly peerHeld: PeerHeldConnections;
  /** Sessions looked at by checks so far (for tests: a check costs what is due). */
  evaluations = 0;

  constructor(private readonly options: LivenessOptions) {
    assert(options.connectionTimeoutMs > 0 && options.retryMs > 0, 'liveness: timeouts must be positive');
    this.heldRecheckMs = Math.max(1, Math.min(options.retryMs, Math.floor(options.connectionTimeoutMs / 4)));
    this.peerHeld = new PeerHeldConnections(options.peerHeldMax ?? serverLimits.clientConnectionsMax);
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
    this.peerHeld.clear();
  }

  /**
   * A follower's liveness report arrived at `nowMs` (see "liveness reports as deltas" below): its list
   * of held connections is updated, and all of them count as seen now. False: a delta that does not
   * build on what this leader has; the follower must send its full list.
   */
  report(from: string, report: Parameters<PeerHeldConnections['apply']>[1], nowMs: number): boolean {
    if (this.leaderSinceMs < 0) return false;
    return this.peerHeld.apply(from, report, nowMs, (id, atMs) => {
      const seen = this.lastSeenMs.get(id);
      if (seen === undefined || seen < atMs) this.lastSeenMs.set(id, atMs);
    });
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
      // Last-seen times count only while connected; a disconnected session's would be dead weight.
      if (!record.connected) this.lastSeenMs.delete(id);
      const proposedAt = this.proposedAtMs.get(id);
      if (proposedAt !== undefined && nowMs - proposedAt < retryMs) {
        this.schedule(id, proposedAt + retryMs);
        continue;
      }
      const dueMs = record.connected
        ? Math.max(this.lastSeenMs.get(id) ?? 0, this.peerHeld.seenMs(id, record.epoch), this.leaderSinceMs) +
          connectionTimeoutMs
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

// ---------------------------------------------------------------- liveness reports as deltas
//
// A follower's gateway tells the leader every tick which session connections it holds (DESIGN.md). At
// thousands of connections per gateway, listing every one every tick costs the follower, the wire and
// above all the leader (a map lookup and a touch per session per follower per tick). So the lists are
// kept on both sides and only the changes travel: a report is either a full list (`base` 0) or the
// connections added and removed since report `base` of the same stream. The leader keeps what each
// follower holds and counts every connection in it as seen when a report of that follower is applied —
// what a full list every tick said, without its cost. C6 is unchanged: a connection is seen exactly when
// a report listing it (or, now, a report of a list still holding it) arrives, and a connection removed
// from a list was last seen at the report before its removal.
//
// A delta that does not build on what the leader has (a report was lost, a leader changed, the follower
// restarted: each run of a node is its own stream) is refused and answered `resync`: its connections
// count as unseen until the follower's next full list arrives, one tick later. A leader that does not
// say `deltas` in its acks (an older version) gets full lists only.

/** One report's held-connection part, as the reporter builds it. */
export interface HeldReport {
  /** 0: `sessions` is the full list; otherwise the report this delta builds on. */
  readonly base: number;
  readonly stream: number;
  /** Full list, or the (session, epoch) pairs added since `base`. */
  readonly sessions: [number, number][];
  /** Delta only: pairs no longer held. */
  readonly removed: [number, number][];
}

/** The follower's side: what the leader holds of our list, and the next report's changes. */
export class HeldReporter {
  private leader: string | null = null;
  /** The leader acked a report with `deltas`: it takes deltas. */
  private deltas = false;
  private needFull = true;
  /** The list as the leader has it once it applied every report sent so far. */
  private readonly sent = new Map<SessionId, number>();
  private lastNo = 0;
  private fullNo = 0;

  constructor(readonly stream: number) {}

  /** Whether a report is worth sending for held connections (some held now, or some to remove). */
  hasSomething(heldCount: number): boolean {
    return heldCount > 0 || this.sent.size > 0;
  }

  /** The held-connection part of report `reportNo` to `leader`, given what the gateway holds now. */
  next(leader: string, reportNo: number, held: readonly [number, number][]): HeldReport {
    assert(reportNo > this.lastNo, 'liveness: report numbers grow');
    if (leader !== this.leader) {
      this.leader = leader;
      this.deltas = false;
      this.needFull = true;
    }
    const base = this.lastNo;
    this.lastNo = reportNo;
    if (!this.deltas || this.needFull) {
      this.needFull = false;
      this.fullNo = reportNo;
      this.sent.clear();
      for (const [id, epoch] of held) this.sent.set(id, epoch);
      return { base: 0, stream: this.stream, sessions: [...held], removed: [] };
    }
    const added: [number, number][] = [];
    for (const pair of held) {
      if (this.sent.get(pair[0]) === pair[1]) continue;
      added.push(pair);
      this.sent.set(pair[0], pair[1]);
    }
    const removed: [number, number][] = [];
    if (this.sent.size > held.length) {
      const now = new Set<number>();
      for (const [id] of held) now.add(id);
      for (const [id, epoch] of this.sent) {
        if (now.has(id)) continue;
        removed.push([id, epoch]);
        this.sent.delete(id);
      }
    }
    return { base, stream: this.stream, sessions: added, removed };
  }

  /** The report could not be handed to the transport: the leader may miss it, start over. */
  notSent(): void {
    this.needFull = true;
  }

  /** The leader acked report `reportNo`; `deltas`: it takes deltas from now on. */
  acked(from: string, deltas: boolean): void {
    if (from === this.leader && deltas) this.deltas = true;
  }

  /** The leader refused delta `reportNo`: send a full list, unless one went out after it already. */
  resync(from: string, reportNo: number): void {
    if (from === this.leader && reportNo > this.fullNo) this.needFull = true;
  }
}

interface PeerList {
  stream: number;
  reportNo: number;
  /** Arrival time of the latest report applied: when every connection in `held` was last seen. */
  seenMs: number;
  readonly held: Map<SessionId, number>;
}

/** The leader's side: what each follower's gateway holds, from its full lists and deltas. */
export class PeerHeldConnections {
  private readonly byPeer = new Map<string, PeerList>();

  constructor(private readonly heldMax: number) {}

  clear(): void {
    this.byPeer.clear();
  }

  /**
   * Applies a report from `from` arriving at `nowMs`. `lastSeen(id, atMs)` hears of each connection
   * dropped from the list, with the time it was last seen. Returns false for a delta that does not follow
   * what we have (or would exceed the bound): nothing changed, the follower must send a full list.
   */
  apply(
    from: string,
    report: {
      readonly reportNo: number;
      readonly base: number;
      readonly stream: number;
      readonly sessions: readonly (readonly [number, number])[];
      readonly removed: readonly (readonly [number, number])[];
    },
    nowMs: number,
    lastSeen: (id: SessionId, atMs: number) => void,
  ): boolean {
    const list = this.byPeer.get(from);
    if (report.base === 0) {
      if (report.sessions.length > this.heldMax) return false;
      const held = new Map<SessionId, number>();
      for (const [id, epoch] of report.sessions) held.set(id, epoch);
      if (list !== undefined)
        for (const [id, epoch] of list.held) if (held.get(id) !== epoch) lastSeen(id, list.seenMs);
      this.byPeer.set(from, { stream: report.stream, reportNo: report.reportNo, seenMs: nowMs, held });
      return true;
    }
    if (list === undefined || list.stream !== report.stream || list.reportNo !== report.base) return false;
    if (list.held.size + report.sessions.length > this.heldMax) return false;
    for (const [id, epoch] of report.removed) {
      if (list.held.get(id) !== epoch) continue;
      list.held.delete(id);
      lastSeen(id, list.seenMs);
    }
    for (const [id, epoch] of report.sessions) {
      const previous = list.held.get(id);
      if (previous !== undefined && previous !== epoch) lastSeen(id, list.seenMs);
      list.held.set(id, epoch);
    }
    list.reportNo = report.reportNo;
    list.seenMs = nowMs;
    return true;
  }

  /** The latest time a follower's list held (`id`, `epoch`); -1 when none does. */
  seenMs(id: SessionId, epoch: number): number {
    let seen = -1;
    for (const list of this.byPeer.values()) {
      if (list.held.get(id) === epoch && list.seenMs > seen) seen = list.seenMs;
    }
    return seen;
  }
}
