// The big-endian helpers in src/bytes.ts agree with DataView, which is what they replace on hot paths.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readU16BE, readU32BE, writeU32BE } from '../src/bytes.ts';

describe('bytes', () => {
  it('reads and writes u16 and u32 exactly as DataView does, at any offset', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 5 }), (value, at) => {
        const bytes = new Uint8Array(10);
        writeU32BE(bytes, at, value);
        const view = new DataView(bytes.buffer);
        expect(view.getUint32(at)).toBe(value);
        expect(readU32BE(bytes, at)).toBe(value);
        expect(readU16BE(bytes, at)).toBe(view.getUint16(at));
      }),
    );
    for (const value of [0, 1, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff]) {
      const bytes = new Uint8Array(4);
      writeU32BE(bytes, 0, value);
      expect(readU32BE(bytes, 0)).toBe(value);
    }
  });

  it('refuses to write what is not a u32', () => {
    for (const value of [-1, 2 ** 32, 1.5, Number.NaN]) {
      expect(() => writeU32BE(new Uint8Array(4), 0, value)).toThrow(/not a u32/);
    }
  });
});
