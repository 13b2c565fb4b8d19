// The in-memory twin of the durable storage, for the simulator. It keeps what a disk would keep —
// hard state, the latest snapshot and the entries after it — and models writes in flight: a write
// becomes durable only when its simulated fsync completes, writes complete in the order they were
// issued (one disk queue), and a crash throws away every write that has not completed yet.
//
// Time is the caller's virtual clock (plain numbers); the storage reads no clock of its own.

import { assert } from '../assert.ts';
import type { Entry, HardState, PersistentState, Snapshot } from '../raft/types.ts';

/** What one Ready asks to make durable, in the Ready's order: snapshot, then entries, then hard state. */
export interface ReadyWrite {
  readonly snapshot: Snapshot | null;
  readonly entries: readonly Entry[];
  readonly hardState: HardState | null;
}

/** A snapshot the application took itself: it replaces the durable one and drops the entries it covers. */
export interface CompactionWrite {
  readonly compactTo: Snapshot;
}

export type StorageWrite = ReadyWrite | CompactionWrite;

export interface PendingWrite {
  readonly id: number;
  /** Virtual time at which the write becomes durable. */
  readonly completeAt: number;
  readonly write: StorageWrite;
}

/** Named bounds: a simulated disk queue never grows silently. */
export const memoryStorageLimits = {
  /** Writes in flight at once; the driver issues at most one Ready write plus a few compactions. */
  pendingWritesMax: 64,
} as const;

export class MemoryStorage {
  private hardState: HardState;
  private snapshot: Snapshot;
  /** Durable entries with index > snapshot.meta.index, contiguous. */
  private entries: Entry[];
  private pending: PendingWrite[] = [];
  private nextWriteId = 1;
  /** Completion time of the newest pending write: a later write can never finish before it. */
  private queueTailAt = 0;

  constructor(initial: PersistentState) {
    this.hardState = { ...initial.hardState };
    this.snapshot = copySnapshot(initial.snapshot);
    this.entries = initial.entries.map(copyEntry);
    assertContiguous(this.snapshot.meta.index, this.entries);
  }

  /**
   * Starts a write that becomes durable at `now + delay`, or later if an earlier write is still in
   * flight (writes complete in order). The parts are copied: what the core does with its objects
   * afterwards cannot change the "disk".
   */
  persist(write: StorageWrite, { now, delay }: { now: number; delay: number }): PendingWrite {
    assert(delay >= 0, `memory storage: negative fsync delay ${delay}`);
    assert(
      this.pending.length < memoryStorageLimits.pendingWritesMax,
      `memory storage: more than ${memoryStorageLimits.pendingWritesMax} writes in flight`,
    );
    const completeAt = Math.max(now + delay, this.queueTailAt);
    this.queueTailAt = completeAt;
    const pending: PendingWrite = { id: this.nextWriteId++, completeAt, write: copyWrite(write) };
    this.pending.push(pending);
    return pending;
  }

  /** Makes durable, in order, every write whose fsync has completed by `now`; returns them. */
  flushUntil(now: number): PendingWrite[] {
    let n = 0;
    while (n < this.pending.length && this.pending[n]!.completeAt <= now) n++;
    if (n === 0) return [];
    const done = this.pending.splice(0, n);
    for (const pending of done) this.applyWrite(pending.write);
    return done;
  }

  /** Whether the write with this id is durable (completed, not lost). */
  isPending(id: number): boolean {
    return this.pending.some((p) => p.id === id);
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /** The process died: writes not yet fsynced are gone, the durable part stays. Returns how many were lost. */
  crash(): number {
    const lost = this.pending.length;
    this.pending = [];
    this.queueTailAt = 0;
    return lost;
  }

  /** What a restarting node reads back: fresh copies of the durable part only. */
  load(): PersistentState {
    return {
      hardState: { ...this.hardState },
      snapshot: copySnapshot(this.snapshot),
      entries: this.entries.map(copyEntry),
    };
  }

  durableHardState(): HardState {
    return this.hardState;
  }

  durableSnapshotIndex(): number {
    return this.snapshot.meta.index;
  }

  durableLastIndex(): number {
    return this.snapshot.meta.index + this.entries.length;
  }

  /**
   * The term of the durable entry at `index` (the snapshot's term at its own index); undefined when
   * the index is past the durable log or compacted into the snapshot.
   */
  durableTermAt(index: number): number | undefined {
    const base = this.snapshot.meta.index;
    if (index === base) return this.snapshot.meta.term;
    if (index < base) return undefined;
    return this.entries[index - base - 1]?.term;
  }

  private applyWrite(write: StorageWrite): void {
    if ('compactTo' in write) {
      this.applyCompaction(write.compactTo);
      return;
    }
    // The Ready rule: a snapshot replaces older state, entries truncate at and after the first new
    // index, then the hard state.
    if (write.snapshot !== null) {
      assert(
        write.snapshot.meta.index >= this.snapshot.meta.index,
        `memory storage: snapshot ${write.snapshot.meta.index} older than durable ${this.snapshot.meta.index}`,
      );
      this.snapshot = write.snapshot;
      this.entries = [];
    }
    if (write.entries.length > 0) {
      const first = write.entries[0]!.index;
      const base = this.snapshot.meta.index;
      assert(first > base, `memory storage: entry ${first} at or below the snapshot ${base}`);
      assert(
        first <= this.durableLastIndex() + 1,
        `memory storage: entry ${first} leaves a gap after ${this.durableLastIndex()}`,
      );
      this.entries.length = first - base - 1;
      for (const entry of write.entries) this.entries.push(entry);
      assertContiguous(base, this.entries);
    }
    if (write.hardState !== null) this.hardState = write.hardState;
  }

  private applyCompaction(snapshot: Snapshot): void {
    const index = snapshot.meta.index;
    if (index <= this.snapshot.meta.index) return; // a newer snapshot already covers it
    assert(
      index <= this.durableLastIndex(),
      `memory storage: compaction to ${index} past the durable log end ${this.durableLastIndex()}`,
    );
    const dropped = index - this.snapshot.meta.index;
    const atIndex = this.entries[dropped - 1]!;
    assert(
      atIndex.term === snapshot.meta.term,
      `memory storage: snapshot ${index} has term ${snapshot.meta.term}, durable entry has ${atIndex.term}`,
    );
    this.entries = this.entries.slice(dropped);
    this.snapshot = snapshot;
  }
}

function assertContiguous(base: number, entries: readonly Entry[]): void {
  for (let k = 0; k < entries.length; k++) {
    assert(
      entries[k]!.index === base + k + 1,
      `memory storage: entries not contiguous at ${entries[k]!.index}`,
    );
  }
}

function copyEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, type: entry.type, data: entry.data.slice() };
}

function copySnapshot(snapshot: Snapshot): Snapshot {
  const { index, term, conf } = snapshot.meta;
  return {
    meta: { index, term, conf: { voters: [...conf.voters], learners: [...conf.learners] } },
    data: snapshot.data.slice(),
  };
}

function copyWrite(write: StorageWrite): StorageWrite {
  if ('compactTo' in write) return { compactTo: copySnapshot(write.compactTo) };
  return {
    snapshot: write.snapshot === null ? null : copySnapshot(write.snapshot),
    entries: write.entries.map(copyEntry),
    hardState: write.hardState === null ? null : { ...write.hardState },
  };
}
