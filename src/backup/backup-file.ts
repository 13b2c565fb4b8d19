// The backup file (`raftlock backup`, `GET /backup`; read back by `raftlock restore`): the lock table's
// snapshot at one applied index, behind a header that says what it is and how to check it.
//
//   magic    8 bytes   "RLBACKUP"
//   length   u32 BE    header bytes (≤ backupHeaderBytesMax)
//   header   JSON      BackupHeader, UTF-8
//   crc      u32 BE    CRC-32 (zlib) of magic ‖ length ‖ header
//   data     bytes     the table snapshot (src/locks/snapshot.ts), exactly header.dataBytes long,
//                      SHA-256 in header.dataSha256
//
// The header is JSON so an operator can read it with `head -c 600 FILE`; its CRC catches a flipped digit
// that would still parse. The data's SHA-256 catches damage anywhere in the table; decoding it with
// `LockTable.restore` (which checks every field and the table's invariants) is the last check. Nothing
// may follow the data: a longer file is as suspect as a shorter one.

import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { Packr, Unpackr } from 'msgpackr';
import { assert } from '../assert.ts';
import { type ErrorCode, RaftlockError } from '../errors.ts';
import { LockTable, snapshotFormatVersion } from '../locks/index.ts';
import { storageLimits } from '../storage/limits.ts';

/** Bumped when the layout above or the meaning of a header field changes incompatibly. */
export const backupFormatVersion = 1;
export const backupMagic = Buffer.from('RLBACKUP', 'ascii');
/** A header is a few hundred bytes; anything near this bound is not one. */
export const backupHeaderBytesMax = 64 * 1024;
const prefixBytes = backupMagic.byteLength + 4;

export interface BackupHeader {
  readonly format: 'raftlock-backup';
  readonly formatVersion: number;
  /** The `--cluster-id` of the cluster it was taken from. */
  readonly clusterId: string;
  /** The node that served it. */
  readonly nodeId: string;
  /** Raft index the table is at (the node's applied index after a ReadIndex barrier), and its term. */
  readonly index: number;
  readonly term: number;
  /** Wall-clock time of the node when it cut the snapshot, ISO 8601 (informational). */
  readonly createdAt: string;
  /** The lock table's own snapshot format version (src/locks/snapshot.ts). */
  readonly tableFormatVersion: number;
  readonly dataBytes: number;
  /** Hex SHA-256 of the data. */
  readonly dataSha256: string;
  /** Informational, checked against the data on read: the highest sequence granted, and counts. */
  readonly lastSequence: number;
  readonly locks: number;
  readonly sessions: number;
}

export type BackupProblem = 'truncated' | 'magic' | 'checksum' | 'header' | 'version' | 'table';

/** Bytes that are not a valid backup file: damaged, truncated, extended, or of an unknown version. */
export class BackupFileError extends RaftlockError {
  override readonly name = 'BackupFileError';
  readonly problem: BackupProblem;

  constructor(problem: BackupProblem, message: string, options?: { cause?: unknown }) {
    super('PROTOCOL_ERROR' satisfies ErrorCode, message, options);
    this.problem = problem;
  }
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The header and the data as the node cuts them; `table` is the table the data encodes. */
export function backupHeaderFor(options: {
  readonly clusterId: string;
  readonly nodeId: string;
  readonly index: number;
  readonly term: number;
  readonly createdAt: Date;
  readonly table: LockTable;
  readonly data: Uint8Array;
}): BackupHeader {
  const { table, data } = options;
  return {
    format: 'raftlock-backup',
    formatVersion: backupFormatVersion,
    clusterId: options.clusterId,
    nodeId: options.nodeId,
    index: options.index,
    term: options.term,
    createdAt: options.createdAt.toISOString(),
    tableFormatVersion: snapshotFormatVersion,
    dataBytes: data.byteLength,
    dataSha256: sha256Hex(data),
    lastSequence: table.lastSequence,
    locks: table.lockCount,
    sessions: table.sessionCount,
  };
}

/** Magic, length, header and CRC: everything that precedes the data. */
export function encodeBackupPrefix(header: BackupHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  assert(json.byteLength <= backupHeaderBytesMax, 'backup: header too large');
  const out = Buffer.alloc(prefixBytes + json.byteLength + 4);
  backupMagic.copy(out, 0);
  out.writeUInt32BE(json.byteLength, backupMagic.byteLength);
  json.copy(out, prefixBytes);
  out.writeUInt32BE(crc32(out.subarray(0, prefixBytes + json.byteLength)), prefixBytes + json.byteLength);
  return out;
}

export interface BackupContents {
  readonly header: BackupHeader;
  readonly data: Uint8Array;
  /** The table the data decodes to (already checked). */
  readonly table: LockTable;
}

/** Checks every byte of a backup file; a `BackupFileError` names what is wrong. */
export function decodeBackup(bytes: Uint8Array): BackupContents {
  const file = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (file.byteLength < prefixBytes)
    throw new BackupFileError('truncated', `backup: ${file.byteLength} bytes is shorter than any backup`);
  if (!file.subarray(0, backupMagic.byteLength).equals(backupMagic))
    throw new BackupFileError('magic', 'backup: not a raftlock backup file (no RLBACKUP magic)');
  const headerBytes = file.readUInt32BE(backupMagic.byteLength);
  if (headerBytes > backupHeaderBytesMax)
    throw new BackupFileError('header', `backup: header length ${headerBytes} is out of range`);
  const dataStart = prefixBytes + headerBytes + 4;
  if (file.byteLength < dataStart)
    throw new BackupFileError('truncated', 'backup: the file ends inside its header');
  const storedCrc = file.readUInt32BE(prefixBytes + headerBytes);
  if (crc32(file.subarray(0, prefixBytes + headerBytes)) !== storedCrc)
    throw new BackupFileError('checksum', 'backup: header checksum mismatch');
  const header = parseHeader(file.subarray(prefixBytes, prefixBytes + headerBytes));
  const data = file.subarray(dataStart);
  if (data.byteLength < header.dataBytes)
    throw new BackupFileError(
      'truncated',
      `backup: truncated: ${data.byteLength} of ${header.dataBytes} data bytes present`,
    );
  if (data.byteLength > header.dataBytes)
    throw new BackupFileError(
      'truncated',
      `backup: ${data.byteLength - header.dataBytes} bytes follow the data; the file was appended to or spliced`,
    );
  if (sha256Hex(data) !== header.dataSha256)
    throw new BackupFileError('checksum', 'backup: data checksum (SHA-256) mismatch');
  let table: LockTable;
  try {
    table = LockTable.restore(data);
  } catch (cause) {
    throw new BackupFileError(
      'table',
      `backup: the lock table does not decode: ${(cause as Error).message}`,
      {
        cause,
      },
    );
  }
  if (
    table.appliedIndex > header.index ||
    table.lastSequence !== header.lastSequence ||
    table.lockCount !== header.locks ||
    table.sessionCount !== header.sessions
  )
    throw new BackupFileError('table', 'backup: the lock table disagrees with the header');
  return { header, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), table };
}

