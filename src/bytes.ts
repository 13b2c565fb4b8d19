// Big-endian unsigned integers in a Uint8Array, byte by byte. Not a DataView: keys, record headers and
// frame headers are often 64 bytes or less, which V8 keeps on the JS heap, and reading such an array's
// `.buffer` (as a DataView must) moves it off the heap — an allocation per call on hot paths.

import { assert } from './assert.ts';

/** The u16 at `at`; the caller checked the bytes are there. */
export function readU16BE(bytes: Uint8Array, at: number): number {
  return ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
}

/** The u32 at `at`; the caller checked the bytes are there. */
export function readU32BE(bytes: Uint8Array, at: number): number {
  return (bytes[at] as number) * 0x1000000 + ((readU16BE(bytes, at + 1) << 8) | (bytes[at + 3] as number));
}

export function writeU32BE(bytes: Uint8Array, at: number, value: number): void {
  assert(Number.isInteger(value) && value >= 0 && value <= 0xffffffff, `bytes: ${value} is not a u32`);
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}
