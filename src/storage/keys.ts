// The LevelDB key layout. LevelDB orders keys bytewise, so every index is a fixed-width big-endian
// integer: a range scan over a prefix visits records in index order, and "everything ≤ i" is a
// contiguous key range.
//
//   0x00                                   format record (layout version); absent = empty directory
//   0x01                                   hard state
//   0x02                                   snapshot meta (index, term, conf, size, chunk count, CRC)
//   0x03 ‖ u64 snapshotIndex ‖ u32 chunk   snapshot data chunks
//   0x04 ‖ u64 index                       log entries
//
// Chunks carry their snapshot's index so a record left over from another snapshot can never pass
// for part of the current one.

import { assert } from '../assert.ts';
import { readU32BE, writeU32BE } from '../bytes.ts';

export const KeyPrefix = {
  format: 0x00,
  hardState: 0x01,
  snapshotMeta: 0x02,
  snapshotChunk: 0x03,
  entry: 0x04,
} as const;

const u32Range = 2 ** 32;

export const formatKey: Uint8Array = Uint8Array.of(KeyPrefix.format);
export const hardStateKey: Uint8Array = Uint8Array.of(KeyPrefix.hardState);
export const snapshotMetaKey: Uint8Array = Uint8Array.of(KeyPrefix.snapshotMeta);

export const entryKeyBytes = 1 + 8;
export const chunkKeyBytes = 1 + 8 + 4;

function writeU64(key: Uint8Array, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `keys: ${value} is not a non-negative safe integer`);
  writeU32BE(key, offset, Math.floor(value / u32Range));
  writeU32BE(key, offset + 4, value % u32Range);
}

function readU64(key: Uint8Array, offset: number): number {
  return readU32BE(key, offset) * u32Range + readU32BE(key, offset + 4);
}

export function entryKey(index: number): Uint8Array {
  const key = new Uint8Array(entryKeyBytes);
  key[0] = KeyPrefix.entry;
  writeU64(key, 1, index);
  return key;
}

/** The index an entry key names; undefined when the key is not a well-formed entry key. */
export function entryKeyIndex(key: Uint8Array): number | undefined {
  if (key.byteLength !== entryKeyBytes || key[0] !== KeyPrefix.entry) return undefined;
  return readU64(key, 1);
}

export function chunkKey(snapshotIndex: number, chunk: number): Uint8Array {
  assert(
    Number.isInteger(chunk) && chunk >= 0 && chunk < u32Range,
    `keys: chunk number ${chunk} out of range`,
  );
  const key = new Uint8Array(chunkKeyBytes);
  key[0] = KeyPrefix.snapshotChunk;
  writeU64(key, 1, snapshotIndex);
  writeU32BE(key, 9, chunk);
  return key;
}

export function chunkKeyParts(key: Uint8Array): { snapshotIndex: number; chunk: number } | undefined {
  if (key.byteLength !== chunkKeyBytes || key[0] !== KeyPrefix.snapshotChunk) return undefined;
  return { snapshotIndex: readU64(key, 1), chunk: readU32BE(key, 9) };
}

/** The half-open key range [gte, lt) holding every key that starts with `prefix`. */
export function prefixRange(prefix: number): { gte: Uint8Array; lt: Uint8Array } {
  assert(prefix >= 0 && prefix < 0xff, `keys: prefix ${prefix} out of range`);
  return { gte: Uint8Array.of(prefix), lt: Uint8Array.of(prefix + 1) };
}

/** A readable name for a key, for error messages. */
export function describeKey(key: Uint8Array): string {
  const index = entryKeyIndex(key);
  if (index !== undefined) return `entry ${index}`;
  const chunk = chunkKeyParts(key);
  if (chunk !== undefined) return `snapshot chunk ${chunk.snapshotIndex}/${chunk.chunk}`;
  if (key.byteLength === 1) {
    switch (key[0]) {
      case KeyPrefix.format:
        return 'format record';
      case KeyPrefix.hardState:
        return 'hard state';
      case KeyPrefix.snapshotMeta:
        return 'snapshot meta';
    }
  }
  return 'unknown record';
}
