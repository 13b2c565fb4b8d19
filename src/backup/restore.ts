// `raftlock restore`: seeds an EMPTY data directory from a backup file, for a node of a new cluster.
//
// Every node of the new cluster is seeded from the same file with the same voters, then started as usual
// (`raftlock start`): each finds a stored snapshot at the backup's index, whose membership is the new
// cluster's voters (not the old cluster's), and a hard state committing it. The first leader's no-op
// lands at index + 1 in term + 1; the lock table continues from the backup: the same locks, owners,
// sequences and waiters, and new grants take sequences above `lastSequence` (+ the skip, S8).
//
// Order of work: the file is read and checked in full, then the directory, and only then is anything
// written — in one atomic LevelDB batch (LevelStorage.bootstrapFromSnapshot), read back and compared.
// If writing fails, what this call created is removed again: the directory is left as it was found.

import { accessSync, constants, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { assert } from '../assert.ts';
import { RaftlockError } from '../errors.ts';
import { LevelStorage } from '../storage/level-storage.ts';
import {
  BackupFileError,
  type BackupHeader,
  decodeBackup,
  sha256Hex,
  tableForNewCluster,
} from './backup-file.ts';

export type RestoreTargetProblem = 'notEmpty' | 'notDirectory' | 'access' | 'voters' | 'source';

/** The restore cannot go ahead: the target directory, the voters or the source file are not usable. */
export class RestoreTargetError extends RaftlockError {
  override readonly name = 'RestoreTargetError';
  readonly problem: RestoreTargetProblem;

  constructor(problem: RestoreTargetProblem, message: string, options?: { cause?: unknown }) {
    super('INVALID_ARGUMENT', message, options);
    this.problem = problem;
  }
}

export interface RestoreOptions {
  /** The backup file. */
  readonly from: string;
  /** The data directory to seed: absent or empty. */
  readonly dataDir: string;
  /** Node ids of the new cluster's voters, exactly as its nodes' `--id` / `--peers` name them. */
  readonly voters: readonly string[];
  /** Added to the sequence counter, so new grants lie above any the old cluster made after the backup. */
  readonly sequenceSkip?: number;
}

export interface RestoreReport {
  readonly header: BackupHeader;
  readonly dataDir: string;
  readonly index: number;
  readonly term: number;
  readonly voters: readonly string[];
  /** The sequence counter of the restored table: the next grant gets a larger one. */
  readonly lastSequence: number;
}

export function checkVoters(voters: readonly string[]): readonly string[] {
  const ids = voters.map((id) => id.trim());
  if (ids.some((id) => id === '')) throw new RestoreTargetError('voters', '--voters: an empty node id');
  if (new Set(ids).size !== ids.length) throw new RestoreTargetError('voters', '--voters: node ids repeat');
  if (![1, 3, 5, 7].includes(ids.length))
    throw new RestoreTargetError('voters', `--voters: a cluster has 1, 3, 5 or 7 voters, not ${ids.length}`);
  return [...ids].sort();
}

/** Reads and checks the whole backup file; nothing is written. */
export function readBackupFile(path: string) {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    throw new RestoreTargetError('source', `cannot read backup ${path}: ${(cause as Error).message}`, {
      cause,
    });
  }
  return decodeBackup(bytes);
}

/** Whether the directory holds nothing; throws when it is something else than an absent or empty directory. */
function checkTarget(dir: string): { exists: boolean } {
  let stat: ReturnType<typeof statSync> | undefined;
  try {
    stat = statSync(dir);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false };
    throw new RestoreTargetError('access', `cannot inspect ${dir}: ${(cause as Error).message}`, { cause });
  }
  if (!stat.isDirectory()) throw new RestoreTargetError('notDirectory', `${dir} is not a directory`);
  let names: string[];
  try {
    names = readdirSync(dir);
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (cause) {
    throw new RestoreTargetError('access', `cannot write to ${dir}: ${(cause as Error).message}`, { cause });
  }
  if (names.length > 0)
    throw new RestoreTargetError(
      'notEmpty',
      `${dir} is not empty (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}): restore seeds only an empty data directory`,
    );
  return { exists: true };
}

export async function restoreDataDir(options: RestoreOptions): Promise<RestoreReport> {
  const { header, data } = readBackupFile(options.from);
  const voters = checkVoters(options.voters);
  const skip = options.sequenceSkip ?? 0;
  if (!Number.isSafeInteger(skip) || skip < 0)
    throw new RestoreTargetError('voters', `--sequence-skip must be a non-negative integer, got ${skip}`);
  const tableData = tableForNewCluster(data, skip);
  const dataDir = resolve(options.dataDir);
  const { exists } = checkTarget(dataDir);

  const snapshot = {
    meta: { index: header.index, term: header.term, conf: { voters: [...voters], learners: [] } },
    data: tableData,
  };
  let created = false;
  try {
    if (!exists) {
      // Not recursive: a missing parent is a typo more often than not (and Node's recursive mkdir spins
      // on some paths under /proc).
      mkdirSync(dataDir, { mode: 0o700 });
      created = true;
    }
    const storage = await LevelStorage.open(dataDir);
    try {
      assert((await storage.load()) === null, 'restore: the directory was empty a moment ago');
      await storage.bootstrapFromSnapshot(snapshot);
    } finally {
      await storage.close();
    }
    await verifyRestored(dataDir, snapshot);
  } catch (cause) {
    // Leave the directory as we found it: empty, or absent.
    if (created) rmSync(dataDir, { recursive: true, force: true });
    else
      for (const name of safeList(dataDir)) rmSync(resolve(dataDir, name), { recursive: true, force: true });
    if (cause instanceof RaftlockError) throw cause;
    throw new RestoreTargetError('access', `cannot write ${dataDir}: ${(cause as Error).message}`, { cause });
  }
  return {
    header,
    dataDir,
    index: header.index,
    term: header.term,
    voters,
    lastSequence: header.lastSequence + skip,
  };
}

/** Opens what was written, as `raftlock start` will, and compares it with what was meant. */
async function verifyRestored(
  dataDir: string,
  expected: { meta: { index: number; term: number }; data: Uint8Array },
): Promise<void> {
  const storage = await LevelStorage.open(dataDir);
  try {
    const state = await storage.load();
    assert(state !== null, 'restore: nothing stored');
    assert(
      state.snapshot.meta.index === expected.meta.index &&
        state.snapshot.meta.term === expected.meta.term &&
        state.hardState.commit === expected.meta.index &&
        state.entries.length === 0 &&
        sha256Hex(state.snapshot.data) === sha256Hex(expected.data),
      'restore: the stored state differs from the backup',
    );
  } finally {
    await storage.close();
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export { BackupFileError };
