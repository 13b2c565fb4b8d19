// Durable Raft storage on LevelDB: the log, the hard state and the latest snapshot of one node.
//
// The driver hands us step 2 of the Ready contract (src/raft/types.ts) through `persist()`; every call
// becomes part of one atomic batch, durable when the call resolves. Calls that arrive while a batch is being
// written are coalesced into the next batch (group commit), so a busy node pays one synced write per batch of
// Readies, never one per entry. One exception, etcd's `MustSync` rule: a call that only moves the commit
// index (no entries, no snapshot, same term and vote) needs no fsync of its own — see `needsSync` below
// for why that is safe — and when no write is under way it resolves at once: its record rides along with
// the next batch, or is written unsynced `commitFlushDelayMs` later, whichever comes first. Reads happen
// only in `load()`, at start: the core keeps the live log in memory, so nothing on the hot path waits for
// a disk read.
//
// The synced write is not LevelDB's: a batch is written as one record of the sync log (wal.ts), a
// preallocated file overwritten in place with O_DSYNC — cheaper than an fsync of LevelDB's growing log —
// and handed to LevelDB unsynced moments later, many batches per call (`writeBatch`). `open` writes the
// log's records into LevelDB again after a crash or power loss took what LevelDB had not yet made durable.
//
// Key layout: see keys.ts. Record format and checksum: see records.ts.

import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Level } from 'level';
import { Packr } from 'msgpackr';
import { assert } from '../assert.ts';
import type { ConfState, Entry, EntryType, HardState, PersistentState, Snapshot } from '../raft/types.ts';
import {
  StorageClosedError,
  StorageCorruptionError,
  StorageUnsupportedFormatError,
  StorageWriteFailedError,
} from './errors.ts';
import {
  chunkKey,
  chunkKeyParts,
  describeKey,
  entryKey,
  entryKeyIndex,
  formatKey,
  hardStateKey,
  KeyPrefix,
  prefixRange,
  snapshotMetaKey,
} from './keys.ts';
import { storageLimits } from './limits.ts';
import { decodeRecord, encodeRecord } from './records.ts';
import { WalFile, walBytesDefault, walFileName } from './wal.ts';

/** Bumped when the key layout or a record's payload shape changes incompatibly. */
export const storageLayoutVersion = 1;

export interface LevelStorageOptions {
  /**
   * fsync every batch before its promise resolves. Default true, and it must stay true wherever C3
   * (durability across `kill -9`) matters; turning it off is for throwaway benchmarks only.
   */
  readonly sync?: boolean;
  /**
   * Size of the sync log (wal.ts) created in the directory when it has none; an existing log keeps its
   * size. Default `walBytesDefault` (8 MiB). Without `sync` there is no sync log.
   */
  readonly walBytes?: number;
}

/** Step 2 of the Ready contract; a `Ready` can be passed as it is. */
export interface PersistRequest {
  /** A snapshot received from the leader: it replaces the stored snapshot and the whole stored log. */
  readonly snapshot: Snapshot | null;
  /** New entries; anything stored at or after the first one's index is replaced. */
  readonly entries: readonly Entry[];
  readonly hardState: HardState | null;
}

export interface LevelStorageStats {
  /** Batches written; each is one synced write (a sync-log record, or a synced LevelDB batch) when `sync` is on, unless it only moved the commit index. */
  readonly batchesWritten: number;
  readonly syncsWritten: number;
  /** persist calls that only moved the commit index, and so needed no fsync of their own. */
  readonly commitOnlyWritten: number;
  /** persist / saveSnapshot / compact calls made durable. */
  readonly callsWritten: number;
  readonly bytesWritten: number;
  /** Synced batches made durable by a sync-log record rather than an fsync of LevelDB. */
  readonly walRecordsWritten: number;
  /** Sync-log records written into LevelDB again when the directory was opened. */
  readonly walRecordsReplayed: number;
  /** Calls waiting for a batch (not counting the batch in flight). */
  readonly callsQueued: number;
  readonly bytesQueued: number;
}

/** Where the stored log stands once every queued write has landed. */
export interface LevelStorageInfo {
  readonly snapshotIndex: number;
  readonly snapshotTerm: number;
  /** Lowest entry index on disk; `lastIndex + 1` when no entry is stored. */
  readonly firstEntryIndex: number;
  /** Last log index, counting the snapshot: `snapshotIndex` when no entry follows it. */
  readonly lastIndex: number;
  readonly entriesStored: number;
  readonly hardState: HardState;
}

/** The stored shape of the snapshot meta record: `SnapshotMeta` plus how to find and check its data. */
interface StoredSnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly conf: ConfState;
  readonly totalBytes: number;
  readonly chunkCount: number;
  /** CRC-32 of the whole data: catches a chunk that is missing, though each chunk checks out alone. */
  readonly dataCrc: number;
}

type BatchOp =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array };

/**
 * A LevelDB batch through the store's implementor API (`_batch`, abstract-level's documented contract for
 * implementations), past the public `batch()`. That one clones every op and runs its key and value checks,
 * encodings, hooks and events: about 5 µs per op on the main thread here, 2–3 ms for one 512-op hand-over,
 * against 0.4 ms this way. The ops are this file's own, Uint8Array keys and values; the binding would skip
 * a malformed op silently (and store a value of another type as empty), so the shape is checked here.
 */
