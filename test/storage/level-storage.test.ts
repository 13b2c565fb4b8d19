import { execFile } from 'node:child_process';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/assert.ts';
import type { Entry, Snapshot } from '../../src/raft/types.ts';
import { StorageClosedError, StorageCorruptionError } from '../../src/storage/errors.ts';
import { chunkKey, chunkKeyParts, entryKey, entryKeyIndex, hardStateKey } from '../../src/storage/keys.ts';
import { LevelStorage } from '../../src/storage/level-storage.ts';
import { storageLimits } from '../../src/storage/limits.ts';
import { encodeRecord } from '../../src/storage/records.ts';
import { walFileName } from '../../src/storage/wal.ts';
import { conf3, entries, hardState, openRaw, rawKeys, tempDir } from './helpers.ts';

async function bootstrapped(dir: string): Promise<LevelStorage> {
  const storage = await LevelStorage.open(dir);
  expect(await storage.load()).toBeNull();
  await storage.bootstrap(conf3);
  return storage;
}

async function reload(dir: string) {
  const storage = await LevelStorage.open(dir);
  try {
    const state = await storage.load();
    expect(state).not.toBeNull();
    return { state: state!, info: storage.info() };
  } finally {
    await storage.close();
  }
}

function indexes(list: readonly Entry[]): number[] {
  return list.map((entry) => entry.index);
}

function bytes(size: number, seed: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + seed) & 0xff;
  return data;
}

async function storedEntryIndexes(dir: string): Promise<number[]> {
  return (await rawKeys(dir)).map(entryKeyIndex).filter((index) => index !== undefined);
}

