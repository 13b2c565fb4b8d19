// The lock table (src/locks/) as the simulator's replicated state machine, and the checks that watch
// it. Every node wraps its own `LockTable`; all of them report to one `LockHistory`, which keeps the
// committed history as first applied anywhere and checks, entry by entry:
//
//   S2      at most one owner per lock: `assertInvariants()` plus an explicit owner check on every
//           replica after every applied entry, and an ownership model replayed from the effects;
//   S8      per name, grant sequences strictly increase — in the committed history and in each
//           replica's own apply order;
//   S3/S7   no waiter lost: the waits the effects announce (`waiting`) and end (`granted`,
//           `waitEnded`) are exactly the waits the table holds, after every entry;
//   same    every replica applying an index produces the same results and effects, every snapshot
//           taken at an index has the same bytes, and a restored table snapshots back to its input.
//
// A broken check throws `LockViolation`; the cluster reports it with the seed and the tick.

import { assert } from '../../src/assert.ts';
import type {
  Effect,
  Entry as LockEntry,
  LockTableLimits,
  Result,
  SessionId,
} from '../../src/locks/index.ts';
import { decodeEntry, LockTable } from '../../src/locks/index.ts';
import type { Entry, NodeId, Snapshot } from '../../src/raft/types.ts';
import { EntryType } from '../../src/raft/types.ts';
import { hashBytes, hashString, mix } from './hash.ts';
import type { SimMachine } from './state-machine.ts';

export class LockViolation extends Error {
  override readonly name = 'LockViolation';
}

function fail(detail: string): never {
  throw new LockViolation(detail);
}

const chainStart = 0x1f0c4b2d;
/** Snapshot header: applied index, chain. The table's own bytes follow. */
const headerBytes = 8;

/** Limits small enough for a handful of sessions to reach them (the same on every replica). */
export const simLockLimits: Partial<LockTableLimits> = {
  waitersPerLockMax: 4,
  locksAndWaitsPerSessionMax: 6,
  dedupeResultsPerSessionMax: 32,
};

/** One applied entry's outcome, as the workload (the clients) learn it. */
export interface CommittedEntry {
  readonly index: number;
  readonly entry: LockEntry;
  readonly results: readonly Result[];
  readonly effects: readonly Effect[];
}

const key = (session: SessionId, requestNo: number): string => `${session}:${requestNo}`;

/** The committed history, as first applied by any replica, and the model replayed from its effects. */
export class LockHistory {
  /** Highest index applied anywhere; the first application of each index comes in index order. */
  appliedMax = 0;
  /** Results and effects (JSON) of each normal entry, as first applied. */
  private readonly outcomeAt: string[] = [];
  /** Hash of the snapshot bytes taken at each index, as first taken. */
  private readonly snapshotAt = new Map<number, number>();
  /** Model: owner and sequence of every held lock. */
  readonly owners = new Map<string, { session: SessionId; sequence: number }>();
  /** Model: highest sequence ever granted per name. */
  readonly lastSequence = new Map<string, number>();
  /** Model: pending acquires ("session:requestNo" → name), from `waiting` effects until they end. */
  readonly pending = new Map<string, string>();
  /** Model: each lock's queue of waiting sessions, in the order they joined (S7 FIFO). */
  readonly queues = new Map<string, SessionId[]>();
  /** Every acquire that was ever answered or announced `waiting`. */
  readonly everWaited = new Set<string>();
  /** Every acquire that some grant completed: a request is granted at most once (exactly once). */
  private readonly granted = new Set<string>();
  /** Sessions opened (in order) and ended. */
  readonly opened: SessionId[] = [];
  readonly ended = new Set<SessionId>();
  /** Counters for the report. */
  grants = 0;
  waits = 0;
  releases = 0;
  waitsEnded = 0;
  restores = 0;
  private readonly listeners: ((committed: CommittedEntry) => void)[] = [];

  onCommitted(listener: (committed: CommittedEntry) => void): void {
    this.listeners.push(listener);
  }

  get openSessions(): SessionId[] {
    return this.opened.filter((id) => !this.ended.has(id));
  }

