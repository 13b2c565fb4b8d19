import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeWalRecord, scanWal, WalFile, type WalOp, walBytesMin } from '../../src/storage/wal.ts';
import { tempDir } from './helpers.ts';

const put = (key: number, value: number[]): WalOp => ({
  type: 'put',
  key: Uint8Array.of(4, key),
  value: Uint8Array.from(value),
});
const del = (key: number): WalOp => ({ type: 'del', key: Uint8Array.of(4, key) });

/** Records 1..n of one pass laid end to end, then zeros, as a fresh file would hold them. */
function pass(generation: number, batches: WalOp[][], totalBytes = 4096): Buffer {
  const out = Buffer.alloc(totalBytes);
  let at = 0;
  batches.forEach((ops, i) => {
    const record = encodeWalRecord(generation, i + 1, ops);
    record.copy(out, at);
    at += record.byteLength;
  });
  return out;
}

function plain(records: WalOp[][]): unknown {
  return records.map((ops) =>
    ops.map((op) =>
      op.type === 'put'
        ? { type: op.type, key: [...op.key], value: [...op.value] }
        : { type: op.type, key: [...op.key] },
    ),
  );
}

const batches: WalOp[][] = [[put(1, [1, 2, 3]), put(2, [])], [del(1)], [put(3, [255, 0, 7]), del(2)]];

describe('sync log (wal.ts)', () => {
  it('C3: records read back as written, in order, puts and deletes with binary keys and values', () => {
    const scan = scanWal(pass(77, batches));
    expect(scan.generation).toBe(77);
    expect(plain(scan.records)).toEqual(plain(batches));
  });

  it('C3: a torn or damaged record ends the log there; the records before it stand', () => {
    const bytes = pass(5, batches);
    const third = encodeWalRecord(5, 3, batches[2]!);
    const end = scanWal(bytes).endOffset;
    bytes[end - 2] = bytes[end - 2]! ^ 0x10; // a bit of the last record's payload
    expect(plain(scanWal(bytes).records)).toEqual(plain(batches.slice(0, 2)));
    // Cut short: the last record's bytes stop half way.
    const cut = pass(5, batches).subarray(0, end - Math.floor(third.byteLength / 2));
    expect(scanWal(cut).records).toHaveLength(2);
    // Damage in the first record: nothing is read, not even the later, intact records.
    const first = pass(5, batches);
    first[8] = 9;
    expect(scanWal(first)).toMatchObject({ generation: null, records: [] });
  });

  it('C3: what an older pass left after the current one is never read as part of it', () => {
    // An older pass with four records, overwritten from offset 0 by a newer pass of two.
    const older = pass(1, [...batches, [put(9, [9])]]);
    const newer = pass(2, batches.slice(0, 2));
    const newerEnd = scanWal(newer).endOffset;
    newer.copy(older, 0, 0, newerEnd);
    const scan = scanWal(older);
    expect(scan.generation).toBe(2);
    expect(plain(scan.records)).toEqual(plain(batches.slice(0, 2)));
    // The same generation but a sequence number out of step (a record of another pass) also ends it.
    const stale = pass(3, batches.slice(0, 1));
    encodeWalRecord(3, 5, batches[1]!).copy(stale, scanWal(stale).endOffset);
    expect(scanWal(stale).records).toHaveLength(1);
  });

  it('a new file is the requested size of zeros; records that do not fit or are too large are refused', async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, 'log');
    const { wal, records } = await WalFile.open(path, walBytesMin);
    try {
      expect(records).toEqual([]);
      expect(statSync(path).size).toBe(walBytesMin);
      expect(readFileSync(path).every((byte) => byte === 0)).toBe(true);
      // More than a quarter of the file: refused, nothing planned.
      expect(wal.record([put(1, new Array(walBytesMin / 4).fill(1))])).toBeNull();
      expect(wal.recordsInPass).toBe(0);
      let written = 0;
      for (;;) {
        const record = wal.record([put(written & 0xff, new Array(1000).fill(written & 0xff))]);
        if (record === null) break;
        await wal.write(record);
        written += 1;
      }
      // It filled up: about 64 records of 1 KB, then the next one did not fit.
      expect(written).toBeGreaterThan(50);
      expect(wal.recordsInPass).toBe(written);
      expect(scanWal(readFileSync(path)).records).toHaveLength(written);
    } finally {
      wal.close();
    }
  });

  it('a new pass hides the old one at the next open; clear() leaves nothing to replay', async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, 'log');
    const first = await WalFile.open(path, walBytesMin);
    for (const ops of batches) await first.wal.write(first.wal.record(ops)!);
    first.wal.startPass();
    await first.wal.write(first.wal.record([put(8, [8])])!);
    first.wal.close();

    const second = await WalFile.open(path, walBytesMin);
    expect(plain(second.records)).toEqual(plain([[put(8, [8])]]));
    second.wal.clear();
    second.wal.close();
    expect((await WalFile.open(path, walBytesMin)).records).toEqual([]);
  });

  it('an existing file keeps its size, even a short one: nothing fits, nothing breaks', async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, 'log');
    writeFileSync(path, Buffer.alloc(100));
    const { wal, records } = await WalFile.open(path, walBytesMin);
    try {
      expect(records).toEqual([]);
      expect(wal.bytes).toBe(100);
      expect(wal.record([put(1, [1])])).toBeNull();
    } finally {
      wal.close();
    }
  });
});
