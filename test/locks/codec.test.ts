import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { RaftlockError } from '../../src/errors.ts';
import { entryBytesMax } from '../../src/limits.ts';
import { type Command, decodeEntry, type Entry, encodeEntry, LockTable } from '../../src/locks/index.ts';
import { CONNECTION, SESSION } from './harness.ts';

const packr = new Packr({ useRecords: false });

const every: Command[] = [
  { type: 'openSession', principal: 'alice', reconnectionWindowMs: 30_000 },
  { type: 'reconnect', session: 7, epoch: 3 },
  { type: 'connectionLost', session: 7, epoch: 3 },
  { type: 'closeSession', session: 7 },
  { type: 'expireSession', session: 7, epoch: 2 ** 40 },
  { type: 'acquire', session: 7, requestNo: 9, name: 'jobs/é', scope: SESSION },
  {
    type: 'acquire',
    session: 2 ** 52,
    requestNo: 10,
    name: 'x',
    scope: CONNECTION,
    deadlineMs: 1_700_000_000_000,
  },
  { type: 'cancel', session: 7, requestNo: 9 },
  { type: 'release', session: 7, requestNo: 11, name: 'jobs/é' },
  { type: 'release', session: 7, requestNo: 12, name: 'jobs/é', sequence: 99 },
];

function expectTypedError(run: () => unknown, codes: readonly string[]): void {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(RaftlockError);
    expect(codes).toContain((error as RaftlockError).code);
    return;
  }
  throw new Error('expected a typed error');
}

const arbCommand: fc.Arbitrary<Command> = fc.oneof(
  fc.record({
    type: fc.constant('openSession' as const),
    principal: fc.string({ minLength: 1, maxLength: 20 }),
    reconnectionWindowMs: fc.integer({ min: 0, max: 86_400_000 }),
  }),
  fc.record({
    type: fc.constantFrom('reconnect' as const, 'connectionLost' as const, 'expireSession' as const),
    session: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    epoch: fc.nat(),
  }),
  fc.record({ type: fc.constant('closeSession' as const), session: fc.integer({ min: 1 }) }),
  fc.record(
    {
      type: fc.constant('acquire' as const),
      session: fc.integer({ min: 1 }),
      requestNo: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      name: fc.string({ minLength: 1, maxLength: 40 }),
      scope: fc.constantFrom(SESSION, CONNECTION),
      deadlineMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    },
    { requiredKeys: ['type', 'session', 'requestNo', 'name', 'scope'] },
  ),
  fc.record({
    type: fc.constant('cancel' as const),
    session: fc.integer({ min: 1 }),
    requestNo: fc.integer({ min: 1 }),
  }),
  fc.record(
    {
      type: fc.constant('release' as const),
      session: fc.integer({ min: 1 }),
      requestNo: fc.integer({ min: 1 }),
      name: fc.string({ minLength: 1, maxLength: 40 }),
      sequence: fc.integer({ min: 1 }),
    },
    { requiredKeys: ['type', 'session', 'requestNo', 'name'] },
  ),
);

const arbEntry: fc.Arbitrary<Entry> = fc.record({
  timeMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  commands: fc.array(arbCommand, { maxLength: 8 }),
});

