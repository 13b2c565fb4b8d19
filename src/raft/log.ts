// The in-memory Raft log: the entries after the last compaction point, which of them are durable
// (`stableIndex`), committed and applied. The core keeps the whole live log in memory — snapshots and
// compaction bound it — so the hot path never waits on a storage read; the driver owns the disk copy.

import { assert } from '../assert.ts';
import type { Entry, Snapshot } from './types.ts';

export class RaftLog {
  /** Entries with index > compactedIndex, contiguous. */
  private items: Entry[] = [];
  /** Index and term of the last entry dropped by compaction (or covered by the snapshot we restored). */
  private compactedIndex: number;
  private compactedTerm: number;
  /** The latest snapshot we hold; what a follower behind the compaction point is sent. */
  snapshot: Snapshot;
  /** Highest index the driver has made durable. */
  stableIndex: number;
  committed: number;
  /** Highest index the application has applied (acknowledged by advance()). */
  applied: number;

  constructor(snapshot: Snapshot, entries: readonly Entry[], commit: number) {
    const { index, term } = snapshot.meta;
    this.snapshot = snapshot;
    this.compactedIndex = index;
    this.compactedTerm = term;
    for (const entry of entries) {
      assert(
        entry.index === index + this.items.length + 1,
        `log: restored entries not contiguous at ${entry.index}`,
      );
      this.items.push(entry);
    }
    this.stableIndex = this.lastIndex();
    this.committed = Math.min(Math.max(commit, index), this.lastIndex());
    this.applied = index;
  }

  firstIndex(): number {
    return this.compactedIndex + 1;
  }

  lastIndex(): number {
    return this.compactedIndex + this.items.length;
  }

  lastTerm(): number {
    const n = this.items.length;
    return n === 0 ? this.compactedTerm : this.items[n - 1]!.term;
  }

  /** The term of the entry at `index`, or undefined when it was compacted away or does not exist yet. */
  term(index: number): number | undefined {
    if (index === this.compactedIndex) return this.compactedTerm;
    if (index < this.compactedIndex || index > this.lastIndex()) return undefined;
    return this.items[index - this.compactedIndex - 1]!.term;
  }

  entry(index: number): Entry {
    const entry = this.items[index - this.compactedIndex - 1];
    assert(entry !== undefined && entry.index === index, `log: no entry at ${index}`);
    return entry;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Whether a candidate whose log ends at (lastIndex, lastTerm) is at least as up to date as ours (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Entries in [lo, hi), at most `countMax` of them and at most `bytesMax` payload bytes — but always at
   * least one when the range is not empty, so a single huge entry still moves.
   */
  slice(
    lo: number,
    hi: number,
    bytesMax = Number.POSITIVE_INFINITY,
    countMax = Number.POSITIVE_INFINITY,
  ): Entry[] {
    assert(lo > this.compactedIndex, `log: slice from ${lo} is compacted (first ${this.firstIndex()})`);
    assert(hi <= this.lastIndex() + 1, `log: slice to ${hi} is past the end ${this.lastIndex()}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi && out.length < countMax; i++) {
      const entry = this.items[i - this.compactedIndex - 1]!;
      bytes += entry.data.byteLength;
      if (bytes > bytesMax && out.length > 0) break;
      out.push(entry);
    }
    return out;
  }

  /** The leader appends its own new entries. */
  append(entry: Entry): void {
    assert(
      entry.index === this.lastIndex() + 1,
      `log: append at ${entry.index}, expected ${this.lastIndex() + 1}`,
    );
    this.items.push(entry);
  }

  /**
   * A follower takes entries that follow (prevIndex, prevTerm), which the caller has already matched.
   * Entries it already holds are skipped; the first conflicting one truncates our tail. Returns the index of
   * the last entry of the message, and where our tail was cut (0 if it was not).
   */
  appendAfter(prevIndex: number, entries: readonly Entry[]): { lastNew: number; truncatedFrom: number } {
    const lastNew = prevIndex + entries.length;
    let truncatedFrom = 0;
    for (let k = 0; k < entries.length; k++) {
      const entry = entries[k]!;
      assert(entry.index === prevIndex + k + 1, `log: incoming entries not contiguous at ${entry.index}`);
      if (entry.index <= this.compactedIndex) continue;
      const ourTerm = this.term(entry.index);
      if (ourTerm === entry.term) continue;
      if (ourTerm !== undefined) {
        this.truncateFrom(entry.index);
        truncatedFrom = entry.index;
      }
      for (let j = k; j < entries.length; j++) this.items.push(entries[j]!);
      break;
    }
    return { lastNew, truncatedFrom };
  }

  private truncateFrom(index: number): void {
    assert(
      index > this.committed,
      `log: refusing to truncate committed entry ${index} (commit ${this.committed})`,
    );
    this.items.length = index - this.compactedIndex - 1;
    if (this.stableIndex >= index) this.stableIndex = index - 1;
  }

  /**
   * Fast back-tracking: the largest index ≤ `index` whose term is ≤ `term`. Everything after it in our log has
   * a greater term and so cannot match an entry of term `term` in the other log.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.compactedIndex) {
      const t = this.term(i)!;
      if (t <= term) return i;
      i--;
    }
    return i;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), `log: commit ${index} past last index ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  /** Marks entries up to `index` durable, unless the entry there changed since it was handed out. */
  stableTo(index: number, term: number): void {
    if (index > this.stableIndex && this.term(index) === term) this.stableIndex = index;
  }

  /** Drops entries ≤ index (they must be applied and covered by a snapshot). */
  compact(index: number): void {
    if (index <= this.compactedIndex) return;
    assert(index <= this.applied, `log: compacting ${index} past applied ${this.applied}`);
    assert(
      index <= this.snapshot.meta.index,
      `log: compacting ${index} past snapshot ${this.snapshot.meta.index}`,
    );
    const term = this.term(index)!;
    this.items = this.items.slice(index - this.compactedIndex);
    this.compactedIndex = index;
    this.compactedTerm = term;
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  restore(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    assert(index > this.committed, `log: restoring snapshot ${index} at or below commit ${this.committed}`);
    this.snapshot = snapshot;
    this.items = [];
    this.compactedIndex = index;
    this.compactedTerm = term;
    this.committed = index;
    this.stableIndex = index;
  }

  /** Entries in (after, upTo] whose type is `type`, for the "unapplied membership change" check. */
  hasTypeBetween(after: number, upTo: number, type: number): boolean {
    for (let i = Math.max(after + 1, this.firstIndex()); i <= upTo; i++) {
      if (this.entry(i).type === type) return true;
    }
    return false;
  }
}
