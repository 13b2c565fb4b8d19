// Session liveness on the leader (DESIGN.md "Sessions across a cluster", SPEC C6, S11).
//
// `SessionDirectory` mirrors, from the applied log, the little the leader needs per session (epoch,
// connected, when the connection was lost, the reconnection window), so a check does not walk the lock
// table's records. `LivenessClock` holds the leader's in-memory last-seen times and decides which
// `connectionLost` / `expireSession` commands to propose. A new leader starts every session's clock at
// the moment it became leader (C6): nothing is released before a full bound has passed on its watch.
// Stale decisions are harmless: both commands name the connection epoch, and the table ignores a
// command about an older connection.

import type { Command, Effect, LockTable, Result, SessionId } from '../locks/index.ts';

export interface SessionRecord {
  epoch: number;
  connected: boolean;
  /** Leader time (entry time) of the connectionLost that disconnected it; -1 while connected. */
  lostAtMs: number;
  readonly reconnectionWindowMs: number;
}

export class SessionDirectory {
  readonly sessions = new Map<SessionId, SessionRecord>();

  /** Rebuilds the mirror from a table (start-up, snapshot install). */
  rebuild(table: LockTable): void {
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
          record.epoch = command.epoch;
          record.connected = true;
          record.lostAtMs = -1;
        }
        return;
      }
      case 'connectionLost': {
        const record = this.sessions.get(command.session);
        if (record !== undefined && result.kind === 'done') {
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
    if (effect.kind === 'sessionEnded') this.sessions.delete(effect.session);
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

export class LivenessClock {
  /** When this node last became leader; -1 while it is not the leader. */
  private leaderSinceMs = -1;
  private readonly lastSeenMs = new Map<SessionId, number>();
  /** Liveness commands proposed and not yet seen applied, by session, with when they were proposed. */
  private readonly proposedAtMs = new Map<SessionId, number>();

  constructor(private readonly options: LivenessOptions) {}

  becameLeader(nowMs: number): void {
    this.leaderSinceMs = nowMs;
    this.lastSeenMs.clear();
    this.proposedAtMs.clear();
  }

  steppedDown(): void {
    this.leaderSinceMs = -1;
    this.lastSeenMs.clear();
    this.proposedAtMs.clear();
  }

  /** The session's client was heard from (a frame on its connection, or a gateway's report). */
  touch(id: SessionId, nowMs: number): void {
    if (this.leaderSinceMs >= 0) this.lastSeenMs.set(id, nowMs);
  }

  forget(id: SessionId): void {
    this.lastSeenMs.delete(id);
    this.proposedAtMs.delete(id);
  }

  /** A liveness decision about `id` got applied (or failed): the next check may decide again. */
  settled(id: SessionId): void {
    this.proposedAtMs.delete(id);
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
    if (this.leaderSinceMs < 0) return [];
    const commands: Command[] = [];
    for (const [id, record] of directory.sessions) {
      if (commands.length >= this.options.proposalsPerCheckMax) break;
      const proposedAt = this.proposedAtMs.get(id);
      if (proposedAt !== undefined && nowMs - proposedAt < this.options.retryMs) continue;
      if (record.connected) {
        if (heldHere(id, record.epoch)) continue;
        const silentSinceMs = Math.max(this.lastSeenMs.get(id) ?? 0, this.leaderSinceMs);
        if (nowMs - silentSinceMs < this.options.connectionTimeoutMs) continue;
        commands.push({ type: 'connectionLost', session: id, epoch: record.epoch });
      } else {
        const lostSinceMs = Math.max(record.lostAtMs, this.leaderSinceMs);
        if (nowMs - lostSinceMs < record.reconnectionWindowMs) continue;
        commands.push({ type: 'expireSession', session: id, epoch: record.epoch });
      }
      this.proposedAtMs.set(id, nowMs);
    }
    return commands;
  }
}
