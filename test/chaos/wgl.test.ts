// The Wing–Gong–Lowe linearizability search of the chaos checker (scripts/chaos/wgl.ts), on known-good
// and known-bad histories, for a register (the textbook cases) and for the lock model.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkLinearizable,
  type Model,
  type MutexInput,
  mutexModel,
  type Operation,
} from '../../scripts/chaos/wgl.ts';

type RegisterInput = { kind: 'write'; value: number } | { kind: 'read'; value: number };
const register: Model<number, RegisterInput> = {
  init: 0,
  step: (state, input) => (input.kind === 'write' ? input.value : input.value === state ? state : null),
  key: (state) => String(state),
};
const op = <I>(input: I, callMs: number, returnMs: number): Operation<I> => ({ input, callMs, returnMs });
const write = (value: number, callMs: number, returnMs: number) =>
  op<RegisterInput>({ kind: 'write', value }, callMs, returnMs);
const read = (value: number, callMs: number, returnMs: number) =>
  op<RegisterInput>({ kind: 'read', value }, callMs, returnMs);

describe('WGL search on a register', () => {
  it('accepts a sequential history and concurrent reads of either value', () => {
    expect(checkLinearizable(register, [write(1, 0, 1), read(1, 2, 3)]).kind).toBe('ok');
    // A read overlapping the write may see the old or the new value.
    expect(checkLinearizable(register, [write(1, 0, 10), read(0, 1, 2), read(1, 3, 4)]).kind).toBe('ok');
  });

  it('rejects a stale read after the write completed, and a value flipping back', () => {
    const stale = checkLinearizable(register, [write(1, 0, 1), read(0, 2, 3)]);
    expect(stale.kind).toBe('violation');
    // Both reads overlap the write, but once a read saw 1 a later read cannot see 0.
    expect(checkLinearizable(register, [write(1, 0, 10), read(1, 1, 2), read(0, 3, 4)]).kind).toBe(
      'violation',
    );
  });

  it('lets an operation with an unknown outcome take effect late, or not at all', () => {
    const pending = write(1, 0, Number.POSITIVE_INFINITY);
    expect(checkLinearizable(register, [pending, read(0, 5, 6), read(1, 7, 8)]).kind).toBe('ok');
    expect(checkLinearizable(register, [pending, read(0, 5, 6)]).kind).toBe('ok');
    expect(checkLinearizable(register, [pending, read(1, 5, 6), read(0, 7, 8)]).kind).toBe('violation');
  });

  it('reports undecided when the step budget runs out', () => {
    const many = Array.from({ length: 12 }, (_, i) => write(i, 0, 100));
    expect(checkLinearizable(register, [...many, read(99, 200, 201)], { stepsMax: 50 }).kind).toBe('unknown');
  });
});

const acquire = (grant: string, sequence: number, callMs: number, returnMs: number) =>
  op<MutexInput>({ kind: 'acquire', grant, sequence }, callMs, returnMs);
const release = (grant: string, callMs: number, returnMs: number) =>
  op<MutexInput>({ kind: 'release', grant }, callMs, returnMs);

describe('WGL search on the lock model (S2, S8)', () => {
  it('S2: accepts handoffs, including an acquire that waited while the owner held the lock', () => {
    const history = [
      acquire('a', 1, 0, 1),
      acquire('b', 2, 2, 20), // b waits from 2 …
      release('a', 10, 11), // … until a releases
      release('b', 21, 22),
    ];
    expect(checkLinearizable(mutexModel, history).kind).toBe('ok');
  });

  it('S2: rejects two owners at once (b granted before a released)', () => {
    const history = [acquire('a', 1, 0, 1), acquire('b', 2, 2, 3), release('a', 10, 11)];
    const result = checkLinearizable(mutexModel, history);
    expect(result.kind).toBe('violation');
  });

  it('S8: rejects a later grant with a lower sequence, and a sequence granted twice', () => {
    const lower = [acquire('a', 5, 0, 1), release('a', 2, 3), acquire('b', 4, 4, 5)];
    expect(checkLinearizable(mutexModel, lower).kind).toBe('violation');
    const twice = [acquire('a', 5, 0, 1), release('a', 2, 3), acquire('b', 5, 4, 5)];
    expect(checkLinearizable(mutexModel, twice).kind).toBe('violation');
  });

  it('S8: concurrent acquires may be ordered by their sequences', () => {
    const history = [acquire('b', 2, 0, 10), acquire('a', 1, 1, 5), release('a', 6, 7), release('b', 11, 12)];
    expect(checkLinearizable(mutexModel, history).kind).toBe('ok');
  });

  it('a release with an unknown outcome may come as late as needed', () => {
    const history = [
      acquire('a', 1, 0, 1),
      release('a', 0, Number.POSITIVE_INFINITY), // the client lost track of it
      acquire('b', 2, 50, 60),
    ];
    expect(checkLinearizable(mutexModel, history).kind).toBe('ok');
  });

  it('S2: a long history (5,000 grants, one in ten released with an unknown outcome) is decided in few steps', () => {
    const history: Operation<MutexInput>[] = [];
    for (let i = 0; i < 5_000; i++) {
      const t = i * 10;
      history.push(acquire(`g${i}`, i + 1, t, t + 2));
      history.push(release(`g${i}`, t + 3, i % 10 === 0 ? Number.POSITIVE_INFINITY : t + 5));
    }
    const result = checkLinearizable(mutexModel, history);
    expect(result.kind).toBe('ok');
    expect(result.steps).toBeLessThan(100_000);
  });

  it('S2, S8: random valid lock histories pass; swapping two ordered grants’ sequences is caught', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 4 }), fc.nat(3), fc.nat(3), fc.nat(3)), {
          minLength: 2,
          maxLength: 40,
        }),
        (steps) => {
          // Build a real execution: grants one after another, each acquire/release around its moment.
          const history: Operation<MutexInput>[] = [];
          let t = 0;
          let sequence = 0;
          const grants: { acquire: number; okMs: number; callMs: number }[] = [];
          for (const [gap, before, after, holdMs] of steps) {
            sequence += gap;
            const grant = `g${sequence}`;
            const at = t + before + 1;
            history.push(acquire(grant, sequence, t, at + after));
            grants.push({ acquire: history.length - 1, okMs: at + after, callMs: t });
            const releaseAt = at + after + holdMs + 1;
            history.push(release(grant, releaseAt - before, releaseAt + after));
            t = releaseAt + after + 1;
          }
          expect(checkLinearizable(mutexModel, history).kind).toBe('ok');
          // Plant a bug: the first and last grants (strictly ordered in real time) trade sequences.
          const first = history[grants[0]!.acquire]!;
          const last = history[grants.at(-1)!.acquire]!;
          const bad = [...history];
          const swap = (target: Operation<MutexInput>, sequenceFrom: Operation<MutexInput>) => {
            const input = target.input as { kind: 'acquire'; grant: string; sequence: number };
            const other = sequenceFrom.input as { sequence: number };
            return { ...target, input: { ...input, sequence: other.sequence } };
          };
          bad[grants[0]!.acquire] = swap(first, last);
          bad[grants.at(-1)!.acquire] = swap(last, first);
          expect(checkLinearizable(mutexModel, bad).kind).toBe('violation');
        },
      ),
      { numRuns: 200 },
    );
  });
});
