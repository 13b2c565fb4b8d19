import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { RaftlockError } from '../../src/errors.ts';
import { LockTable } from '../../src/locks/index.ts';
import { CONNECTION, Harness, SESSION } from './harness.ts';

function busyTable(): Harness {
  const h = new Harness({ dedupeResultsPerSessionMax: 3 });
  const [a, b, c] = [h.open('a'), h.open('b'), h.open('c')];
  h.acquire(b, 1, 'x'); // lock x created first, by b
  h.acquire(a, 1, 'y');
  h.acquire(a, 2, 'x', SESSION, 90_000);
  h.acquire(c, 1, 'x', CONNECTION);
  h.acquire(c, 2, 'x');
  h.release(b, 2, 'x'); // a now owns y (granted first) then x: its grant order differs from lock order
  h.acquire(b, 3, 'y', SESSION, 80_000);
  h.release(c, 3, 'none');
  h.cancel(c, 7);
  h.lost(b, 0);
  return h;
}

describe('snapshot', () => {
  it('S8/C4: restores iteration orders exactly, so a restored table hands locks on in the same order', () => {
    const h = busyTable();
    const a = 1;
    const bytes = h.table.snapshot();
    const restored = LockTable.restore(bytes, { limits: h.table.limits });
    const entry = { timeMs: h.timeMs, commands: [{ type: 'closeSession', session: a } as const] };
    const want = h.table.apply(h.index + 1, entry);
    const got = restored.apply(h.index + 1, entry);
    expect(got).toEqual(want);
    expect(want.effects.map((e) => (e.kind === 'released' ? e.name : e.kind))).toEqual([
      'y',
      'granted',
      'x',
      'granted',
      'sessionEnded',
    ]);
    expect(Buffer.from(restored.snapshot()).equals(Buffer.from(h.table.snapshot()))).toBe(true);
  });

  it("C4: the streaming writer gives exactly msgpackr's bytes for the same items", () => {
    // Strings around every header and encoding boundary (ASCII, 2-, 3- and 4-byte UTF-8, the hand loop
    // below 64 chars and Buffer#write above), integers around every width, and times past 32 bits.
    const strings = fc.oneof(
      fc.string({ maxLength: 70 }),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.string({ minLength: 250, maxLength: 300 }),
      fc.string({ unit: 'binary', maxLength: 90 }),
    );
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
    const packr = new Packr({ useRecords: false, moreTypes: false });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(strings, fc.integer({ min: 0, max: 2 ** 40 })), { minLength: 1, maxLength: 20 }),
        (opens) => {
          const h = new Harness();
          h.timeMs = 1_763_900_000_000;
          let session = 0;
          for (const [text, windowMs] of opens) {
            // Refused commands (invalid principal or name) are fine: what applied is what is written.
            h.run({ type: 'openSession', principal: text, reconnectionWindowMs: windowMs });
            session++;
            h.run({ type: 'acquire', session, requestNo: 1, name: text, scope: 'UNLOCK_ON_SESSION_LOSS' });
            if (session % 2 === 0) h.run({ type: 'connectionLost', session, epoch: 0 });
          }
          const bytes = h.table.snapshot();
          expect(Buffer.from(packr.pack(unpackr.unpack(bytes))).equals(Buffer.from(bytes))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
    const big = busyTable().table.snapshot();
    expect(Buffer.from(packr.pack(unpackr.unpack(big))).equals(Buffer.from(big))).toBe(true);
  });

  it('an empty table snapshots and restores', () => {
    const empty = new LockTable().snapshot();
    expect(Buffer.from(LockTable.restore(empty).snapshot()).equals(Buffer.from(empty))).toBe(true);
  });

  it('C7: random and mutated snapshot bytes restore to a consistent table or throw PROTOCOL_ERROR', () => {
    const valid = busyTable().table.snapshot();
    const check = (bytes: Uint8Array): void => {
      let table: LockTable;
      try {
        table = LockTable.restore(bytes, { limits: { dedupeResultsPerSessionMax: 3 } });
      } catch (error) {
        expect(error).toBeInstanceOf(RaftlockError);
        expect((error as RaftlockError).code).toBe('PROTOCOL_ERROR');
        return;
      }
      table.assertInvariants();
      table.apply(table.appliedIndex + 1, { timeMs: table.nowMs + 100_000, commands: [] });
      table.assertInvariants();
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), check), { numRuns: 2_000 });
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(valid.length - 1), byte: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 3,
        }),
        (flips) => {
          const bytes = Uint8Array.from(valid);
          for (const { at, byte } of flips) bytes[at] = byte;
          check(bytes);
        },
      ),
      { numRuns: 3_000 },
    );
    // Structurally valid msgpack with inconsistent content.
    const packr = new Packr({ useRecords: false });
    for (const shape of [
      [],
      [1],
      [2, 0, 0, 0, 0, 0, 0],
      [1, 0, 0, 0, 0, 1e9, 0],
      [1, 0, 0, 0, 0, 0, 1, 'x', 1, 1, 0],
    ]) {
      check(packr.pack(shape));
    }
  });
});
