// What the leader knows about one follower's log, and how fast it may feed it (flow control).
//   probe:     we don't know where the logs match; one append at a time, back-tracking on rejects.
//   replicate: logs match up to `match`; appends are pipelined, at most `inflightMax` unacknowledged.
//   snapshot:  the follower is behind our compaction point; we stream it a snapshot in chunks.

import type { Snapshot } from './types.ts';

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** In probe state: an append is outstanding; wait for its answer or the next heartbeat. */
  probeSent = false;
  /** Last index of each unacknowledged append, oldest first (replicate state). */
  private readonly inflight: number[] = [];
  /** Heard from since the last check-quorum round. */
  recentActive = true;
  /** ReadIndex round this follower last echoed. */
  readRound = 0;
  /** The snapshot being streamed and the bytes the follower confirmed so far. */
  snapshot: Snapshot | null = null;
  snapshotOffset = 0;

  constructor(
    next: number,
    readonly inflightMax: number,
  ) {
    this.next = next;
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflight.length >= this.inflightMax;
      case 'snapshot':
        return true;
    }
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      const snapshotIndex = this.snapshot?.meta.index ?? 0;
      this.next = Math.max(this.match + 1, snapshotIndex + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = 'probe';
    this.probeSent = false;
    this.inflight.length = 0;
    this.snapshot = null;
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflight.length = 0;
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.state = 'snapshot';
    this.snapshot = snapshot;
    this.snapshotOffset = 0;
    this.inflight.length = 0;
  }

  /** Records an append just sent whose last entry is `lastIndex`. */
  sentEntries(lastIndex: number, count: number): void {
    if (this.state === 'replicate') {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflight.push(lastIndex);
      }
    } else if (this.state === 'probe') {
      this.probeSent = true;
    }
  }

  /** The follower acknowledged a match up to `index`. Returns false when the answer is stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      this.probeSent = false;
      updated = true;
    }
    if (this.next < index + 1) this.next = index + 1;
    let freed = 0;
    while (freed < this.inflight.length && this.inflight[freed]! <= index) freed++;
    if (freed > 0) this.inflight.splice(0, freed);
    return updated;
  }

  /**
   * The follower refused an append at `rejected`; `matchHint` is where our logs may match. Returns false when
   * the refusal is stale (it answers an append sent before we last moved `next`).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      this.becomeProbe();
      this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }
}