  /** Called by a replica for every entry it applies (any type), right after applying it. */
  noteApplied(
    replica: LockTableMachine,
    entry: Entry,
    committed: CommittedEntry | null,
    outcome: string,
  ): void {
    const index = entry.index;
    if (index <= this.appliedMax) {
      const known = this.outcomeAt[index];
      if (known !== undefined && known !== outcome) {
        fail(
          `identical tables: ${replica.id} applied entry ${index} with results/effects ${outcome}, another replica with ${known}`,
        );
      }
      return;
    }
    assert(
      index === this.appliedMax + 1,
      `lock history: first application of ${index} after ${this.appliedMax}`,
    );
    this.appliedMax = index;
    if (committed === null) return;
    this.outcomeAt[index] = outcome;
    this.replay(committed);
    this.compareWithTable(replica.id, replica.table, index);
    for (const listener of this.listeners) listener(committed);
  }

  noteSnapshot(id: NodeId, index: number, bytes: Uint8Array, what: string): void {
    const hash = hashBytes(bytes);
    const known = this.snapshotAt.get(index);
    if (known === undefined) this.snapshotAt.set(index, hash);
    else if (known !== hash) {
      fail(`identical tables: ${id} ${what} at index ${index} differs byte-wise from another replica's`);
    }
  }

