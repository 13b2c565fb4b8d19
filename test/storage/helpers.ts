import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import type { ConfState, Entry, HardState } from '../../src/raft/types.ts';

export const conf3: ConfState = { voters: ['n1', 'n2', 'n3'], learners: [] };

export async function tempDir(): Promise<{ dir: string; [Symbol.asyncDispose](): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'raftlock-storage-'));
  return { dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

/** Entries [from, to] of one term, each with a few distinguishable binary bytes. */
export function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let index = from; index <= to; index++) {
    out.push({ index, term, type: 0, data: Uint8Array.of(index & 0xff, term & 0xff, 0, 255, 7) });
  }
  return out;
}

export function hardState(term: number, commit: number, vote: string | null = 'n1'): HardState {
  return { term, vote, commit };
}

/** A raw LevelDB handle on a closed storage directory, for inspecting and damaging what is stored. */
export async function openRaw(dir: string): Promise<Level<Uint8Array, Uint8Array>> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open();
  return db;
}

export async function rawKeys(dir: string): Promise<Uint8Array[]> {
  const db = await openRaw(dir);
  try {
    const keys: Uint8Array[] = [];
    for await (const key of db.keys()) keys.push(key);
    return keys;
  } finally {
    await db.close();
  }
}
