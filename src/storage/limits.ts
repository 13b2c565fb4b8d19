// Named bounds for the LevelDB storage. Kept here rather than in src/limits.ts, which another
// module owns; relations between them are asserted at load time below.

import { assert } from '../assert.ts';

export const storageLimits = {
  /**
   * Snapshots are cut into chunks of this size, one LevelDB value each. LevelDB copies a value
   * whole through its memtable and write-ahead log, so values of hundreds of MB would stall
   * compaction and double peak memory; 1 MiB values keep every write and read incremental.
   */
  snapshotChunkBytes: 1024 * 1024,
  /** Largest snapshot we write or accept on load (the chunk number is a u32, the size a JS number). */
  snapshotBytesMax: 4 * 1024 * 1024 * 1024,
  /**
   * Group commit stops adding calls to one LevelDB batch once it holds this many bytes, so one
   * fsync never carries an unbounded write. A single call larger than this still goes alone in one
   * batch: its atomicity matters more than the bound.
   */
  batchBytesMax: 64 * 1024 * 1024,
  /**
   * A commit-only hard state that found the disk idle is written (unsynced) at the latest this long
   * after it was handed over, when no other batch took it along first. Losing it costs nothing but a
   * lower commit index after a crash (see `needsSync` in level-storage.ts).
   */
  commitFlushDelayMs: 50,
  /**
   * Batches the sync log holds reach LevelDB (unsynced) this long after they were written, many per
   * LevelDB call, or at once when this many bytes wait: LevelDB's cost is per call more than per byte.
   */
  laggingFlushMs: 1000,
  laggingBytesMax: 1024 * 1024,
  /**
   * …or this many ops: handing LevelDB a batch costs the main thread about 0.8 µs per op (the binding
   * copies each key and value; see `writeOps`), so a bounded count keeps each hand-over well under a
   * millisecond rather than a stall.
   */
  laggingOpsMax: 512,
  /**
   * `persistInline` writes a sync-log record on the calling thread only up to this size: a follower
   * catching up takes appends of megabytes, whose write would hold the event loop for milliseconds.
   */
  inlineRecordBytesMax: 256 * 1024,
} as const;

assert(storageLimits.snapshotChunkBytes > 0, 'storage limits: chunk size must be positive');
assert(
  storageLimits.snapshotBytesMax / storageLimits.snapshotChunkBytes < 2 ** 32,
  'storage limits: chunk numbers must fit in the u32 of the chunk key',
);
assert(
  storageLimits.batchBytesMax >= storageLimits.snapshotChunkBytes,
  'storage limits: a batch must hold at least one snapshot chunk',
);