  /** Replays one entry's effects (and checks its results) against the model. */
  private replay({ index, entry, results, effects }: CommittedEntry): void {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'granted': {
          this.grants++;
          const owner = this.owners.get(effect.name);
          if (owner !== undefined) {
            fail(
              `S2: entry ${index} grants ${effect.name} to session ${effect.session} (sequence ${effect.sequence}) while session ${owner.session} holds it (sequence ${owner.sequence})`,
            );
          }
          const last = this.lastSequence.get(effect.name) ?? 0;
          if (effect.sequence <= last) {
            fail(
              `S8: entry ${index} grants ${effect.name} with sequence ${effect.sequence}, not above its previous grant's ${last}`,
            );
          }
          const queue = this.queues.get(effect.name);
          if (queue !== undefined) {
            // S7: a grant of a lock with waiters goes to the earliest one, completing all its requests.
            if (queue[0] !== effect.session)
              fail(
                `S7: entry ${index} grants ${effect.name} to session ${effect.session}, but session ${queue[0]} waited first (queue ${queue.join(', ')})`,
              );
            queue.shift();
            if (queue.length === 0) this.queues.delete(effect.name);
            const left = effect.requestNos.reduce(
              (n, r) => n + (this.pending.has(key(effect.session, r)) ? 1 : 0),
              0,
            );
            if (left !== this.pendingFor(effect.session, effect.name))
              fail(
                `S4/S7: entry ${index} grants ${effect.name} to session ${effect.session} without completing all its waiting requests`,
              );
          }
          this.owners.set(effect.name, { session: effect.session, sequence: effect.sequence });
          this.lastSequence.set(effect.name, effect.sequence);
          for (const requestNo of effect.requestNos) {
            const k = key(effect.session, requestNo);
            if (this.granted.has(k)) {
              fail(
                `exactly once: entry ${index} grants request ${requestNo} of session ${effect.session} a second time`,
              );
            }
            this.granted.add(k);
            this.pending.delete(k);
          }
          break;
        }
        case 'released':
        case 'scopeChanged': {
          const owner = this.owners.get(effect.name);
          if (owner === undefined || owner.session !== effect.session || owner.sequence !== effect.sequence) {
            fail(
              `S2: entry ${index} ${effect.kind} ${effect.name} for session ${effect.session} sequence ${effect.sequence}, but the effects say ${owner === undefined ? 'nobody holds it' : `session ${owner.session} holds it with ${owner.sequence}`}`,
            );
          }
          if (effect.kind === 'released') {
            this.releases++;
            this.owners.delete(effect.name);
          }
          break;
        }
        case 'waiting': {
          this.waits++;
          const k = key(effect.session, effect.requestNo);
          if (this.pending.has(k) || this.granted.has(k)) {
            fail(
              `exactly once: entry ${index} queues request ${effect.requestNo} of session ${effect.session} again`,
            );
          }
          if (this.pendingFor(effect.session, effect.name) === 0) {
            const queue = this.queues.get(effect.name) ?? [];
            queue.push(effect.session);
            this.queues.set(effect.name, queue);
          }
          this.pending.set(k, effect.name);
          this.everWaited.add(k);
          break;
        }
        case 'waitEnded': {
          this.waitsEnded++;
          const k = key(effect.session, effect.requestNo);
          if (this.pending.get(k) !== effect.name) {
            fail(
              `S3/S7: entry ${index} ends the wait of request ${effect.requestNo} of session ${effect.session} for ${effect.name}, which was not waiting`,
            );
          }
          this.pending.delete(k);
          if (this.pendingFor(effect.session, effect.name) === 0) {
            const queue = this.queues.get(effect.name)!;
            queue.splice(queue.indexOf(effect.session), 1);
            if (queue.length === 0) this.queues.delete(effect.name);
          }
          break;
        }
        case 'sessionEnded': {
          this.ended.add(effect.session);
          for (const [name, owner] of this.owners) {
            if (owner.session === effect.session)
              fail(
                `S2: session ${effect.session} ended (entry ${index}) still owning ${name} — no release effect`,
              );
          }
          for (const k of this.pending.keys()) {
            if (k.startsWith(`${effect.session}:`))
              fail(
                `S3/S7: session ${effect.session} ended (entry ${index}) with request ${k} still waiting — no waitEnded effect`,
              );
          }
          break;
        }
      }
    }
    // S7: the handoff happens in the same step as the release — a lock with waiters always has an owner.
    for (const [name, queue] of this.queues) {
      if (!this.owners.has(name))
        fail(`S7: after entry ${index}, ${name} is free while sessions ${queue.join(', ')} wait for it`);
    }
    entry.commands.forEach((command, i) => {
      const result = results[i]!;
      if (command.type === 'openSession' && result.kind === 'opened') {
        const previous = this.opened[this.opened.length - 1] ?? 0;
        if (result.session !== previous + 1)
          fail(`session ids: entry ${index} opened session ${result.session} after ${previous}`);
        this.opened.push(result.session);
      }
      if (command.type === 'acquire' && result.kind === 'waiting') {
        const k = key(command.session, command.requestNo);
        if (!this.everWaited.has(k))
          fail(`S3: entry ${index} answers request ${k} 'waiting', but no wait for it was ever announced`);
      }
    });
  }

  private pendingFor(session: SessionId, name: string): number {
    let count = 0;
    const prefix = `${session}:`;
    for (const [k, waitingFor] of this.pending) if (waitingFor === name && k.startsWith(prefix)) count++;
    return count;
  }

  /** The table the first replica holds after `index` must agree with the model, lock by lock and wait by wait. */
  private compareWithTable(id: NodeId, table: LockTable, index: number): void {
    const locks = table.listLocks();
    if (locks.length !== this.owners.size)
      fail(
        `S2: after entry ${index}, ${id}'s table holds ${locks.length} locks, the effects say ${this.owners.size}`,
      );
    for (const lock of locks) {
      const owner = this.owners.get(lock.name);
      if (owner === undefined || owner.session !== lock.owner || owner.sequence !== lock.sequence) {
        fail(
          `S2: after entry ${index}, ${id}'s table has ${lock.name} owned by ${lock.owner}/${lock.sequence}, the effects say ${owner === undefined ? 'free' : `${owner.session}/${owner.sequence}`}`,
        );
      }
    }
    const waits = tableWaits(table);
    for (const [k, name] of waits) {
      if (this.pending.get(k) !== name)
        fail(
          `S3/S7: after entry ${index}, ${id}'s table has request ${k} waiting for ${name} without a waiting effect`,
        );
    }
    for (const [k, name] of this.pending) {
      if (waits.get(k) !== name)
        fail(
          `S3/S7 no waiter lost: after entry ${index}, request ${k} (waiting for ${name}) is gone from ${id}'s table without a granted or waitEnded effect`,
        );
    }
  }

  /** End of run: every replica's table agrees with the model (the model is at `appliedMax`). */
  checkReplicaAgainstModel(replica: LockTableMachine): void {
    assert(replica.index === this.appliedMax, 'compare replicas at the last applied index');
    this.compareWithTable(replica.id, replica.table, replica.index);
  }
}

/** Every pending acquire in a table: "session:requestNo" → name. */
export function tableWaits(table: LockTable): Map<string, string> {
  const waits = new Map<string, string>();
  for (const id of table.sessionIds()) {
    for (const wait of table.getSession(id)!.waits) {
      for (const requestNo of wait.requestNos) waits.set(key(id, requestNo), wait.name);
    }
  }
  return waits;
}

/** One replica: a `LockTable` driven by the committed log, checked after every entry. */
export class LockTableMachine implements SimMachine {
  index = 0;
  chain = chainStart;
  table: LockTable;
  /** Granted effects this replica applied since it last restored, in apply order. */
  readonly grants: { index: number; name: string; session: SessionId; sequence: number }[] = [];
  /** Highest sequence this replica granted (or restored held) per name since its last restore. */
  private readonly lastSequence = new Map<string, number>();