function parseHeader(bytes: Buffer): BackupHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    throw new BackupFileError('header', 'backup: the header is not JSON', { cause });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new BackupFileError('header', 'backup: the header is not an object');
  const h = raw as Record<string, unknown>;
  if (h.format !== 'raftlock-backup') throw new BackupFileError('header', 'backup: not a raftlock backup');
  if (h.formatVersion !== backupFormatVersion)
    throw new BackupFileError(
      'version',
      `backup: format version ${String(h.formatVersion)}; this raftlock reads version ${backupFormatVersion}`,
    );
  const count = (name: string, min = 0): number => {
    const value = h[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min)
      throw new BackupFileError('header', `backup: header field ${name} must be an integer ≥ ${min}`);
    return value;
  };
  const text = (name: string): string => {
    const value = h[name];
    if (typeof value !== 'string')
      throw new BackupFileError('header', `backup: header field ${name} must be text`);
    return value;
  };
  const header: BackupHeader = {
    format: 'raftlock-backup',
    formatVersion: backupFormatVersion,
    clusterId: text('clusterId'),
    nodeId: text('nodeId'),
    index: count('index', 1),
    term: count('term', 1),
    createdAt: text('createdAt'),
    tableFormatVersion: count('tableFormatVersion', 1),
    dataBytes: count('dataBytes'),
    dataSha256: text('dataSha256'),
    lastSequence: count('lastSequence'),
    locks: count('locks'),
    sessions: count('sessions'),
  };
  if (header.dataBytes > storageLimits.snapshotBytesMax)
    throw new BackupFileError('header', `backup: ${header.dataBytes} data bytes exceed the snapshot bound`);
  if (!/^[0-9a-f]{64}$/.test(header.dataSha256))
    throw new BackupFileError('header', 'backup: header field dataSha256 is not a SHA-256');
  return header;
}

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
const packr = new Packr({ useRecords: false, moreTypes: false });
/** Position of `lastSequence` in the snapshot's header (see the layout in src/locks/snapshot.ts). */
const lastSequenceSlot = 3;

/**
 * The table of a backup as a new cluster starts from it: the old cluster's member addresses dropped
 * (the new cluster's membership comes from its own config, as at a first start), and the sequence
 * counter moved `skip` ahead, so that the next grant gets a sequence above every grant the old cluster
 * may have made after the backup (S8 across a restore). Checked both ways: the result decodes to a
 * table with the same locks, sessions and applied index, no members, and exactly the new counter.
 */
export function tableForNewCluster(data: Uint8Array, skip: number): Uint8Array {
  assert(Number.isSafeInteger(skip) && skip >= 0, 'backup: sequence skip must be a non-negative integer');
  const before = LockTable.restore(data);
  for (const id of [...before.members.keys()]) before.setMember(id, null);
  let out = before.snapshot();
  const next = before.lastSequence + skip;
  assert(Number.isSafeInteger(next), 'backup: sequence skip overflows');
  if (skip > 0) {
    // The table has no setter for its counter (only grants move it): patch the one header slot.
    const items = unpackr.unpack(out) as unknown[];
    assert(
      Array.isArray(items) && items[lastSequenceSlot] === before.lastSequence,
      'backup: snapshot layout',
    );
    items[lastSequenceSlot] = next;
    out = packr.pack(items);
  }
  const after = LockTable.restore(out);
  assert(
    after.lastSequence === next &&
      after.lockCount === before.lockCount &&
      after.sessionCount === before.sessionCount &&
      after.waiterCount === before.waiterCount &&
      after.appliedIndex === before.appliedIndex &&
      after.members.size === 0,
    'backup: preparing the table changed more than the counter and the members',
  );
  return out;
}
