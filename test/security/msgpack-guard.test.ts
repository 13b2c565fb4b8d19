// C7: untrusted MessagePack is checked for shape before msgpackr allocates anything.

import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { clientFrameShape, msgpackProblem, unpackUntrusted } from '../../src/security/msgpack-guard.ts';
import { decodeHandshakeFrame } from '../../src/transport/handshake.ts';

const packr = new Packr({ useRecords: false });
const limits = { depthMax: 8, itemsMax: 100 };

describe('msgpack guard', () => {
  it('C7: accepts every frame the client protocol sends', () => {
    for (const frame of [
      { t: 'hello', v: 1, principal: 'control', password: 'password', session: { id: 3, token: 'x' } },
      { t: 'req', id: 7, op: 'lock', requestNo: 1, name: 'jobs/é', scope: 'UNLOCK_ON_SESSION_LOSS' },
      { t: 'req', id: 8, op: 'locks', prefix: '', limit: 10_000 },
      { big: 2 ** 52, neg: -5, f: 1.5, bin: Buffer.from([1, 2]), none: null, yes: true, list: [] },
      // What the client library sends: absent optional fields travel as msgpackr's `undefined`.
      {
        t: 'req',
        id: 9,
        op: 'lock',
        requestNo: 2,
        name: 'x',
        scope: 'UNLOCK_ON_SESSION_LOSS',
        timeoutMs: undefined,
      },
    ]) {
      expect(msgpackProblem(packr.pack(frame), clientFrameShape)).toBeNull();
    }
  });

  it('C7: refuses counts and lengths that run past the frame (no 4 GiB allocation from 5 bytes)', () => {
    for (const bytes of [
      [0xdd, 0xff, 0xff, 0xff, 0xff], // array32 of 2^32-1
      [0xdf, 0x00, 0x01, 0x00, 0x00, 0x01], // map32 of 65536 pairs
      [0xdb, 0xff, 0xff, 0xff, 0xff, 0x41], // str32
      [0xc6, 0x7f, 0xff, 0xff, 0xff], // bin32
      [0x92, 0x01], // array of 2 with 1 element
      [0xcb, 0x00], // truncated float64
    ]) {
      expect(msgpackProblem(Uint8Array.from(bytes), limits)).not.toBeNull();
    }
  });

  it('C7: refuses deep nesting without recursing (64 KiB of nested arrays)', () => {
    const deep = new Uint8Array(64 * 1024).fill(0x91);
    expect(msgpackProblem(deep, clientFrameShape)).toMatch(/deeper|more than|truncated/);
    const nine = Uint8Array.from([...new Array(9).fill(0x91), 0x01]);
    expect(msgpackProblem(nine, limits)).toMatch(/deeper/);
    const eight = Uint8Array.from([...new Array(8).fill(0x91), 0x01]);
    expect(msgpackProblem(eight, limits)).toBeNull();
  });

  it('C7: refuses extension types, 0xc1 and trailing bytes', () => {
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x01, 0x00]), limits)).toMatch(/extension/);
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x00, 0x01]), limits)).toMatch(/extension/);
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x00]), limits)).not.toBeNull();
    expect(msgpackProblem(Uint8Array.from([0xd4, 0x00, 0x00]), limits)).toBeNull();
    expect(msgpackProblem(Uint8Array.from([0xc7, 0x01, 0x78, 0x00]), limits)).toMatch(/extension/);
    expect(msgpackProblem(packr.pack(new Date(0)), limits)).toMatch(/extension/);
    expect(msgpackProblem(Uint8Array.from([0xc1]), limits)).toMatch(/0xc1/);
    expect(msgpackProblem(Uint8Array.from([0x01, 0x02]), limits)).toMatch(/trailing/);
    expect(msgpackProblem(new Uint8Array(0), limits)).toMatch(/truncated/);
  });

  it('C7: bounds the number of values', () => {
    expect(msgpackProblem(packr.pack(new Array(100).fill(0)), limits)).toMatch(/more than 100/);
    expect(msgpackProblem(packr.pack(new Array(99).fill(0)), limits)).toBeNull();
  });

  it('C7: any byte string either passes the guard and decodes, or is one PROTOCOL_ERROR', () => {
    const unpackr = { unpack: (bytes: Uint8Array) => packr.unpack(bytes) };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        try {
          unpackUntrusted(unpackr, bytes, clientFrameShape);
        } catch (error) {
          expect((error as { code?: string }).code).toBe('PROTOCOL_ERROR');
        }
        // The peer port's decoder never throws: a refused frame is simply not a handshake frame.
        expect(() => decodeHandshakeFrame(bytes)).not.toThrow();
      }),
      { numRuns: 5_000 },
    );
  });

  it('C7: reads 8-, 16- and 32-bit lengths and counts exactly: a value of each width passes, one byte short is refused', () => {
    const wide = { depthMax: 8, itemsMax: 200_000 };
    for (const value of [
      'x'.repeat(200), // str 8
      'y'.repeat(300), // str 16 (0x012c: both bytes matter)
      'z'.repeat(70_000), // str 32 (0x00011170)
      Buffer.alloc(200, 1), // bin 8
      Buffer.alloc(300, 2), // bin 16
      Buffer.alloc(70_000, 3), // bin 32
      Array.from({ length: 300 }, (_, i) => i), // array 16
      Array.from({ length: 70_000 }, () => 0), // array 32
      Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, i])), // map 16
      Object.fromEntries(Array.from({ length: 70_000 }, (_, i) => [`k${i}`, 0])), // map 32
    ]) {
      const bytes = new Packr({ useRecords: false, variableMapSize: true }).pack(value);
      expect(msgpackProblem(bytes, wide), `${bytes[0]?.toString(16)} of ${bytes.length} bytes`).toBeNull();
      expect(msgpackProblem(bytes.subarray(0, bytes.length - 1), wide)).not.toBeNull();
    }
    // The high byte of a 32-bit length counts too: 2^24 + 5 declared, 5 present.
    for (const head of [0xc6, 0xdb, 0xdd, 0xdf]) {
      const crafted = Uint8Array.of(head, 0x01, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5);
      expect(msgpackProblem(crafted, wide), head.toString(16)).not.toBeNull();
    }
  });

  it('C7: whatever msgpackr encodes within the limits passes (no false refusals)', () => {
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.integer(),
        fc.double({ noNaN: true }),
        fc.string(),
        fc.boolean(),
        fc.constant(null),
        fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b)),
        fc.array(tie('node'), { maxLength: 4 }),
        fc.dictionary(fc.string({ maxLength: 4 }), tie('node'), { maxKeys: 4 }),
      ),
    })).node;
    fc.assert(
      fc.property(value, (v) => {
        expect(msgpackProblem(packr.pack(v), { depthMax: 64, itemsMax: 100_000 })).toBeNull();
      }),
      { numRuns: 2_000 },
    );
  });
});