async function writeOps(
  db: Level<Uint8Array, Uint8Array>,
  ops: readonly BatchOp[],
  sync: boolean,
): Promise<void> {
  assert(db.status === 'open', `storage: batch write to a ${db.status} LevelDB`);
  for (const op of ops) {
    assert(op.key instanceof Uint8Array, 'storage: a batch op without a Uint8Array key');
    assert(
      op.type === 'del' || (op.type === 'put' && op.value instanceof Uint8Array),
      'storage: a batch op that is neither a del nor a put of a Uint8Array',
    );
  }
  if (ops.length === 0) return;
  await (db as unknown as LevelImplementor)._batch(ops, { sync });
}

interface LevelImplementor {
  _batch(ops: readonly BatchOp[], options: { readonly sync: boolean }): Promise<void>;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

interface PendingBatch {
  readonly ops: BatchOp[];
  bytes: number;
  calls: number;
  /** Some call in it needs an fsync (see `needsSync`); otherwise the batch is written without one. */
  sync: boolean;
  readonly waiters: Waiter[];
}

interface Projection {
  hardState: HardState;
  snapshotIndex: number;
  snapshotTerm: number;
  snapshotChunkCount: number;
  /** Stored entries are exactly [firstEntryIndex, lastIndex]; empty when first > last. */
  firstEntryIndex: number;
  lastIndex: number;
}

type Phase = 'unloaded' | 'empty' | 'ready';

const entryTypes: ReadonlySet<number> = new Set([0, 1, 2]);

export class LevelStorage {
  private readonly db: Level<Uint8Array, Uint8Array>;
  private readonly sync: boolean;
  // Plain MessagePack maps, no record extension: what we write must decode without shared state,
  // by this process after a restart or by a future version.
  private readonly packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
  private phase: Phase = 'unloaded';
  /**
   * The stored state as it will be once every queued batch is written. Writes are planned against
   * it synchronously, at call time, which is what lets later calls join a batch without reading disk.
   */
  private projection: Projection | null = null;
  private readonly queue: PendingBatch[] = [];
  private inFlight: PendingBatch | null = null;
  private draining = false;
  private idleWaiters: (() => void)[] = [];
  private failure: StorageWriteFailedError | null = null;
  /** A commit-only hard state not yet handed to LevelDB (see `persist`); null when none waits. */
  private lazyHardState: HardState | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  private closing = false;
  private counters = {
    batchesWritten: 0,
    syncsWritten: 0,
    callsWritten: 0,
    bytesWritten: 0,
    commitOnlyWritten: 0,
    walRecordsWritten: 0,
    walRecordsReplayed: 0,
  };
  /** The sync log; null without `sync`. */
  private wal: WalFile | null;
  /** Ops of batches the sync log holds, not yet handed to LevelDB (see `writeBatch`). */
  private lagging: BatchOp[] = [];
  private laggingBytes = 0;
  private laggingTimer: NodeJS.Timeout | null = null;
  private laggingWrite: Promise<void> | null = null;

  private constructor(db: Level<Uint8Array, Uint8Array>, sync: boolean, wal: WalFile | null) {
    this.db = db;
    this.sync = sync;
    this.wal = wal;
  }

  /** Opens (creating if missing) the LevelDB directory. LevelDB's lock file keeps a second process out. */
  static async open(dir: string, options: LevelStorageOptions = {}): Promise<LevelStorage> {
    const db = new Level<Uint8Array, Uint8Array>(dir, {
      keyEncoding: 'view',
      valueEncoding: 'view',
      createIfMissing: true,
    });
    await db.open();
    assert(
      typeof (db as unknown as Partial<LevelImplementor>)._batch === 'function',
      'storage: this classic-level has no _batch (see writeOps)',
    );
    const sync = options.sync ?? true;
    if (!sync) return new LevelStorage(db, false, null);
    let opened: Awaited<ReturnType<typeof WalFile.open>>;
    try {
      opened = await WalFile.open(join(dir, walFileName), options.walBytes ?? walBytesDefault);
    } catch (error) {
      await db.close();
      throw error;
    }
    const { wal, records } = opened;
    const storage = new LevelStorage(db, true, wal);
    if (records.length > 0) {
      // What the last run acknowledged may be missing from LevelDB (a power loss takes its unsynced
      // tail): write it again, in order, synced, before this run's first record overwrites it.
      try {
        await writeOps(db, records.flat(), true);
        // Durable in LevelDB now: end that pass on disk, so it is not replayed at every open.
        wal.clear();
      } catch (error) {
        wal.close();
        await db.close();
        throw error;
      }
      storage.counters.walRecordsReplayed = records.length;
    }
    return storage;
  }