describe('codec', () => {
  it('round-trips every command type, with optional fields present and absent', () => {
    const entry: Entry = { timeMs: 1_700_000_000_123, commands: every };
    const decoded = decodeEntry(encodeEntry(entry));
    expect(decoded).toEqual(entry);
    for (const command of every)
      expect(decodeEntry(encodeEntry({ timeMs: 0, commands: [command] })).commands).toEqual([command]);
  });

  it('round-trips random entries', () => {
    fc.assert(
      fc.property(arbEntry, (entry) => {
        expect(decodeEntry(encodeEntry(entry))).toEqual(entry);
      }),
      { numRuns: 1_000 },
    );
  });

  it('is compact: a lock operation costs a couple of dozen bytes', () => {
    const acquire = encodeEntry({
      timeMs: 1_700_000_000_123,
      commands: [
        { type: 'acquire', session: 123_456, requestNo: 4_000, name: 'jobs/nightly', scope: SESSION },
      ],
    });
    expect(acquire.length).toBeLessThanOrEqual(40);
    const release = encodeEntry({
      timeMs: 1_700_000_000_123,
      commands: [{ type: 'release', session: 123_456, requestNo: 4_001, name: 'jobs/nightly' }],
    });
    expect(release.length).toBeLessThanOrEqual(40);
  });

  it('rejects invalid entries on encode with INVALID_ARGUMENT', () => {
    const bad = [
      { timeMs: -1, commands: [] },
      { timeMs: 0, commands: [{ type: 'acquire', session: 1, requestNo: 1, name: '', scope: SESSION }] },
      {
        timeMs: 0,
        commands: [{ type: 'acquire', session: 1, requestNo: 1, name: 'x'.repeat(513), scope: SESSION }],
      },
      { timeMs: 0, commands: [{ type: 'cancel', session: 1, requestNo: -1 }] },
      // A lone surrogate has no UTF-8 form (msgpackr would turn it into U+FFFD on the way through).
      { timeMs: 0, commands: [{ type: 'release', session: 1, requestNo: 1, name: 'a\uD800' }] },
      { timeMs: 0, commands: [{ type: 'nonsense' }] },
    ];
    // biome-ignore lint/suspicious/noExplicitAny: deliberately ill-typed input
    for (const entry of bad) expectTypedError(() => encodeEntry(entry as any), ['INVALID_ARGUMENT']);
    expectTypedError(
      () => encodeEntry({ timeMs: 0, commands: new Array(1025).fill({ type: 'closeSession', session: 1 }) }),
      ['LIMIT_EXCEEDED'],
    );
  });

  it('gives PROTOCOL_ERROR for bytes or shapes that are not an entry', () => {
    const shapes: unknown[] = [
      null,
      42,
      'entry',
      {},
      [],
      [1, 0],
      [2, 0, []], // unknown format version
      [1, 0, {}],
      [1, 0, [[]]],
      [1, 0, [[99, 1]]], // unknown opcode
      [1, 0, [[3]]], // too few fields
      [1, 0, [[3, 1, 2]]], // too many fields
      [1, 0, [[5, 1, 1, 7, 0]]], // name not a string
      [1, 0, [[5, '1', 1, 'x', 0]]],
      [1, 0, [[0, 'p', '30']]],
      [1, 0, [[7, 1, 1, 'x', 'seq']]],
    ];
    for (const shape of shapes) expectTypedError(() => decodeEntry(packr.pack(shape)), ['PROTOCOL_ERROR']);
    for (const bytes of [[], [0xc1], [0x93, 0x01], [0xdd, 0xff, 0xff, 0xff, 0xff]]) {
      expectTypedError(() => decodeEntry(Uint8Array.from(bytes)), ['PROTOCOL_ERROR']);
    }
    expectTypedError(() => decodeEntry(new Uint8Array(100_000).fill(0x91)), ['PROTOCOL_ERROR']); // deep nesting
    // A 64-bit integer decodes as a bigint, which is not a valid number field.
    expectTypedError(
      () => decodeEntry(Uint8Array.from([0x93, 0x01, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5, 0x90])),
      ['PROTOCOL_ERROR', 'INVALID_ARGUMENT'],
    );
    // biome-ignore lint/suspicious/noExplicitAny: deliberately ill-typed input
    expectTypedError(() => decodeEntry('bytes' as any), ['PROTOCOL_ERROR']);
  });

  it('gives INVALID_ARGUMENT for well-shaped commands with bad values, LIMIT_EXCEEDED for size', () => {
    const values: unknown[] = [
      [1, -5, []],
      [1, 1.5, []],
      [1, 0, [[5, 1, 1, '', 0]]],
      [1, 0, [[5, 1, 1, 'x', 7]]], // unknown scope code
      [1, 0, [[5, 0, 1, 'x', 0]]],
      [1, 0, [[5, 1, 1, 'x'.repeat(513), 0]]],
      [1, 0, [[0, 'p', -1]]],
      [1, 0, [[6, 1, 2 ** 53]]],
    ];
    for (const value of values) expectTypedError(() => decodeEntry(packr.pack(value)), ['INVALID_ARGUMENT']);
    expectTypedError(() => decodeEntry(new Uint8Array(entryBytesMax + 1)), ['LIMIT_EXCEEDED']);
    expectTypedError(() => decodeEntry(packr.pack([1, 0, new Array(1025).fill([3, 1])])), ['LIMIT_EXCEEDED']);
  });

  it('C7: random and mutated bytes either decode to a valid entry or throw a typed error', () => {
    const valid = encodeEntry({ timeMs: 12345, commands: every });
    const check = (bytes: Uint8Array): void => {
      let entry: Entry;
      try {
        entry = decodeEntry(bytes);
      } catch (error) {
        expect(error).toBeInstanceOf(RaftlockError);
        return;
      }
      // Whatever decodes is a valid entry: it re-encodes, and a table can apply it without crashing.
      expect(decodeEntry(encodeEntry(entry))).toEqual(entry);
      new LockTable().apply(1, entry);
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), check), { numRuns: 3_000 });
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(valid.length - 1), byte: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.nat(valid.length),
        (flips, cut) => {
          const bytes = Uint8Array.from(valid);
          for (const { at, byte } of flips) bytes[at] = byte;
          check(bytes);
          check(bytes.subarray(0, cut));
        },
      ),
      { numRuns: 3_000 },
    );
  });
});
