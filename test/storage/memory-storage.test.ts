import { describe, expect, it } from 'vitest';
import type { Entry, PersistentState } from '../../src/raft/types.ts';
import { EntryType } from '../../src/raft/types.ts';
import { MemoryStorage } from '../../src/storage/memory-storage.ts';

const conf = { voters: ['n1', 'n2', 'n3'], learners: [] };

function boot(): PersistentState {
  return {
    hardState: { term: 0, vote: null, commit: 0 },
    snapshot: { meta: { index: 0, term: 0, conf }, data: new Uint8Array() },
    entries: [],
  };
}

function entry(index: number, term: number, byte = index): Entry {
  return { index, term, type: EntryType.normal, data: Uint8Array.of(byte) };
}

function terms(state: PersistentState): string {
  return state.entries.map((e) => `${e.index}/${e.term}`).join(' ');
}

describe('MemoryStorage', () => {
  it('makes a write durable only when its fsync completes', () => {
    const disk = new MemoryStorage(boot());
    const write = disk.persist(
      { snapshot: null, entries: [entry(1, 1), entry(2, 1)], hardState: { term: 1, vote: 'n1', commit: 0 } },
      { now: 100, delay: 5 },
    );
    expect(write.completeAt).toBe(105);
    expect(disk.flushUntil(104)).toEqual([]);
    expect(disk.load().entries).toEqual([]);
    expect(disk.flushUntil(105).map((w) => w.id)).toEqual([write.id]);
    expect(terms(disk.load())).toBe('1/1 2/1');
    expect(disk.load().hardState).toEqual({ term: 1, vote: 'n1', commit: 0 });
  });

  it('loses unsynced writes on a crash and keeps the durable part', () => {
    const disk = new MemoryStorage(boot());
    disk.persist(
      { snapshot: null, entries: [entry(1, 1)], hardState: { term: 1, vote: 'n2', commit: 0 } },
      { now: 0, delay: 1 },
    );
    disk.flushUntil(1);
    disk.persist(
      { snapshot: null, entries: [entry(2, 1)], hardState: { term: 1, vote: 'n2', commit: 1 } },
      { now: 1, delay: 10 },
    );
    expect(disk.crash()).toBe(1);
    const state = disk.load();
    expect(terms(state)).toBe('1/1');
    expect(state.hardState.commit).toBe(0);
  });

  it('completes writes in the order they were issued, whatever their delays', () => {
    const disk = new MemoryStorage(boot());
    const slow = disk.persist(
      { snapshot: null, entries: [entry(1, 1)], hardState: null },
      { now: 0, delay: 20 },
    );
    const fast = disk.persist(
      { snapshot: null, entries: [entry(2, 1)], hardState: null },
      { now: 1, delay: 1 },
    );
    expect(fast.completeAt).toBe(slow.completeAt);
    expect(disk.flushUntil(5)).toEqual([]);
    expect(disk.flushUntil(20).length).toBe(2);
  });

  it('truncates at the first new index (the Ready rule)', () => {
    const disk = new MemoryStorage(boot());
    disk.persist(
      { snapshot: null, entries: [entry(1, 1), entry(2, 1), entry(3, 1)], hardState: null },
      { now: 0, delay: 0 },
    );
    disk.persist({ snapshot: null, entries: [entry(2, 2)], hardState: null }, { now: 0, delay: 0 });
    disk.flushUntil(0);
    expect(terms(disk.load())).toBe('1/1 2/2');
    expect(disk.durableTermAt(2)).toBe(2);
    expect(disk.durableTermAt(3)).toBeUndefined();
  });

  it('replaces older state with a received snapshot, then appends after it', () => {
    const disk = new MemoryStorage(boot());
    disk.persist(
      { snapshot: null, entries: [entry(1, 1), entry(2, 1)], hardState: null },
      { now: 0, delay: 0 },
    );
    const snapshot = { meta: { index: 10, term: 3, conf }, data: Uint8Array.of(9) };
    disk.persist(
      { snapshot, entries: [entry(11, 3)], hardState: { term: 3, vote: null, commit: 10 } },
      { now: 0, delay: 0 },
    );
    disk.flushUntil(0);
    const state = disk.load();
    expect(state.snapshot.meta.index).toBe(10);
    expect(terms(state)).toBe('11/3');
    expect(disk.durableTermAt(10)).toBe(3);
  });

  it('compacts to an application snapshot, keeping later entries', () => {
    const disk = new MemoryStorage(boot());
    disk.persist(
      { snapshot: null, entries: [1, 2, 3, 4].map((i) => entry(i, 1)), hardState: null },
      { now: 0, delay: 0 },
    );
    disk.persist(
      { compactTo: { meta: { index: 3, term: 1, conf }, data: Uint8Array.of(3) } },
      { now: 0, delay: 2 },
    );
    disk.flushUntil(1);
    expect(disk.durableSnapshotIndex()).toBe(0);
    disk.flushUntil(2);
    const state = disk.load();
    expect(state.snapshot.meta.index).toBe(3);
    expect(terms(state)).toBe('4/1');
  });

  it('copies what it is given and what it returns', () => {
    const disk = new MemoryStorage(boot());
    const data = Uint8Array.of(7);
    disk.persist(
      { snapshot: null, entries: [{ index: 1, term: 1, type: EntryType.normal, data }], hardState: null },
      { now: 0, delay: 0 },
    );
    data[0] = 99;
    disk.flushUntil(0);
    const loaded = disk.load();
    expect(loaded.entries[0]!.data[0]).toBe(7);
    (loaded.entries[0]!.data as Uint8Array)[0] = 42;
    expect(disk.load().entries[0]!.data[0]).toBe(7);
  });

  it('refuses a write that would leave a gap in the log', () => {
    const disk = new MemoryStorage(boot());
    disk.persist({ snapshot: null, entries: [entry(3, 1)], hardState: null }, { now: 0, delay: 0 });
    expect(() => disk.flushUntil(0)).toThrow(/gap/);
  });
});