  /**
   * Crash recovery: the hard state, the latest snapshot and the contiguous entries after it, every
   * record verified. Returns null for a directory that was never bootstrapped; call `bootstrap()` then.
   * Throws `StorageCorruptionError` or `StorageUnsupportedFormatError` rather than return a state that
   * differs from what was acknowledged.
   */
  async load(): Promise<PersistentState | null> {
    assert(this.phase === 'unloaded', `storage: load() called in phase ${this.phase}`);
    this.checkOpen();
    const formatRecord = await this.db.get(formatKey);
    if (formatRecord === undefined) {
      for await (const key of this.db.keys({ limit: 1 })) {
        throw new StorageCorruptionError({
          record: describeKey(key),
          key,
          detail: 'data present without a format record',
        });
      }
      this.phase = 'empty';
      return null;
    }
    const format = this.unpackRecord(formatKey, formatRecord);
    const layoutVersion = isRecord(format) ? format.layoutVersion : undefined;
    if (layoutVersion !== storageLayoutVersion) {
      throw new StorageUnsupportedFormatError(
        `storage: layout version ${String(layoutVersion)} in ${this.db.location}; this build reads ${storageLayoutVersion}`,
      );
    }

    const hardState = parseHardState(
      hardStateKey,
      this.unpackRecord(hardStateKey, await this.require(hardStateKey)),
    );
    const meta = parseSnapshotMeta(
      snapshotMetaKey,
      this.unpackRecord(snapshotMetaKey, await this.require(snapshotMetaKey)),
    );
    const snapshotData = await this.loadSnapshotData(meta);
    const { entries, firstEntryIndex } = await this.loadEntries(meta);
    await this.rejectUnknownKeys();

    const lastIndex = entries.length === 0 ? meta.index : entries[entries.length - 1]!.index;
    if (hardState.commit > lastIndex) {
      throw new StorageCorruptionError({
        record: 'hard state',
        key: hardStateKey,
        detail: `commit ${hardState.commit} is past the last stored index ${lastIndex}: acknowledged entries are missing`,
      });
    }
    this.projection = {
      hardState,
      snapshotIndex: meta.index,
      snapshotTerm: meta.term,
      snapshotChunkCount: meta.chunkCount,
      firstEntryIndex,
      lastIndex,
    };
    this.phase = 'ready';
    return {
      hardState,
      snapshot: { meta: { index: meta.index, term: meta.term, conf: meta.conf }, data: snapshotData },
      entries,
    };
  }

  /**
   * First boot of an empty directory: writes the format record, an empty hard state and the initial
   * membership as the snapshot at index 0, durably, and returns that state.
   */
  async bootstrap(conf: ConfState): Promise<PersistentState> {
    assert(this.phase === 'empty', `storage: bootstrap() needs an empty directory (phase ${this.phase})`);
    // No members at all: a node that joins an existing cluster (C5); the leader sends it the membership.
    assert(
      conf.voters.length > 0 || conf.learners.length === 0,
      'storage: bootstrap needs at least one voter, or no members at all',
    );
    const snapshot: Snapshot = { meta: { index: 0, term: 0, conf }, data: new Uint8Array(0) };
    return this.writeBootstrap(snapshot, { term: 0, vote: null, commit: 0 });
  }

  /**
   * First boot of an empty directory from a backup (`raftlock restore`, src/backup/restore.ts): the format
   * record, `snapshot` as the first log position and a hard state that commits it (term = the snapshot's
   * term, no vote), in one atomic synced batch — a crash leaves the directory empty or restored, never
   * bootstrapped without the table.
   */
  async bootstrapFromSnapshot(snapshot: Snapshot): Promise<PersistentState> {
    assert(this.phase === 'empty', `storage: bootstrap needs an empty directory (phase ${this.phase})`);
    const { index, term, conf } = snapshot.meta;
    assert(
      index > 0 && term > 0,
      `storage: a restored snapshot needs index and term > 0 (${index}, ${term})`,
    );
    assert(conf.voters.length > 0, 'storage: bootstrap needs at least one voter');
    return this.writeBootstrap(snapshot, { term, vote: null, commit: index });
  }

  /** Both first boots: the format record, `snapshot` as the first log position and `hardState`, in one batch. */
  private async writeBootstrap(snapshot: Snapshot, hardState: HardState): Promise<PersistentState> {
    const { index } = snapshot.meta;
    this.projection = {
      hardState: { term: 0, vote: null, commit: 0 },
      snapshotIndex: 0,
      snapshotTerm: 0,
      snapshotChunkCount: 0,
      firstEntryIndex: 1,
      lastIndex: 0,
    };
    this.phase = 'ready';
    const ops: BatchOp[] = [this.put(formatKey, this.packr.pack({ layoutVersion: storageLayoutVersion }))];
    this.planSnapshot(ops, snapshot);
    this.projection.firstEntryIndex = index + 1;
    this.projection.lastIndex = index;
    this.checkHardState(hardState);
    ops.push(this.put(hardStateKey, this.packHardState(hardState)));
    this.projection.hardState = hardState;
    await this.enqueue(ops);
    return { hardState, snapshot, entries: [] };
  }

  /**
   * Step 2 of the Ready contract as one atomic, synced batch: the snapshot (replacing the stored one and
   * the whole stored log, as the core's `RaftLog.restore` does), then the entries (replacing anything at
   * or after the first one's index), then the hard state. Resolves once all of it is durable; calls
   * resolve in call order. Never call it for entries the core has not handed out.
   */
  persist(request: PersistRequest): Promise<void> {
    const written = this.write(request, false);
    assert(written !== null, 'storage: persist() finished a write on the calling thread');
    return written;
  }

  /**
   * `persist()`, done on this thread when that is possible: nothing queued or under way, the batch needs
   * a sync, its ops come to at most `inlineRecordBytesMax` and it fits the sync log as one record. Then the
   * record is written with a synchronous `O_DSYNC` write and this returns null — durable on return, with
   * no hand-off to libuv's thread pool and back (two thread wake-ups per write). Otherwise it returns
   * `persist()`'s promise.
   */
  persistInline(request: PersistRequest): Promise<void> | null {
    return this.write(request, true);
  }

