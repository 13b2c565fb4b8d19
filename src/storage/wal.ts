// The sync log: how LevelStorage makes a batch durable without asking LevelDB to fsync.
//
// A synced LevelDB write appends to LevelDB's own log, so every fsync also commits a change of the file's
// size to the filesystem journal — and three nodes on one disk queue behind one journal. This file is
// allocated once, filled with zeros and synced, then only overwritten in place: a write opened with
// O_DSYNC at a fixed offset changes no metadata, so it costs the disk's flush and nothing more. On this
// machine that halved the time of a synced write (docs/storage.md, "The sync log").
//
// Each synced batch goes to LevelDB unsynced and, at the same time, here as one record. LevelDB's unsynced
// write survives a `kill -9` in the page cache; after a power loss this file still holds every batch
// acknowledged since LevelDB was last synced, and `LevelStorage.open` writes them into LevelDB again.
// Replaying a record that LevelDB already has is harmless: records are whole batches, replayed in order,
// and the only writes that are not recorded here (commit-only hard states, see `needsSync`) may be lost
// by design.
//
// Records are written from offset 0 on, one after the other; each carries the pass's generation (random
// per pass) and a sequence number that starts at 1 and grows by one. Recovery reads from offset 0 while
// records check out: the magic, the checksum, the first record's generation, the next sequence number.
// Whatever follows — zeros, a torn record, the rest of an older pass — ends the log. A new pass starts only
// after LevelDB was synced (at open, when the file is full, before a batch too large for it, at close), so
// nothing an older pass held is needed any more.
//
//   record: magic u32 ‖ generation u32 ‖ seq u32 ‖ payload length u32 ‖ crc32(header[0..16) ‖ payload) u32
//   payload: op count u32, then per op: type u8 (1 put, 2 del) ‖ key length u32 ‖ key ‖ [value length u32 ‖ value]

import { randomInt } from 'node:crypto';
import {
  closeSync,
  constants,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  write,
  writeSync,
} from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { assert } from '../assert.ts';

export type WalOp =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array };

export const walFileName = 'raftlock-sync.log';
/** Default size of the file; see docs/storage.md for how often a pass fills it. */
export const walBytesDefault = 8 * 1024 * 1024;
export const walBytesMin = 64 * 1024;
const magic = 0x524c5731; // "RLW1"
const headerBytes = 20;
const opPut = 1;
const opDel = 2;
/** A record larger than this share of the file is written by a synced LevelDB batch instead. */
const recordShareMax = 4;

/** The bytes of one record. */
export function encodeWalRecord(generation: number, seq: number, ops: readonly WalOp[]): Buffer {
  let payloadBytes = 4;
  for (const op of ops) {
    payloadBytes += 1 + 4 + op.key.byteLength;
    if (op.type === 'put') payloadBytes += 4 + op.value.byteLength;
  }
  const out = Buffer.allocUnsafe(headerBytes + payloadBytes);
  out.writeUInt32BE(magic, 0);
  out.writeUInt32BE(generation, 4);
  out.writeUInt32BE(seq, 8);
  out.writeUInt32BE(payloadBytes, 12);
  let at = headerBytes;
  out.writeUInt32BE(ops.length, at);
  at += 4;
  for (const op of ops) {
    out[at] = op.type === 'put' ? opPut : opDel;
    out.writeUInt32BE(op.key.byteLength, at + 1);
    out.set(op.key, at + 5);
    at += 5 + op.key.byteLength;
    if (op.type === 'put') {
      out.writeUInt32BE(op.value.byteLength, at);
      out.set(op.value, at + 4);
      at += 4 + op.value.byteLength;
    }
  }
  assert(at === out.byteLength, 'wal: record length mismatch');
  out.writeUInt32BE(recordCrc(out), 16);
  return out;
}

function recordCrc(record: Uint8Array): number {
  return crc32(record.subarray(headerBytes), crc32(record.subarray(0, 16)));
}

export interface WalScan {
  /** The generation of the pass found; null when the file holds no valid record at offset 0. */
  readonly generation: number | null;
  /** Each record's ops, in write order. */
  readonly records: WalOp[][];
  /** Where the valid records end. */
  readonly endOffset: number;
}

/** Reads the current pass: records from offset 0 while each checks out (see the file comment). */
export function scanWal(bytes: Uint8Array): WalScan {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: WalOp[][] = [];
  let generation: number | null = null;
  let at = 0;
  for (;;) {
    if (at + headerBytes > view.byteLength) break;
    if (view.readUInt32BE(at) !== magic) break;
    const recordGeneration = view.readUInt32BE(at + 4);
    const seq = view.readUInt32BE(at + 8);
    const payloadBytes = view.readUInt32BE(at + 12);
    if (generation !== null && recordGeneration !== generation) break;
    if (seq !== records.length + 1) break;
    if (payloadBytes < 4 || at + headerBytes + payloadBytes > view.byteLength) break;
    const record = view.subarray(at, at + headerBytes + payloadBytes);
    if (record.readUInt32BE(16) !== recordCrc(record)) break;
    const ops = decodePayload(record.subarray(headerBytes));
    if (ops === null) break;
    generation = recordGeneration;
    records.push(ops);
    at += record.byteLength;
  }
  return { generation, records, endOffset: at };
}

