// Every stored value is a checksummed record:
//
//   u32 crc ‖ u8 recordVersion ‖ payload
//
// where crc = CRC-32 (zlib's, IEEE polynomial) over key ‖ recordVersion ‖ payload. Covering the key
// means a value that ends up under another key (a misdirected write, a bit flip in the key) fails
// the check too, not only a flipped payload byte. CRC-32 detects every burst error up to 32 bits and
// random damage with odds 2^-32 — it guards against disk and software faults, not against an
// attacker, who could write the directory anyway.

import { crc32 } from 'node:zlib';
import { assert } from '../assert.ts';
import { readU32BE, writeU32BE } from '../bytes.ts';
import { StorageCorruptionError } from './errors.ts';
import { describeKey } from './keys.ts';

export const recordVersion = 1;
export const recordHeaderBytes = 4 + 1;

function checksum(key: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(key));
}

export function encodeRecord(key: Uint8Array, payload: Uint8Array): Uint8Array {
  const record = new Uint8Array(recordHeaderBytes + payload.byteLength);
  record[4] = recordVersion;
  record.set(payload, recordHeaderBytes);
  const crc = checksum(key, record.subarray(4));
  writeU32BE(record, 0, crc);
  // Both sides of the boundary: what we hand to LevelDB must decode to what we were given.
  assert(
    decodeRecord(key, record).byteLength === payload.byteLength,
    'records: encoded record does not verify',
  );
  return record;
}

/** The payload of a record read back from disk, or a `StorageCorruptionError` naming the key. */
export function decodeRecord(key: Uint8Array, record: Uint8Array): Uint8Array {
  if (record.byteLength < recordHeaderBytes)
    corrupt(key, `record of ${record.byteLength} bytes is shorter than its header`);
  const stored = readU32BE(record, 0);
  const body = record.subarray(4);
  const actual = checksum(key, body);
  if (stored !== actual)
    corrupt(key, `checksum mismatch (stored ${hex32(stored)}, computed ${hex32(actual)})`);
  if (body[0] !== recordVersion) corrupt(key, `unknown record version ${body[0]}`);
  return record.subarray(recordHeaderBytes);
}

function corrupt(key: Uint8Array, detail: string): never {
  throw new StorageCorruptionError({ record: describeKey(key), key, detail });
}

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}