describe('LevelStorage', () => {
  it('C3: an empty directory loads as null, and bootstrap is durable', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.close();
    const { state } = await reload(tmp.dir);
    expect(state.hardState).toEqual({ term: 0, vote: null, commit: 0 });
    expect(state.snapshot.meta).toEqual({ index: 0, term: 0, conf: conf3 });
    expect(state.snapshot.data.byteLength).toBe(0);
    expect(state.entries).toEqual([]);
  });

  it('C3: entries and hard state round-trip through close and reopen, data as plain Uint8Array', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    const written = entries(1, 20, 3);
    await storage.persist({ snapshot: null, entries: written, hardState: hardState(3, 12, 'n2') });
    await storage.close();

    const { state, info } = await reload(tmp.dir);
    expect(state.hardState).toEqual({ term: 3, vote: 'n2', commit: 12 });
    expect(state.entries).toEqual(written);
    for (const entry of state.entries) expect(entry.data.constructor).toBe(Uint8Array);
    expect(info).toMatchObject({ firstEntryIndex: 1, lastIndex: 20, entriesStored: 20 });
  });

  it('truncates the uncommitted tail when a new leader overwrites it', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 10, 1), hardState: hardState(1, 4) });
    // Term 2 leader overwrites from index 6 with a shorter log: 6..7 replaced, 8..10 must disappear.
    await storage.persist({ snapshot: null, entries: entries(6, 7, 2), hardState: hardState(2, 4, 'n3') });
    await storage.close();

    const { state } = await reload(tmp.dir);
    expect(indexes(state.entries)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(state.entries.map((entry) => entry.term)).toEqual([1, 1, 1, 1, 1, 2, 2]);
    expect(await storedEntryIndexes(tmp.dir)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses, as a programmer error, to truncate committed entries or to double-vote', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 5, 1), hardState: hardState(1, 3, 'n1') });
    expect(() => storage.persist({ snapshot: null, entries: entries(3, 3, 2), hardState: null })).toThrow(
      AssertionError,
    );
    expect(() => storage.persist({ snapshot: null, entries: [], hardState: hardState(1, 3, 'n2') })).toThrow(
      /vote changed/,
    );
    expect(() => storage.persist({ snapshot: null, entries: entries(7, 7, 1), hardState: null })).toThrow(
      /gap/,
    );
    await storage.close();
  });

  it('C4: a snapshot from the leader replaces the whole stored log', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 10, 1), hardState: hardState(1, 2) });
    const snapshot: Snapshot = { meta: { index: 20, term: 2, conf: conf3 }, data: bytes(1000, 5) };
    await storage.persist({ snapshot, entries: entries(21, 22, 2), hardState: hardState(2, 20) });
    await storage.close();

    const { state } = await reload(tmp.dir);
    expect(state.snapshot.meta).toEqual(snapshot.meta);
    expect(state.snapshot.data).toEqual(snapshot.data);
    expect(indexes(state.entries)).toEqual([21, 22]);
    expect(await storedEntryIndexes(tmp.dir)).toEqual([21, 22]);
  });

  it('C4: saveSnapshot + compact leave only the live state on disk', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 100, 1), hardState: hardState(1, 100) });
    // Large enough to span three chunks.
    const big: Snapshot = {
      meta: { index: 60, term: 1, conf: conf3 },
      data: bytes(2 * storageLimits.snapshotChunkBytes + 12345, 9),
    };
    await storage.saveSnapshot(big);
    await storage.compact(60);
    expect(storage.info()).toMatchObject({
      snapshotIndex: 60,
      firstEntryIndex: 61,
      lastIndex: 100,
      entriesStored: 40,
    });
    await storage.close();

    let loaded = await reload(tmp.dir);
    expect(loaded.state.snapshot.meta).toEqual(big.meta);
    // Compared as Buffers: vitest's element-wise diff of a 2 MiB array takes seconds.
    expect(Buffer.from(loaded.state.snapshot.data).equals(Buffer.from(big.data))).toBe(true);
    expect(indexes(loaded.state.entries)).toEqual(Array.from({ length: 40 }, (_, k) => 61 + k));
    let keys = await rawKeys(tmp.dir);
    expect(keys.map(entryKeyIndex).filter((i) => i !== undefined)).toHaveLength(40);
    expect(keys.map(chunkKeyParts).filter((c) => c !== undefined)).toEqual([
      { snapshotIndex: 60, chunk: 0 },
      { snapshotIndex: 60, chunk: 1 },
      { snapshotIndex: 60, chunk: 2 },
    ]);

    // A newer, small snapshot: the old chunks go, and compaction to its index drops the rest of the log.
    const reopened = await LevelStorage.open(tmp.dir);
    await reopened.load();
    const batchesBefore = reopened.stats().batchesWritten;
    await reopened.saveSnapshot(
      { meta: { index: 100, term: 1, conf: conf3 }, data: bytes(10, 1) },
      { compact: true },
    );
    expect(reopened.stats().batchesWritten - batchesBefore).toBe(1);
    await reopened.close();
    keys = await rawKeys(tmp.dir);
    expect(keys.map(entryKeyIndex).filter((i) => i !== undefined)).toEqual([]);
    expect(keys.map(chunkKeyParts).filter((c) => c !== undefined)).toEqual([
      { snapshotIndex: 100, chunk: 0 },
    ]);
    loaded = await reload(tmp.dir);
    expect(loaded.state.snapshot.meta.index).toBe(100);
    expect(loaded.state.entries).toEqual([]);
    expect(loaded.info).toMatchObject({ firstEntryIndex: 101, lastIndex: 100, entriesStored: 0 });
  });

  it('keeps entries at or below a saved snapshot until compact, but loads only those after it', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 10, 1), hardState: hardState(1, 10) });
    await storage.saveSnapshot({ meta: { index: 6, term: 1, conf: conf3 }, data: bytes(3, 3) });
    await storage.close();
    expect(await storedEntryIndexes(tmp.dir)).toHaveLength(10);

    const reopened = await LevelStorage.open(tmp.dir);
    const state = await reopened.load();
    expect(indexes(state!.entries)).toEqual([7, 8, 9, 10]);
    expect(reopened.info()).toMatchObject({ firstEntryIndex: 1, lastIndex: 10 });
    expect(() => reopened.compact(7)).toThrow(/past the snapshot/);
    await reopened.compact(4);
    await reopened.close();
    expect(await storedEntryIndexes(tmp.dir)).toEqual([5, 6, 7, 8, 9, 10]);
  });

  it('group commit: 1000 concurrent persist calls share a handful of synced batches, resolving in order', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    const before = storage.stats();
    const resolved: number[] = [];
    const calls: Promise<void>[] = [];
    for (let index = 1; index <= 1000; index++) {
      const call = storage.persist({
        snapshot: null,
        entries: entries(index, index, 1),
        hardState: hardState(1, index),
      });
      calls.push(call.then(() => void resolved.push(index)));
    }
    // The first call's write starts at once (persist does not wait for the turn to end); the 999 made
    // while it is on disk wait, to share one batch.
    expect(storage.stats().callsQueued).toBe(999);
    await Promise.all(calls);
    const after = storage.stats();
    expect(after.callsWritten - before.callsWritten).toBe(1000);
    // The first alone, then the other 999 in one batch.
    expect(after.batchesWritten - before.batchesWritten).toBe(2);
    expect(after.syncsWritten - before.syncsWritten).toBe(after.batchesWritten - before.batchesWritten);
    expect(resolved).toEqual(Array.from({ length: 1000 }, (_, k) => k + 1));
    expect(after.callsQueued).toBe(0);

    // Calls arriving while a batch is in flight coalesce into the next one.
    const first = storage.persist({ snapshot: null, entries: entries(1001, 1001, 1), hardState: null });
    await Promise.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    const later: Promise<void>[] = [];
    for (let index = 1002; index <= 1100; index++) {
      later.push(storage.persist({ snapshot: null, entries: entries(index, index, 1), hardState: null }));
    }
    await Promise.all([first, ...later]);
    expect(storage.stats().batchesWritten - after.batchesWritten).toBeLessThanOrEqual(3);
    await storage.close();

    const { state } = await reload(tmp.dir);
    expect(state.entries).toHaveLength(1100);
    expect(state.hardState.commit).toBe(1000);
  });

  it('an empty persist resolves only after the writes queued before it', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    const order: string[] = [];
    const write = storage.persist({ snapshot: null, entries: entries(1, 1, 1), hardState: null }).then(() => {
      order.push('write');
    });
    const empty = storage.persist({ snapshot: null, entries: [], hardState: null }).then(() => {
      order.push('empty');
    });
    await Promise.all([write, empty]);
    expect(order).toEqual(['write', 'empty']);
    await storage.close();
  });

  it('C3: what was acknowledged survives SIGKILL of the writing process', async () => {
    await using tmp = await tempDir();
    const writer = fileURLToPath(new URL('./fixtures/crash-writer.ts', import.meta.url));
    const run = promisify(execFile)(process.execPath, ['--import', 'tsx', writer, tmp.dir]);
    const failure = await run.then(
      () => null,
      (error: { signal?: string; stdout?: string }) => error,
    );
    expect(failure?.signal).toBe('SIGKILL');
    const acked = (failure?.stdout ?? '').split('\n').filter((line) => line.startsWith('acked '));
    expect(acked).toHaveLength(200);

    const { state } = await reload(tmp.dir);
    expect(state.hardState.commit).toBe(200);
    expect(state.entries.length).toBeGreaterThanOrEqual(200);
    expect(state.entries.length).toBeLessThanOrEqual(300);
    expect(indexes(state.entries)).toEqual(Array.from({ length: state.entries.length }, (_, k) => k + 1));
  });

  it.each(['pool', 'inline'])(
    'C3: SIGKILL while the sync log fills and starts new passes loses nothing acknowledged (writes %s)',
    async (how) => {
      await using tmp = await tempDir();
      const writer = fileURLToPath(new URL('./fixtures/crash-writer.ts', import.meta.url));
      const walBytes = 64 * 1024; // about 60 records of 1 KiB a pass: 300 persists wrap it five times
      const run = promisify(execFile)(process.execPath, [
        '--import',
        'tsx',
        writer,
        tmp.dir,
        'wraps',
        String(walBytes),
        how,
      ]);
      const failure = await run.then(
        () => null,
        (error: { signal?: string; stdout?: string }) => error,
      );
      expect(failure?.signal).toBe('SIGKILL');
      const lines = (failure?.stdout ?? '').split('\n');
      expect(lines.filter((line) => line.startsWith('acked '))).toHaveLength(300);
      const stats = JSON.parse(lines.find((line) => line.startsWith('stats '))!.slice(6)) as {
        walRecordsWritten: number;
        inline: number;
      };
      // Most batches were made durable by the sync log, not by LevelDB's fsync; inline, on this thread.
      expect(stats.walRecordsWritten).toBeGreaterThan(250);
      if (how === 'inline') expect(stats.inline).toBeGreaterThan(250);
      else expect(stats.inline).toBe(0);

      const storage = await LevelStorage.open(tmp.dir);
      try {
        const state = await storage.load();
        // LevelDB had been handed none of the last pass (it lags by up to a second): the log put it back.
        expect(storage.stats().walRecordsReplayed).toBeGreaterThan(0);
        expect(state!.hardState.commit).toBe(300);
        expect(indexes(state!.entries)).toEqual(Array.from({ length: 300 }, (_, k) => k + 1));
        for (const entry of state!.entries)
          expect(entry.data).toEqual(new Uint8Array(1024).fill(entry.index & 0xff));
      } finally {
        await storage.close();
      }
    },
  );

  it.each(['pool', 'inline'])(
    "C3: a power loss that takes LevelDB's unsynced writes loses nothing acknowledged: the sync log puts them back (writes %s)",
    async (how) => {
      await using tmp = await tempDir();
      await using lost = await tempDir();
      const storage = await bootstrapped(tmp.dir);
      await storage.persist({ snapshot: null, entries: entries(1, 5, 1), hardState: hardState(1, 5) });
      await storage.close();
      // LevelDB as a power loss could leave it: everything up to the last clean close, nothing after.
      cpSync(tmp.dir, lost.dir, { recursive: true });

      const again = await LevelStorage.open(tmp.dir);
      await again.load();
      const writes = [
        { snapshot: null, entries: entries(6, 8, 2), hardState: hardState(2, 7, 'n2') },
        { snapshot: null, entries: entries(9, 10, 2), hardState: hardState(2, 9, 'n2') },
      ];
      for (const request of writes) {
        if (how === 'pool') await again.persist(request);
        // An idle disk and a record that fits: durable when the call returns, nothing to wait for.
        else expect(again.persistInline(request)).toBeNull();
      }
      // The sync log is on disk as soon as a persist resolves; copy it while the writer still runs.
      cpSync(join(tmp.dir, walFileName), join(lost.dir, walFileName));
      await again.close();

      const recovered = await LevelStorage.open(lost.dir);
      try {
        const state = await recovered.load();
        expect(recovered.stats().walRecordsReplayed).toBe(2);
        expect(state!.hardState).toEqual({ term: 2, vote: 'n2', commit: 9 });
        expect(state!.entries).toEqual([...entries(1, 5, 1), ...entries(6, 10, 2)]);
      } finally {
        await recovered.close();
      }
      // A clean close ends the log's pass: the next open has nothing to replay and the same state.
      const reopened = await LevelStorage.open(lost.dir);
      try {
        const state = await reopened.load();
        expect(reopened.stats().walRecordsReplayed).toBe(0);
        expect(indexes(state!.entries)).toEqual(Array.from({ length: 10 }, (_, k) => k + 1));
      } finally {
        await reopened.close();
      }
    },
  );

  it('C3: persistInline writes small batches on the calling thread and a large one through the pool, in order', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    const recordsBefore = storage.stats().walRecordsWritten;
    const big = {
      index: 2,
      term: 1,
      type: 0 as const,
      data: bytes(storageLimits.inlineRecordBytesMax + 1, 3),
    };
    expect(
      storage.persistInline({ snapshot: null, entries: entries(1, 1, 1), hardState: hardState(1, 1) }),
    ).toBeNull();
    const large = storage.persistInline({ snapshot: null, entries: [big], hardState: hardState(1, 2) });
    expect(large).toBeInstanceOf(Promise);
    // While the large one is on its way, the next call queues behind it rather than overtake it.
    const after = storage.persistInline({
      snapshot: null,
      entries: entries(3, 3, 1),
      hardState: hardState(1, 3),
    });
    expect(after).toBeInstanceOf(Promise);
    await Promise.all([large, after]);
    expect(
      storage.persistInline({ snapshot: null, entries: entries(4, 4, 1), hardState: hardState(1, 4) }),
    ).toBeNull();
    // One sync-log record per call: the large one too, written in the pool.
    expect(storage.stats().walRecordsWritten - recordsBefore).toBe(4);
    await storage.close();
    const { state } = await reload(tmp.dir);
    expect(indexes(state.entries)).toEqual([1, 2, 3, 4]);
    expect(state.entries[1]!.data).toEqual(big.data);
    expect(state.hardState.commit).toBe(4);
  });

  it('a batch too large for the sync log goes to LevelDB synced, and the log starts a new pass after it', async () => {
    await using tmp = await tempDir();
    await using lost = await tempDir();
    const storage = await LevelStorage.open(tmp.dir, { walBytes: 64 * 1024 });
    await storage.load();
    await storage.bootstrap(conf3);
    await storage.persist({ snapshot: null, entries: entries(1, 3, 1), hardState: hardState(1, 3) });
    const before = storage.stats().walRecordsWritten;
    // 40 KiB: more than a quarter of the 64 KiB log.
    const big: Entry = { index: 4, term: 1, type: 0, data: bytes(40 * 1024, 9) };
    await storage.persist({ snapshot: null, entries: [big], hardState: hardState(1, 4) });
    expect(storage.stats().walRecordsWritten).toBe(before);
    // Synced in LevelDB itself: a copy of the directory taken now, without the log, has it.
    cpSync(tmp.dir, lost.dir, { recursive: true });
    rmSync(join(lost.dir, walFileName));
    await storage.persist({ snapshot: null, entries: entries(5, 5, 1), hardState: hardState(1, 5) });
    expect(storage.stats().walRecordsWritten).toBe(before + 1);
    await storage.close();

    const { state } = await reload(lost.dir);
    expect(indexes(state.entries)).toEqual([1, 2, 3, 4]);
    expect(state.entries[3]!.data).toEqual(big.data);
    const { state: latest } = await reload(tmp.dir);
    expect(indexes(latest.entries)).toEqual([1, 2, 3, 4, 5]);
  });

  it('MustSync: a call that only moves the commit index takes no fsync, and completes at once when idle', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 3, 1), hardState: hardState(1, 0) });
    const before = storage.stats();
    // Idle disk: recorded for the next batch, nothing to wait for.
    expect(storage.persistWithoutWaiting({ snapshot: null, entries: [], hardState: hardState(1, 2) })).toBe(
      true,
    );
    expect(storage.info().hardState.commit).toBe(2);
    // Anything that needs an fsync is refused here: a vote, a term, entries.
    expect(
      storage.persistWithoutWaiting({ snapshot: null, entries: [], hardState: hardState(2, 2, 'n2') }),
    ).toBe(false);
    expect(
      storage.persistWithoutWaiting({ snapshot: null, entries: entries(4, 4, 1), hardState: null }),
    ).toBe(false);
    // The deferred record rides along with the next synced batch, before that batch's own hard state.
    await storage.persist({ snapshot: null, entries: entries(4, 4, 1), hardState: null });
    const after = storage.stats();
    expect(after.syncsWritten - before.syncsWritten).toBe(1);
    expect(after.commitOnlyWritten - before.commitOnlyWritten).toBe(1);
    // A commit-only persist while a write is under way waits its turn, unsynced, resolving in order.
    const order: string[] = [];
    const synced = storage
      .persist({ snapshot: null, entries: entries(5, 5, 1), hardState: null })
      .then(() => order.push('entries'));
    expect(storage.persistWithoutWaiting({ snapshot: null, entries: [], hardState: hardState(1, 4) })).toBe(
      false,
    );
    const commit = storage
      .persist({ snapshot: null, entries: [], hardState: hardState(1, 4) })
      .then(() => order.push('commit'));
    await Promise.all([synced, commit]);
    expect(order).toEqual(['entries', 'commit']);
    expect(storage.stats().syncsWritten - after.syncsWritten).toBe(1);
    await storage.close();
    const { state } = await reload(tmp.dir);
    expect(state.hardState).toEqual(hardState(1, 4));
    expect(indexes(state.entries)).toEqual([1, 2, 3, 4, 5]);
  });

  it('MustSync: a deferred commit index is written within commitFlushDelayMs, and on close', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.persist({ snapshot: null, entries: entries(1, 2, 1), hardState: hardState(1, 0) });
    await storage.persist({ snapshot: null, entries: [], hardState: hardState(1, 1) });
    const batches = storage.stats().batchesWritten;
    await new Promise((resolve) => setTimeout(resolve, storageLimits.commitFlushDelayMs * 3));
    expect(storage.stats().batchesWritten).toBe(batches + 1);
    expect(storage.persistWithoutWaiting({ snapshot: null, entries: [], hardState: hardState(1, 2) })).toBe(
      true,
    );
    await storage.close();
    const { state } = await reload(tmp.dir);
    expect(state.hardState.commit).toBe(2);
  });

  it('rejects calls after close with StorageClosedError', async () => {
    await using tmp = await tempDir();
    const storage = await bootstrapped(tmp.dir);
    await storage.close();
    await expect(
      storage.persist({ snapshot: null, entries: entries(1, 1, 1), hardState: null }),
    ).rejects.toBeInstanceOf(StorageClosedError);
  });
});