  constructor(
    readonly id: NodeId,
    private readonly history: LockHistory,
    private readonly limits: Partial<LockTableLimits> = simLockLimits,
  ) {
    this.table = new LockTable({ limits });
  }

  apply(entry: Entry): void {
    assert(
      entry.index === this.index + 1,
      `lock machine ${this.id}: applying ${entry.index} after ${this.index}`,
    );
    this.index = entry.index;
    if (entry.type !== EntryType.normal) {
      this.history.noteApplied(this, entry, null, '');
      return;
    }
    const decoded = decodeEntry(entry.data);
    const { results, effects } = this.table.apply(entry.index, decoded);
    const outcome = JSON.stringify([results, effects]);
    this.chain = mix(mix(this.chain, entry.index), hashString(outcome));
    this.checkOwners();
    for (const effect of effects) {
      if (effect.kind !== 'granted') continue;
      const last = this.lastSequence.get(effect.name) ?? 0;
      if (effect.sequence <= last) {
        fail(
          `S8: ${this.id} granted ${effect.name} with sequence ${effect.sequence} at entry ${entry.index}, after already granting it ${last}`,
        );
      }
      this.lastSequence.set(effect.name, effect.sequence);
      this.grants.push({
        index: entry.index,
        name: effect.name,
        session: effect.session,
        sequence: effect.sequence,
      });
    }
    this.history.noteApplied(this, entry, { index: entry.index, entry: decoded, results, effects }, outcome);
  }

  /** S2 on this replica: the table's invariants, and each lock owned by exactly one live session. */
  private checkOwners(): void {
    try {
      this.table.assertInvariants();
    } catch (error) {
      fail(
        `S2: ${this.id}'s table after entry ${this.index}: ${error instanceof Error ? error.message : error}`,
      );
    }
    const ownerOf = new Map<string, SessionId>();
    for (const id of this.table.sessionIds()) {
      for (const lock of this.table.getSession(id)!.locks) {
        const other = ownerOf.get(lock.name);
        if (other !== undefined)
          fail(`S2: ${this.id} after entry ${this.index}: ${lock.name} owned by sessions ${other} and ${id}`);
        ownerOf.set(lock.name, id);
      }
    }
    const locks = this.table.listLocks();
    if (locks.length !== ownerOf.size)
      fail(
        `S2: ${this.id} after entry ${this.index}: ${locks.length} locks but ${ownerOf.size} owned by sessions`,
      );
    for (const lock of locks) {
      if (ownerOf.get(lock.name) !== lock.owner)
        fail(
          `S2: ${this.id} after entry ${this.index}: ${lock.name} lists owner ${lock.owner}, sessions say ${ownerOf.get(lock.name)}`,
        );
    }
  }

  serialize(): Uint8Array {
    const table = this.table.snapshot();
    this.history.noteSnapshot(this.id, this.index, table, 'took a snapshot');
    const bytes = new Uint8Array(headerBytes + table.byteLength);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, this.index);
    view.setUint32(4, this.chain);
    bytes.set(table, headerBytes);
    return bytes;
  }

  restore(snapshot: Snapshot): void {
    this.grants.length = 0;
    this.lastSequence.clear();
    const data = snapshot.data;
    if (data.byteLength === 0) {
      assert(snapshot.meta.index === 0, `lock machine: empty snapshot data at index ${snapshot.meta.index}`);
      this.index = 0;
      this.chain = chainStart;
      this.table = new LockTable({ limits: this.limits });
      return;
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.index = view.getUint32(0);
    assert(
      this.index === snapshot.meta.index,
      `lock machine: snapshot data at ${this.index}, meta ${snapshot.meta.index}`,
    );
    this.chain = view.getUint32(4);
    const bytes = data.subarray(headerBytes);
    this.table = LockTable.restore(bytes, { limits: this.limits });
    this.history.restores++;
    this.history.noteSnapshot(this.id, this.index, bytes, 'restored a snapshot');
    const again = this.table.snapshot();
    if (hashBytes(again) !== hashBytes(bytes) || again.byteLength !== bytes.byteLength)
      fail(`identical tables: ${this.id}'s table restored at ${this.index} snapshots to different bytes`);
    for (const lock of this.table.listLocks()) this.lastSequence.set(lock.name, lock.sequence);
  }
}