  private write(request: PersistRequest, inline: boolean): Promise<void> | null {
    const failed = this.refuse();
    if (failed) return failed;
    const projection = this.ready();
    const sync = needsSync(request, projection.hardState);
    const ops: BatchOp[] = [];
    if (request.snapshot !== null) {
      const { index } = request.snapshot.meta;
      this.planDeleteEntries(ops, projection.firstEntryIndex, projection.lastIndex);
      this.planSnapshot(ops, request.snapshot);
      projection.firstEntryIndex = index + 1;
      projection.lastIndex = index;
    }
    if (request.entries.length > 0) this.planEntries(ops, request.entries);
    if (request.hardState !== null) {
      this.checkHardState(request.hardState);
      ops.push(this.put(hardStateKey, this.packHardState(request.hardState)));
      projection.hardState = request.hardState;
    }
    if (!sync) {
      this.counters.commitOnlyWritten += 1;
      if (this.deferHardState(request.hardState!)) return inline ? null : Promise.resolve();
    }
    const wal = this.wal;
    if (inline && sync && wal !== null && !this.draining && this.queue.length === 0)
      return this.writeNow(wal, this.withLazyHardState(ops));
    // The write starts before this returns: the node applies committed entries while it is on disk.
    return this.enqueue(ops, sync, true);
  }

  /** `writeBatch` for one synced call on an idle disk, on this thread: null once durable. */
  private writeNow(wal: WalFile, ops: readonly BatchOp[]): Promise<void> | null {
    const bytes = opsBytes(ops);
    // Large (a follower catching up): the pool writes it, as `persist()` would. Checked before the log
    // plans a record, which takes the record's place in the log for good.
    if (bytes > storageLimits.inlineRecordBytesMax) return this.enqueue(ops, true, true);
    const record = wal.record(ops);
    // Too large for what is left of the log: the queued path syncs LevelDB and starts a new pass.
    if (record === null) return this.enqueue(ops, true, true);
    try {
      wal.writeSync(record);
    } catch (cause) {
      this.failure = this.writeFailure(cause);
      throw this.failure;
    }
    this.defer(ops, bytes);
    this.counters.walRecordsWritten += 1;
    this.countWritten(1, bytes, true);
    return null;
  }

  /**
   * `persist()` for a call that can complete at once: one that only moves the commit index (see
   * `needsSync`) while no write is queued or under way. Then it is recorded, to be written with the next
   * batch, and this returns true — the call is complete, as if `persist()` had resolved. Otherwise it
   * does nothing and returns false: use `persist()`.
   */
  persistWithoutWaiting(request: PersistRequest): boolean {
    if (this.failure !== null || this.closing || this.draining || this.queue.length > 0) return false;
    const projection = this.ready();
    if (needsSync(request, projection.hardState) || request.hardState === null) return false;
    this.checkHardState(request.hardState);
    projection.hardState = request.hardState;
    this.counters.commitOnlyWritten += 1;
    return this.deferHardState(request.hardState);
  }

  /** Keeps a commit-only hard state for the next batch, if the disk is idle; false when it is not. */
  private deferHardState(hardState: HardState): boolean {
    if (this.draining || this.queue.length > 0) return false;
    this.lazyHardState = hardState;
    this.lazyTimer ??= setTimeout(() => this.flushLazyHardState(), storageLimits.commitFlushDelayMs);
    this.lazyTimer.unref();
    return true;
  }

  private flushLazyHardState(): void {
    if (this.lazyTimer !== null) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    if (this.lazyHardState === null || this.failure !== null) return;
    void this.enqueue([], false).catch(() => undefined);
  }

  /**
   * Stores a snapshot the application took at an applied index, replacing the previous one. With
   * `compact: true` the entries it covers are dropped in the same atomic batch (what the simulator's
   * MemoryStorage does with `compactTo`); without, the log is left alone and `compact(index)` can drop
   * them later, for a node that keeps a tail of entries for slow followers.
   */
  saveSnapshot(snapshot: Snapshot, options: { readonly compact?: boolean } = {}): Promise<void> {
    const failed = this.refuse();
    if (failed) return failed;
    const projection = this.ready();
    const { index } = snapshot.meta;
    assert(
      index <= projection.hardState.commit,
      `storage: snapshot at ${index} is past the durable commit ${projection.hardState.commit}`,
    );
    const ops: BatchOp[] = [];
    this.planSnapshot(ops, snapshot);
    if (options.compact === true) this.planCompaction(ops, index);
    return this.enqueue(ops);
  }

  /** Drops stored entries ≤ index. They must be covered by the stored snapshot. */
  compact(index: number): Promise<void> {
    const failed = this.refuse();
    if (failed) return failed;
    this.ready();
    const ops: BatchOp[] = [];
    this.planCompaction(ops, index);
    return this.enqueue(ops);
  }

  info(): LevelStorageInfo {
    const projection = this.ready();
    return {
      snapshotIndex: projection.snapshotIndex,
      snapshotTerm: projection.snapshotTerm,
      firstEntryIndex: projection.firstEntryIndex,
      lastIndex: projection.lastIndex,
      entriesStored: Math.max(0, projection.lastIndex - projection.firstEntryIndex + 1),
      hardState: projection.hardState,
    };
  }

  stats(): LevelStorageStats {
    let callsQueued = 0;
    let bytesQueued = 0;
    for (const batch of this.queue) {
      callsQueued += batch.calls;
      bytesQueued += batch.bytes;
    }
    return { ...this.counters, callsQueued, bytesQueued };
  }

