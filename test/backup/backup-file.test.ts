// The backup file format and the table a restore seeds, in process: every damaged byte region is named,
// the table a new cluster starts from differs from the backup only in its counter and members (S8), and
// a seeded directory loads as `raftlock start` will load it.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BackupFileError,
  backupHeaderFor,
  decodeBackup,
  encodeBackupPrefix,
  sha256Hex,
  tableForNewCluster,
} from '../../src/backup/backup-file.ts';
import { LockTable, SessionLockScope } from '../../src/locks/index.ts';
import { LevelStorage } from '../../src/storage/level-storage.ts';

function sampleTable(): LockTable {
  const table = new LockTable();
  const opened = table.apply(1, {
    timeMs: 1_000,
    commands: [
      { type: 'openSession', principal: 'a', reconnectionWindowMs: 30_000 },
      { type: 'openSession', principal: 'b', reconnectionWindowMs: 30_000 },
    ],
  });
  const [a, b] = opened.results.map((result) => (result.kind === 'opened' ? result.session : 0));
  const scope = SessionLockScope.UNLOCK_ON_SESSION_LOSS;
  table.apply(2, {
    timeMs: 1_001,
    commands: [
      { type: 'acquire', session: a!, requestNo: 1, name: 'x', scope },
      { type: 'acquire', session: a!, requestNo: 2, name: 'y', scope },
      { type: 'acquire', session: b!, requestNo: 1, name: 'x', scope },
    ],
  });
  table.setMember('old-1', 'old-host:7501');
  return table;
}

function backupOf(table: LockTable): Buffer {
  const data = table.snapshot();
  const header = backupHeaderFor({
    clusterId: 'c',
    nodeId: 'n1',
    index: 7,
    term: 2,
    createdAt: new Date(0),
    table,
    data,
  });
  return Buffer.concat([encodeBackupPrefix(header), data]);
}

const problem = (bytes: Uint8Array): string | null => {
  try {
    decodeBackup(bytes);
    return null;
  } catch (error) {
    expect(error).toBeInstanceOf(BackupFileError);
    expect((error as BackupFileError).code).toBe('PROTOCOL_ERROR');
    return (error as BackupFileError).problem;
  }
};

describe('backup file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-backup-unit-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('C7: round-trips, and names what is wrong with a damaged file', () => {
    const good = backupOf(sampleTable());
    const { header, table } = decodeBackup(good);
    expect(header).toMatchObject({
      clusterId: 'c',
      index: 7,
      term: 2,
      locks: 2,
      sessions: 2,
      lastSequence: 2,
    });
    expect(table.listLocks({}).map((lock) => [lock.name, lock.sequence])).toEqual([
      ['x', 1],
      ['y', 2],
    ]);
    const dataStart = good.byteLength - header.dataBytes;
    expect(problem(good.subarray(0, 5))).toBe('truncated');
    expect(problem(Buffer.concat([Buffer.from('XX'), good.subarray(2)]))).toBe('magic');
    for (let at = 12; at < dataStart; at++) {
      const copy = Buffer.from(good);
      copy[at] = (copy[at] ?? 0) ^ 0x20;
      expect(problem(copy), `byte ${at}`).not.toBeNull();
    }
    for (let at = dataStart; at < good.byteLength; at++) {
      const copy = Buffer.from(good);
      copy[at] = (copy[at] ?? 0) ^ 0x01;
      expect(problem(copy), `byte ${at}`).toBe('checksum');
    }
    expect(problem(good.subarray(0, good.byteLength - 1))).toBe('truncated');
    expect(problem(Buffer.concat([good, Buffer.of(0)]))).toBe('truncated');
    // A valid header over bytes that are no lock table.
    const junk = new Uint8Array([1, 2, 3]);
    const header2 = { ...header, dataBytes: 3, dataSha256: sha256Hex(junk) };
    expect(problem(Buffer.concat([encodeBackupPrefix(header2), junk]))).toBe('table');
    const later = { ...header, formatVersion: 2 };
    expect(problem(Buffer.concat([encodeBackupPrefix(later), good.subarray(dataStart)]))).toBe('version');
  });

  it('S8: a new cluster starts from the same locks with the counter moved ahead and no old members', () => {
    const table = sampleTable();
    const restored = LockTable.restore(tableForNewCluster(table.snapshot(), 1_000));
    expect(restored.lastSequence).toBe(table.lastSequence + 1_000);
    expect(restored.members.size).toBe(0);
    expect(restored.listLocks({})).toEqual(table.listLocks({}));
    expect(restored.waiterCount).toBe(1);
    const next = restored.apply(3, {
      timeMs: 2_000,
      commands: [
        {
          type: 'acquire',
          session: 2,
          requestNo: 2,
          name: 'z',
          scope: SessionLockScope.UNLOCK_ON_SESSION_LOSS,
        },
      ],
    });
    expect(next.results[0]).toMatchObject({ kind: 'granted', sequence: table.lastSequence + 1_001 });
    expect(LockTable.restore(tableForNewCluster(table.snapshot(), 0)).lastSequence).toBe(table.lastSequence);
  });

  it('C3: a directory seeded from a snapshot loads it as the first log position, committed', async () => {
    const data = tableForNewCluster(sampleTable().snapshot(), 0);
    const path = join(dir, 'seeded');
    const storage = await LevelStorage.open(path);
    expect(await storage.load()).toBeNull();
    await storage.bootstrapFromSnapshot({
      meta: { index: 7, term: 2, conf: { voters: ['a', 'b', 'c'], learners: [] } },
      data,
    });
    await storage.close();
    const reopened = await LevelStorage.open(path);
    const state = await reopened.load();
    expect(state?.hardState).toEqual({ term: 2, vote: null, commit: 7 });
    expect(state?.snapshot.meta).toEqual({
      index: 7,
      term: 2,
      conf: { voters: ['a', 'b', 'c'], learners: [] },
    });
    expect(Buffer.from(state!.snapshot.data).equals(Buffer.from(data))).toBe(true);
    expect(state?.entries).toEqual([]);
    expect(reopened.info()).toMatchObject({ snapshotIndex: 7, lastIndex: 7, firstEntryIndex: 8 });
    await reopened.close();
  });
});
