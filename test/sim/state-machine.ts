// The simulator's replicated state machine: a hash chain over the applied normal entries. Two
// replicas agree iff they applied the same commands in the same order, and the whole state fits in
// a few bytes — plus a window of recent fingerprints so snapshots span several InstallSnapshot chunks.

import { assert } from '../../src/assert.ts';
import type { Entry, Snapshot } from '../../src/raft/types.ts';
import { EntryType } from '../../src/raft/types.ts';
import { hashBytes, mix } from './hash.ts';

/** Fingerprints of the latest commands carried in a snapshot (only to give it some bulk). */
const recentCommandsMax = 24;
const chainStart = 0x2545f491;
const headerBytes = 16;

/**
 * What the simulator needs of a node's replicated state machine. The cluster applies committed
 * entries in order (noop and membership entries too: they only move `index`), serializes it for
 * application snapshots and restores it from the disk's or a leader's snapshot (an empty one at
 * index 0 is the initial state). The checkers compare `chain` across replicas at each index, so it
 * must be a digest of the state (or the history) that a restore reproduces.
 */
export interface SimMachine {
  /** Log index of the last applied entry (of any type). */
  readonly index: number;
  /** 32-bit digest of the replica after `index`: equal on every replica at one index. */
  readonly chain: number;
  apply(entry: Entry): void;
  serialize(): Uint8Array;
  restore(snapshot: Snapshot): void;
}

export class HashChainMachine implements SimMachine {
  /** Log index of the last applied entry (of any type). */
  index = 0;
  /** Hash over every applied command's fingerprint, in order. */
  chain = chainStart;
  /** Commands (normal entries) applied. */
  commands = 0;
  private recent: number[] = [];

  /** Applies the next committed entry; noop and membership entries only move the index. */
  apply(entry: Entry): void {
    assert(entry.index === this.index + 1, `state machine: applying ${entry.index} after ${this.index}`);
    this.index = entry.index;
    if (entry.type !== EntryType.normal) return;
    const fingerprint = hashBytes(entry.data);
    this.chain = mix(mix(this.chain, entry.index), fingerprint);
    this.commands++;
    this.recent.push(fingerprint);
    if (this.recent.length > recentCommandsMax) this.recent.shift();
  }

  serialize(): Uint8Array {
    const bytes = new Uint8Array(headerBytes + 4 * this.recent.length);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, this.index);
    view.setUint32(4, this.chain);
    view.setUint32(8, this.commands);
    view.setUint32(12, this.recent.length);
    for (let k = 0; k < this.recent.length; k++) view.setUint32(headerBytes + 4 * k, this.recent[k]!);
    return bytes;
  }

  /** Replaces the state with a snapshot's; an empty snapshot (first boot, or a joining node) is the initial state. */
  restore(snapshot: Snapshot): void {
    const data = snapshot.data;
    if (data.byteLength === 0) {
      assert(snapshot.meta.index === 0, `state machine: empty snapshot data at index ${snapshot.meta.index}`);
      this.index = 0;
      this.chain = chainStart;
      this.commands = 0;
      this.recent = [];
      return;
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const count = view.getUint32(12);
    assert(data.byteLength === headerBytes + 4 * count, 'state machine: snapshot of the wrong length');
    this.index = view.getUint32(0);
    assert(
      this.index === snapshot.meta.index,
      `state machine: snapshot data is at ${this.index}, its meta says ${snapshot.meta.index}`,
    );
    this.chain = view.getUint32(4);
    this.commands = view.getUint32(8);
    this.recent = [];
    for (let k = 0; k < count; k++) this.recent.push(view.getUint32(headerBytes + 4 * k));
  }
}