  /** Waits for queued writes to land, then closes LevelDB. Later calls reject with `StorageClosedError`. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.flushLazyHardState();
    this.closing = true;
    if (this.draining) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const wal = this.wal;
    this.wal = null;
    if (wal !== null) {
      try {
        // A clean close leaves nothing to replay: LevelDB synced, then the log's pass ended on disk.
        if (this.laggingTimer !== null) clearTimeout(this.laggingTimer);
        this.laggingTimer = null;
        if (wal.recordsInPass > 0 && this.failure === null && this.projection !== null) {
          const hardState = this.put(hardStateKey, this.packHardState(this.projection.hardState));
          await this.flushLagging([hardState], true);
          wal.clear();
        } else if (this.failure === null) {
          await this.flushLagging([], false);
        }
      } finally {
        wal.close();
      }
    }
    await this.db.close();
  }

  // ---- planning writes (synchronous, against the projection) ----

  private planEntries(ops: BatchOp[], entries: readonly Entry[]): void {
    const projection = this.projection!;
    const first = entries[0]!.index;
    const lastNew = first + entries.length - 1;
    assert(
      first > projection.snapshotIndex,
      `storage: entry ${first} is covered by snapshot ${projection.snapshotIndex}`,
    );
    assert(
      first <= projection.lastIndex + 1,
      `storage: entry ${first} leaves a gap after ${projection.lastIndex}`,
    );
    if (first <= projection.lastIndex) {
      // A new leader overwrote our tail; the Raft core never truncates committed entries.
      assert(
        first > projection.hardState.commit,
        `storage: truncating at ${first} would drop committed entries (commit ${projection.hardState.commit})`,
      );
      this.planDeleteEntries(ops, lastNew + 1, projection.lastIndex);
    }
    let previousTerm = 0;
    for (let k = 0; k < entries.length; k++) {
      const entry = entries[k]!;
      assert(
        entry.index === first + k,
        `storage: entries not contiguous at ${entry.index} (expected ${first + k})`,
      );
      assert(
        Number.isSafeInteger(entry.term) && entry.term >= 1,
        `storage: entry ${entry.index} has term ${entry.term}`,
      );
      assert(
        entry.term >= previousTerm,
        `storage: entry ${entry.index} term ${entry.term} after term ${previousTerm}`,
      );
      assert(entryTypes.has(entry.type), `storage: entry ${entry.index} has type ${entry.type}`);
      assert(entry.data instanceof Uint8Array, `storage: entry ${entry.index} data is not a Uint8Array`);
      previousTerm = entry.term;
      const key = entryKey(entry.index);
      ops.push(this.put(key, this.packr.pack([entry.index, entry.term, entry.type, entry.data])));
    }
    if (projection.firstEntryIndex > projection.lastIndex) projection.firstEntryIndex = first;
    projection.lastIndex = lastNew;
  }

  private planCompaction(ops: BatchOp[], index: number): void {
    const projection = this.projection!;
    assert(Number.isSafeInteger(index) && index >= 0, `storage: compact(${index}) needs an index`);
    assert(
      index <= projection.snapshotIndex,
      `storage: compacting to ${index} would drop entries past the snapshot at ${projection.snapshotIndex}`,
    );
    this.planDeleteEntries(ops, projection.firstEntryIndex, Math.min(index, projection.lastIndex));
    projection.firstEntryIndex = Math.max(projection.firstEntryIndex, index + 1);
  }

  private planDeleteEntries(ops: BatchOp[], from: number, to: number): void {
    for (let index = from; index <= to; index++) ops.push({ type: 'del', key: entryKey(index) });
  }

  /** Replaces the stored snapshot: new chunks and meta in, the previous snapshot's chunks out. */
  private planSnapshot(ops: BatchOp[], snapshot: Snapshot): void {
    const projection = this.projection!;
    const { meta, data } = snapshot;
    assert(
      meta.index === 0
        ? projection.snapshotIndex === 0 && projection.lastIndex === 0
        : meta.index > projection.snapshotIndex,
      `storage: snapshot at ${meta.index} does not follow the stored snapshot at ${projection.snapshotIndex}`,
    );
    assert(Number.isSafeInteger(meta.term) && meta.term >= 0, `storage: snapshot term ${meta.term}`);
    assert(data instanceof Uint8Array, 'storage: snapshot data is not a Uint8Array');
    assert(
      data.byteLength <= storageLimits.snapshotBytesMax,
      `storage: snapshot of ${data.byteLength} bytes exceeds snapshotBytesMax`,
    );
    for (let chunk = 0; chunk < projection.snapshotChunkCount; chunk++) {
      ops.push({ type: 'del', key: chunkKey(projection.snapshotIndex, chunk) });
    }
    const chunkBytes = storageLimits.snapshotChunkBytes;
    const chunkCount = Math.ceil(data.byteLength / chunkBytes);
    for (let chunk = 0; chunk < chunkCount; chunk++) {
      const piece = data.subarray(chunk * chunkBytes, Math.min(data.byteLength, (chunk + 1) * chunkBytes));
      ops.push(this.put(chunkKey(meta.index, chunk), piece));
    }
    const stored: StoredSnapshotMeta = {
      index: meta.index,
      term: meta.term,
      conf: { voters: [...meta.conf.voters], learners: [...meta.conf.learners] },
      totalBytes: data.byteLength,
      chunkCount,
      dataCrc: crc32(data),
    };
    ops.push(this.put(snapshotMetaKey, this.packr.pack(stored)));
    projection.snapshotIndex = meta.index;
    projection.snapshotTerm = meta.term;
    projection.snapshotChunkCount = chunkCount;
  }