describe('LevelStorage corruption detection', () => {
  async function prepared(dir: string): Promise<void> {
    const storage = await bootstrapped(dir);
    await storage.persist({ snapshot: null, entries: entries(1, 10, 1), hardState: hardState(1, 10) });
    await storage.saveSnapshot({ meta: { index: 4, term: 1, conf: conf3 }, data: bytes(5000, 2) });
    await storage.close();
  }

  async function damage(
    dir: string,
    edit: (db: Awaited<ReturnType<typeof openRaw>>) => Promise<void>,
  ): Promise<void> {
    const db = await openRaw(dir);
    try {
      await edit(db);
    } finally {
      await db.close();
    }
  }

  async function loadError(dir: string): Promise<StorageCorruptionError> {
    const storage = await LevelStorage.open(dir);
    try {
      await storage.load();
    } catch (error) {
      expect(error).toBeInstanceOf(StorageCorruptionError);
      return error as StorageCorruptionError;
    } finally {
      await storage.close();
    }
    throw new Error('load() accepted a damaged directory');
  }

  async function flipByte(dir: string, key: Uint8Array, offset: number): Promise<void> {
    await damage(dir, async (db) => {
      const value = Uint8Array.from((await db.get(key))!);
      value[offset]! ^= 0x01;
      await db.put(key, value);
    });
  }

  it('C3: a flipped bit in an entry is reported with its key', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await flipByte(tmp.dir, entryKey(7), 9);
    const error = await loadError(tmp.dir);
    expect(error.code).toBe('INTERNAL');
    expect(error.storageFailure).toBe('corruption');
    expect(error.record).toBe('entry 7');
    expect(error.message).toMatch(/checksum mismatch/);
  });

  it('C3: a flipped bit in a snapshot chunk or the hard state is detected', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await flipByte(tmp.dir, chunkKey(4, 0), 2000);
    expect((await loadError(tmp.dir)).record).toBe('snapshot chunk 4/0');

    await using tmp2 = await tempDir();
    await prepared(tmp2.dir);
    await flipByte(tmp2.dir, hardStateKey, 6);
    expect((await loadError(tmp2.dir)).record).toBe('hard state');
  });

  it('C3: a gap in the log is detected', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await damage(tmp.dir, (db) => db.del(entryKey(6)));
    const error = await loadError(tmp.dir);
    expect(error.record).toBe('entry 7');
    expect(error.message).toMatch(/gap: expected entry 6/);
  });

  it('C3: an entry whose own index disagrees with its key is detected, checksum notwithstanding', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    const packr = new Packr({ useRecords: false });
    await damage(tmp.dir, (db) =>
      db.put(entryKey(8), encodeRecord(entryKey(8), packr.pack([9, 1, 0, Uint8Array.of(1)]))),
    );
    const error = await loadError(tmp.dir);
    expect(error.record).toBe('entry 8');
    expect(error.message).toMatch(/says index 9/);
  });

  it('C3: a valid record copied under another key fails its checksum', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await damage(tmp.dir, async (db) => db.put(entryKey(8), (await db.get(entryKey(9)))!));
    expect((await loadError(tmp.dir)).record).toBe('entry 8');
  });

  it('C3: a missing snapshot chunk and stray keys are detected', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await damage(tmp.dir, (db) => db.del(chunkKey(4, 0)));
    expect((await loadError(tmp.dir)).message).toMatch(/found 0 of 1 chunks/);

    await using tmp2 = await tempDir();
    await prepared(tmp2.dir);
    await damage(tmp2.dir, (db) => db.put(Uint8Array.of(0x09, 1), Uint8Array.of(1)));
    expect((await loadError(tmp2.dir)).message).toMatch(/unknown key/);
  });

  it('C3: acknowledged commit past the stored log (lost entries) is detected', async () => {
    await using tmp = await tempDir();
    await prepared(tmp.dir);
    await damage(tmp.dir, async (db) => {
      await db.del(entryKey(10));
      await db.del(entryKey(9));
    });
    expect((await loadError(tmp.dir)).message).toMatch(/commit 10 is past the last stored index 8/);
  });
});