/** The ops of a payload whose checksum matched; null if its structure is still off. */
function decodePayload(payload: Buffer): WalOp[] | null {
  const count = payload.readUInt32BE(0);
  const ops: WalOp[] = [];
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (at + 5 > payload.byteLength) return null;
    const type = payload[at]!;
    const keyBytes = payload.readUInt32BE(at + 1);
    at += 5;
    if (at + keyBytes > payload.byteLength) return null;
    const key = payload.subarray(at, at + keyBytes);
    at += keyBytes;
    if (type === opDel) {
      ops.push({ type: 'del', key });
      continue;
    }
    if (type !== opPut || at + 4 > payload.byteLength) return null;
    const valueBytes = payload.readUInt32BE(at);
    at += 4;
    if (at + valueBytes > payload.byteLength) return null;
    ops.push({ type: 'put', key, value: payload.subarray(at, at + valueBytes) });
    at += valueBytes;
  }
  return at === payload.byteLength ? ops : null;
}

/**
 * The open file. One write at a time (LevelStorage writes one batch at a time); `record()` plans the next
 * record synchronously and `write()` puts it on disk.
 */
export class WalFile {
  private fd: number;
  readonly bytes: number;
  private generation = 0;
  private seq = 0;
  private offset = 0;

  private constructor(fd: number, bytes: number) {
    this.fd = fd;
    this.bytes = bytes;
    this.startPass();
  }

  /**
   * Opens the file at `path`, creating it (`bytes` of zeros, synced, then renamed into place) when
   * missing; an existing file keeps its size. Returns it with the records of its last pass, which the
   * caller must make durable elsewhere before it writes the first record of the new pass.
   */
  static async open(path: string, bytes: number): Promise<{ wal: WalFile; records: WalOp[][] }> {
    assert(Number.isSafeInteger(bytes) && bytes >= walBytesMin, `wal: size ${bytes} below ${walBytesMin}`);
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      createZeroed(path, bytes);
      size = bytes;
    }
    const handle = await openFile(path, 'r');
    let content: Buffer;
    try {
      content = await handle.readFile();
    } finally {
      await handle.close();
    }
    const { records } = scanWal(content);
    const fd = openSync(path, constants.O_RDWR | constants.O_DSYNC);
    // An existing file keeps its size, even a damaged, short one: records that do not fit go to LevelDB
    // synced (see `record`), which is slower but never wrong.
    return { wal: new WalFile(fd, size), records };
  }

  /** Records written in this pass. */
  get recordsInPass(): number {
    return this.seq;
  }

  /**
   * The next record for `ops`, or null when it does not fit in what is left of the file or is too large
   * for it: then the caller writes the batch to LevelDB synced and calls `startPass()`.
   */
  record(ops: readonly WalOp[]): { readonly bytes: Buffer; readonly offset: number } | null {
    const bytes = encodeWalRecord(this.generation, this.seq + 1, ops);
    if (bytes.byteLength > this.bytes / recordShareMax || this.offset + bytes.byteLength > this.bytes)
      return null;
    const offset = this.offset;
    this.seq += 1;
    this.offset += bytes.byteLength;
    return { bytes, offset };
  }

  /** Writes a record from `record()`; resolves once it is on disk (O_DSYNC). */
  write(record: { readonly bytes: Buffer; readonly offset: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      write(this.fd, record.bytes, 0, record.bytes.byteLength, record.offset, (error, written) => {
        if (error !== null) reject(error);
        else if (written !== record.bytes.byteLength) reject(new Error(`wal: short write ${written}`));
        else resolve();
      });
    });
  }

  /** `write()` on this thread: returns once the record is on disk (O_DSYNC). */
  writeSync(record: { readonly bytes: Buffer; readonly offset: number }): void {
    const written = writeSync(this.fd, record.bytes, 0, record.bytes.byteLength, record.offset);
    if (written !== record.bytes.byteLength) throw new Error(`wal: short write ${written}`);
  }

  /** A new pass from offset 0. Only once everything recorded so far is durable elsewhere. */
  startPass(): void {
    let generation = randomInt(1, 2 ** 32 - 1);
    while (generation === this.generation) generation = randomInt(1, 2 ** 32 - 1);
    this.generation = generation;
    this.seq = 0;
    this.offset = 0;
  }

  /** Ends the pass on disk too: zeroes the first header, so the next open finds nothing to replay. */
  clear(): void {
    writeSync(this.fd, Buffer.alloc(headerBytes), 0, headerBytes, 0);
    this.startPass();
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

function createZeroed(path: string, bytes: number): void {
  const temporary = `${path}.tmp`;
  rmSync(temporary, { force: true });
  const fd = openSync(temporary, 'w');
  try {
    const zeros = Buffer.alloc(Math.min(bytes, 1024 * 1024));
    for (let at = 0; at < bytes; at += zeros.byteLength) {
      writeSync(fd, zeros, 0, Math.min(zeros.byteLength, bytes - at), at);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