  private checkHardState(next: HardState): void {
    const previous = this.projection!.hardState;
    assert(
      Number.isSafeInteger(next.term) && next.term >= previous.term,
      `storage: term ${next.term} after ${previous.term}`,
    );
    // Two different votes in one term is exactly the double vote that breaks election safety.
    assert(
      next.term > previous.term || previous.vote === null || next.vote === previous.vote,
      `storage: vote changed from ${previous.vote} to ${next.vote} within term ${next.term}`,
    );
    assert(
      Number.isSafeInteger(next.commit) && next.commit >= 0 && next.commit <= this.projection!.lastIndex,
      `storage: commit ${next.commit} past the last index ${this.projection!.lastIndex}`,
    );
  }

  private packHardState(hardState: HardState): Uint8Array {
    return this.packr.pack({ term: hardState.term, vote: hardState.vote, commit: hardState.commit });
  }

  private put(key: Uint8Array, payload: Uint8Array): BatchOp {
    return { type: 'put', key, value: encodeRecord(key, payload) };
  }

  // ---- group commit ----

  private refuse(): Promise<never> | null {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new StorageClosedError('storage: closed'));
    return null;
  }

  private ready(): Projection {
    assert(
      this.phase === 'ready' && this.projection !== null,
      `storage: used before load()/bootstrap() (${this.phase})`,
    );
    return this.projection;
  }

  private checkOpen(): void {
    if (this.closing) throw new StorageClosedError('storage: closed');
  }

  /** `callOps` behind the commit-only hard state waiting for the next batch, if one waits (see persist). */
  private withLazyHardState(callOps: readonly BatchOp[]): readonly BatchOp[] {
    if (this.lazyHardState === null) return callOps;
    // First in the call, so a hard state the call writes itself (newer) wins within the batch.
    const ops = [this.put(hardStateKey, this.packHardState(this.lazyHardState)), ...callOps];
    this.lazyHardState = null;
    if (this.lazyTimer !== null) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    return ops;
  }

  /**
   * Queues one call's operations. They always go into a single batch (a call is atomic); calls join the
   * newest waiting batch until it holds `batchBytesMax`.
   */
  private enqueue(callOps: readonly BatchOp[], sync = true, startNow = false): Promise<void> {
    const ops = this.withLazyHardState(callOps);
    const bytes = opsBytes(ops);
    if (ops.length === 0) {
      // Nothing to write, but "resolves when durable" must still mean "after everything before it".
      const tail = this.queue.at(-1) ?? this.inFlight;
      if (tail === null) return Promise.resolve();
      return new Promise((resolve, reject) => tail.waiters.push({ resolve, reject }));
    }
    let batch = this.queue.at(-1);
    if (batch === undefined || batch.bytes + bytes > storageLimits.batchBytesMax) {
      batch = { ops: [], bytes: 0, calls: 0, sync: false, waiters: [] };
      this.queue.push(batch);
    }
    for (const op of ops) batch.ops.push(op);
    batch.bytes += bytes;
    batch.calls += 1;
    if (sync) batch.sync = true;
    const target = batch;
    const done = new Promise<void>((resolve, reject) => target.waiters.push({ resolve, reject }));
    if (!this.draining) {
      this.draining = true;
      // Other calls start their write in a microtask, so that calls made in the same turn share a batch.
      if (startNow) void this.drain();
      else queueMicrotask(() => void this.drain());
    }
    return done;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.shift()!;
      this.inFlight = batch;
      try {
        await this.writeBatch(batch);
      } catch (cause) {
        this.inFlight = null;
        this.fail(batch, cause);
        return;
      }
      this.inFlight = null;
      this.countWritten(batch.calls, batch.bytes, this.sync && batch.sync);
      for (const waiter of batch.waiters) waiter.resolve();
    }
    this.finishDrain();
  }

  /**
   * One batch, durable when it resolves if it needs to be. With the sync log: a synced batch is one record
   * there, and its ops join `lagging`, which goes to LevelDB unsynced, many batches per call, moments later
   * (`laggingFlushMs`); nothing reads LevelDB between `load()` and `close()`. A batch too large for the log,
   * or one that finds it full, goes to LevelDB synced with everything lagging, and the log starts a new pass.
   */
  private async writeBatch(batch: PendingBatch): Promise<void> {
    const wal = this.wal;
    if (wal === null) {
      await writeOps(this.db, batch.ops, this.sync && batch.sync);
      return;
    }
    if (this.failure !== null) throw this.failure;
    if (!batch.sync) {
      this.defer(batch.ops, batch.bytes);
      return;
    }
    const record = wal.record(batch.ops);
    if (record === null) {
      await this.flushLagging(batch.ops, true);
      wal.startPass();
      return;
    }
    this.defer(batch.ops, batch.bytes);
    await wal.write(record);
    this.counters.walRecordsWritten += 1;
  }

  private defer(ops: readonly BatchOp[], bytes: number): void {
    for (const op of ops) this.lagging.push(op);
    this.laggingBytes += bytes;
    if (
      this.laggingBytes >= storageLimits.laggingBytesMax ||
      this.lagging.length >= storageLimits.laggingOpsMax
    ) {
      this.flushLaggingLater(0);
      return;
    }
    this.flushLaggingLater(storageLimits.laggingFlushMs);
  }

  private flushLaggingLater(delayMs: number): void {
    if (this.laggingTimer !== null) {
      if (delayMs > 0) return;
      clearTimeout(this.laggingTimer);
    }
    this.laggingTimer = setTimeout(() => {
      this.laggingTimer = null;
      this.flushLagging([], false).catch((cause: unknown) => {
        this.failure ??= this.writeFailure(cause);
      });
    }, delayMs);
    this.laggingTimer.unref();
  }

  /** Writes what lags behind, then `extra`, as one LevelDB batch, after the write of the same kind in flight. */
  private async flushLagging(extra: readonly BatchOp[], sync: boolean): Promise<void> {
    while (this.laggingWrite !== null) await this.laggingWrite.catch(() => undefined);
    if (this.failure !== null) throw this.failure;
    const ops = this.lagging;
    this.lagging = [];
    this.laggingBytes = 0;
    for (const op of extra) ops.push(op);
    if (ops.length === 0) return;
    const write = writeOps(this.db, ops, sync);
    this.laggingWrite = write;
    try {
      await write;
    } finally {
      this.laggingWrite = null;
    }
  }

  /** A failed write leaves the disk in an unknown state: fail this and every later call, for good. */
  private fail(batch: PendingBatch, cause: unknown): void {
    this.failure = this.writeFailure(cause);
    const failed = [batch, ...this.queue.splice(0)];
    for (const pending of failed) for (const waiter of pending.waiters) waiter.reject(this.failure);
    this.finishDrain();
  }

  private writeFailure(cause: unknown): StorageWriteFailedError {
    return new StorageWriteFailedError(`storage: batch write failed in ${this.db.location}`, { cause });
  }

  /** One batch written: `calls` persist calls, `bytes` of keys and values, fsynced or not. */
  private countWritten(calls: number, bytes: number, synced: boolean): void {
    this.counters.batchesWritten += 1;
    if (synced) this.counters.syncsWritten += 1;
    this.counters.callsWritten += calls;
    this.counters.bytesWritten += bytes;
  }

  private finishDrain(): void {
    this.draining = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  // ---- reading back (load) ----

  private async require(key: Uint8Array): Promise<Uint8Array> {
    const value = await this.db.get(key);
    if (value === undefined)
      throw new StorageCorruptionError({ record: describeKey(key), key, detail: 'record missing' });
    return value;
  }

  private unpackRecord(key: Uint8Array, value: Uint8Array): unknown {
    const payload = decodeRecord(key, value);
    try {
      return this.packr.unpack(payload);
    } catch (cause) {
      throw new StorageCorruptionError({
        record: describeKey(key),
        key,
        detail: 'payload does not decode',
        cause,
      });
    }
  }

  private async loadSnapshotData(meta: StoredSnapshotMeta): Promise<Uint8Array> {
    const data = new Uint8Array(meta.totalBytes);
    let expectedChunk = 0;
    let offset = 0;
    for await (const [key, value] of this.db.iterator(prefixRange(KeyPrefix.snapshotChunk))) {
      const parts = chunkKeyParts(key);
      const fail = (detail: string): never => {
        throw new StorageCorruptionError({ record: describeKey(key), key, detail });
      };
      if (parts === undefined) fail('malformed snapshot chunk key');
      if (parts!.snapshotIndex !== meta.index) fail(`stray chunk; the stored snapshot is at ${meta.index}`);
      if (parts!.chunk !== expectedChunk) fail(`expected chunk ${expectedChunk}`);
      const piece = decodeRecord(key, value);
      if (offset + piece.byteLength > meta.totalBytes)
        fail(`chunks exceed the snapshot's ${meta.totalBytes} bytes`);
      data.set(piece, offset);
      offset += piece.byteLength;
      expectedChunk += 1;
    }
    const fail = (detail: string): never => {
      throw new StorageCorruptionError({ record: 'snapshot meta', key: snapshotMetaKey, detail });
    };
    if (expectedChunk !== meta.chunkCount) fail(`found ${expectedChunk} of ${meta.chunkCount} chunks`);
    if (offset !== meta.totalBytes) fail(`chunks hold ${offset} of ${meta.totalBytes} bytes`);
    if (crc32(data) !== meta.dataCrc) fail('snapshot data checksum mismatch');
    return data;
  }

  /**
   * Reads the stored log: contiguous, every entry under the key of its own index, terms never
   * decreasing. Returns the entries after the snapshot; entries at or below it (kept until `compact`)
   * are verified and skipped.
   */
  private async loadEntries(
    meta: StoredSnapshotMeta,
  ): Promise<{ entries: Entry[]; firstEntryIndex: number }> {
    const entries: Entry[] = [];
    let firstEntryIndex: number | undefined;
    let expectedIndex = -1;
    let previousTerm = 0;
    for await (const [key, value] of this.db.iterator(prefixRange(KeyPrefix.entry))) {
      const index = entryKeyIndex(key);
      const fail = (detail: string): never => {
        throw new StorageCorruptionError({ record: describeKey(key), key, detail });
      };
      if (index === undefined || index === 0) fail('malformed entry key');
      if (firstEntryIndex === undefined) {
        firstEntryIndex = index!;
        // The log may start at or below the snapshot (not compacted yet) but never leave a gap after it.
        if (index! > meta.index + 1) fail(`gap: the log after snapshot ${meta.index} starts at ${index}`);
      } else if (index !== expectedIndex) {
        fail(`gap: expected entry ${expectedIndex}`);
      }
      expectedIndex = index! + 1;
      const entry = parseEntry(key, index!, this.unpackRecord(key, value));
      if (index! === meta.index + 1 && entry.term < meta.term) {
        fail(`term ${entry.term} below the snapshot's term ${meta.term}`);
      }
      if (entry.term < previousTerm) fail(`term ${entry.term} after term ${previousTerm}`);
      previousTerm = entry.term;
      if (index! > meta.index) entries.push(entry);
    }
    return { entries, firstEntryIndex: firstEntryIndex ?? meta.index + 1 };
  }

  private async rejectUnknownKeys(): Promise<void> {
    for await (const key of this.db.keys({ gte: Uint8Array.of(KeyPrefix.entry + 1) })) {
      throw new StorageCorruptionError({ record: describeKey(key), key, detail: 'unknown key' });
    }
    for (const prefix of [KeyPrefix.format, KeyPrefix.hardState, KeyPrefix.snapshotMeta]) {
      for await (const key of this.db.keys({ gt: Uint8Array.of(prefix), lt: Uint8Array.of(prefix + 1) })) {
        throw new StorageCorruptionError({ record: describeKey(key), key, detail: 'unknown key' });
      }
    }
  }
}

/** The bytes of keys and values in `ops`: what batches and the lagging list are bounded by. */
function opsBytes(ops: readonly BatchOp[]): number {
  let bytes = 0;
  for (const op of ops) bytes += op.key.byteLength + (op.type === 'put' ? op.value.byteLength : 0);
  return bytes;
}

/**
 * Whether a persist call needs its own fsync. Everything does except a call that only moves the commit
 * index (etcd raft's `MustSync`): no entries, no snapshot, term and vote unchanged. That is safe because
 * (1) the commit index is not something a vote or an acknowledgement promises — Raft can always learn it
 * again from the leader, and a node restarting with an older commit index only re-applies later; (2) every
 * entry at or below the new commit index was made durable by an earlier, synced call (the core applies only
 * entries that are durable here, and hands out one Ready at a time), so the stored commit never points
 * past the stored log; (3) such a write reaches LevelDB in order with the batches around it (it is not in the
 * sync log), so a crash can drop it, or a replay of earlier records overwrite it — leaving an older commit
 * index, which (1) allows — but never leave it ahead of the entries it covers.
 */
function needsSync(request: PersistRequest, previous: HardState): boolean {
  if (request.snapshot !== null || request.entries.length > 0) return true;
  const next = request.hardState;
  if (next === null) return true;
  return next.term !== previous.term || next.vote !== previous.vote;
}

// ---- shape checks on what we read back (the other side of the write assertions) ----

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isNodeIds(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((id) => typeof id === 'string');
}

function corrupt(key: Uint8Array, detail: string): never {
  throw new StorageCorruptionError({ record: describeKey(key), key, detail });
}

function parseHardState(key: Uint8Array, value: unknown): HardState {
  if (!isRecord(value)) corrupt(key, 'hard state is not a map');
  const { term, vote, commit } = value;
  if (!isIndex(term) || !isIndex(commit) || !(vote === null || typeof vote === 'string')) {
    corrupt(key, 'hard state fields have the wrong types');
  }
  return { term, vote, commit };
}

function parseSnapshotMeta(key: Uint8Array, value: unknown): StoredSnapshotMeta {
  if (!isRecord(value)) corrupt(key, 'snapshot meta is not a map');
  const { index, term, conf, totalBytes, chunkCount, dataCrc } = value;
  if (
    !isIndex(index) ||
    !isIndex(term) ||
    !isRecord(conf) ||
    !isNodeIds(conf.voters) ||
    !isNodeIds(conf.learners) ||
    !isIndex(totalBytes) ||
    totalBytes > storageLimits.snapshotBytesMax ||
    !isIndex(chunkCount) ||
    chunkCount !== Math.ceil(totalBytes / storageLimits.snapshotChunkBytes) ||
    !isIndex(dataCrc)
  ) {
    corrupt(key, 'snapshot meta fields have the wrong types or sizes');
  }
  return {
    index,
    term,
    conf: { voters: conf.voters as string[], learners: conf.learners as string[] },
    totalBytes,
    chunkCount,
    dataCrc,
  };
}

function parseEntry(key: Uint8Array, keyIndex: number, value: unknown): Entry {
  if (!Array.isArray(value) || value.length !== 4) corrupt(key, 'entry is not a 4-tuple');
  const [index, term, type, data] = value as unknown[];
  if (index !== keyIndex) corrupt(key, `entry says index ${String(index)} but is stored under ${keyIndex}`);
  if (!isIndex(term) || term < 1) corrupt(key, `entry term ${String(term)}`);
  if (typeof type !== 'number' || !entryTypes.has(type)) corrupt(key, `entry type ${String(type)}`);
  if (!(data instanceof Uint8Array)) corrupt(key, 'entry data is not bytes');
  // msgpackr hands back a Buffer sharing LevelDB's memory; the core gets a plain Uint8Array view.
  return {
    index: keyIndex,
    term,
    type: type as EntryType,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}
