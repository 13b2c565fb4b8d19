// S12: the lock table decides acquire permissions at apply time, from the grants carried by the
// session's openSession command; a denial changes nothing. Patterns, codec and snapshot round trips.

import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeEntry, encodeEntry, LockTable } from '../../src/locks/index.ts';
import {
  coversPrefix,
  type Grants,
  grantPatternsMax,
  grantsProblem,
  patternMatches,
} from '../../src/locks/permissions.ts';
import { Harness, SESSION } from './harness.ts';
import { modelMayAcquire } from './model.ts';

const worker: Grants = { acquire: ['jobs/*', 'exact'], read: ['jobs/*'], admin: false };

function openWith(h: Harness, grants: Grants | undefined, principal = 'w'): number {
  const { result } = h.run({ type: 'openSession', principal, reconnectionWindowMs: 1_000, grants });
  if (result.kind !== 'opened') throw new Error(JSON.stringify(result));
  return result.session;
}

describe('S12 patterns', () => {
  it('S12: `*` matches any run of characters, everything else itself', () => {
    const cases: [string, string, boolean][] = [
      ['*', '', true],
      ['*', 'anything/at/all', true],
      ['jobs/*', 'jobs/', true],
      ['jobs/*', 'jobs/a/b', true],
      ['jobs/*', 'job', false],
      ['jobs/*', 'xjobs/a', false],
      ['*.lock', 'a.lock', true],
      ['*.lock', 'a.locks', false],
      ['a*b*c', 'abc', true],
      ['a*b*c', 'aXbYc', true],
      ['a*b*c', 'acb', false],
      ['a*a', 'a', false],
      ['exact', 'exact', true],
      ['exact', 'exactly', false],
      ['**', 'x', true],
    ];
    for (const [pattern, name, expected] of cases)
      expect(patternMatches(pattern, name), `${pattern} ~ ${name}`).toBe(expected);
  });

  it('S12: agrees with a regular-expression reading of the pattern on random inputs', () => {
    const text = fc.string({ unit: fc.constantFrom('a', 'b', '/', '*'), maxLength: 8 });
    fc.assert(
      fc.property(
        text,
        text.map((t) => t.replaceAll('*', '')),
        (pattern, name) => {
          const grants = { acquire: [pattern], read: [], admin: false };
          expect(patternMatches(pattern, name)).toBe(modelMayAcquire(grants, name));
        },
      ),
      { numRuns: 5_000 },
    );
  });

  it('S15: a read pattern covers a prefix only when it is a literal followed by one trailing `*`', () => {
    expect(coversPrefix(['*'], '')).toBe(true);
    expect(coversPrefix(['jobs/*'], 'jobs/')).toBe(true);
    expect(coversPrefix(['jobs/*'], 'jobs/a')).toBe(true);
    expect(coversPrefix(['jobs/*'], 'job')).toBe(false);
    expect(coversPrefix(['jobs/*'], '')).toBe(false);
    expect(coversPrefix(['*/x'], 'a')).toBe(false);
    expect(coversPrefix([], '')).toBe(false);
  });

  it('S12: grants are bounded and well-formed', () => {
    expect(grantsProblem(worker)).toBeNull();
    expect(grantsProblem({ acquire: [''], read: [], admin: false })).toMatch(/empty/);
    expect(
      grantsProblem({ acquire: new Array(grantPatternsMax + 1).fill('a'), read: [], admin: false }),
    ).toMatch(/at most/);
    expect(grantsProblem({ acquire: ['x'.repeat(600)], read: [], admin: false })).toMatch(/bytes/);
    expect(grantsProblem({ acquire: [], read: [], admin: 'yes' })).toMatch(/admin/);
  });
});

describe('S12 permission checks in the lock table', () => {
  it('S12: an acquire outside the grants is PERMISSION_DENIED and changes no lock; a retry gets the same answer', () => {
    const h = new Harness();
    const w = openWith(h, worker);
    expect(h.acquire(w, 1, 'jobs/1').result).toMatchObject({ kind: 'granted' });
    const before = h.table.listLocks();
    const sequenceBefore = h.table.lastSequence;
    const denied = h.acquire(w, 2, 'payroll');
    expect(denied.result).toMatchObject({ kind: 'error', code: 'PERMISSION_DENIED' });
    expect(denied.effects).toEqual([]);
    expect(h.table.listLocks()).toEqual(before);
    expect(h.table.lastSequence).toBe(sequenceBefore);
    expect(h.acquire(w, 2, 'payroll').result).toMatchObject({ kind: 'error', code: 'PERMISSION_DENIED' });
    expect(h.acquire(w, 3, 'exact').result).toMatchObject({ kind: 'granted' });
    expect(h.acquire(w, 4, 'exactly').result).toMatchObject({ kind: 'error', code: 'PERMISSION_DENIED' });
  });

  it('S12: a denied session cannot even wait behind an owner, and releasing stays harmless', () => {
    const h = new Harness();
    const admin = openWith(h, undefined, 'admin');
    const w = openWith(h, worker);
    h.acquire(admin, 1, 'payroll');
    expect(h.acquire(w, 1, 'payroll').result).toMatchObject({ kind: 'error', code: 'PERMISSION_DENIED' });
    expect(h.table.getLock('payroll')?.waiters).toEqual([]);
    expect(h.run({ type: 'release', session: w, requestNo: 2, name: 'payroll' }).result).toEqual({
      kind: 'unlocked',
      owned: false,
    });
    expect(h.table.getLock('payroll')?.owner).toBe(admin);
  });

  it('S12: sessions without grants (opened before permissions existed) may acquire anything', () => {
    const h = new Harness();
    const s = openWith(h, undefined);
    expect(h.acquire(s, 1, 'anything').result).toMatchObject({ kind: 'granted' });
    expect(h.table.getSession(s)?.grants).toBeNull();
  });

  it('S12: grants survive the codec and a snapshot, and every replica decides the same', () => {
    const entry = {
      timeMs: 5,
      commands: [
        { type: 'openSession' as const, principal: 'w', reconnectionWindowMs: 10, grants: worker },
        { type: 'openSession' as const, principal: 'legacy', reconnectionWindowMs: 10 },
        { type: 'openSession' as const, principal: 'w2', reconnectionWindowMs: 10, grants: worker },
      ],
    };
    const decoded = decodeEntry(encodeEntry(entry));
    expect(decoded.commands[0]).toEqual(entry.commands[0]);
    expect(decoded.commands[1]).toEqual(entry.commands[1]);
    const a = new LockTable();
    a.apply(1, decoded);
    const b = LockTable.restore(a.snapshot());
    expect(b.getSession(1)?.grants).toEqual(worker);
    expect(b.getSession(2)?.grants).toBeNull();
    expect(b.getSession(3)?.grants).toEqual(worker);
    expect(Buffer.from(b.snapshot()).equals(Buffer.from(a.snapshot()))).toBe(true);
    const acquire = {
      timeMs: 6,
      commands: [{ type: 'acquire' as const, session: 1, requestNo: 1, name: 'x', scope: SESSION }],
    };
    expect(a.apply(2, acquire).results).toEqual(b.apply(2, acquire).results);
    expect(a.apply(3, acquire).results[0]).toMatchObject({ code: 'PERMISSION_DENIED' });
  });

  it('S12: malformed grants in an entry are refused by the codec (C7)', () => {
    const packr = new Packr({ useRecords: false });
    for (const grants of [
      [['*'], ['*']],
      [['*'], ['*'], 2],
      [[1], [], 0],
      'all',
      [['x'.repeat(600)], [], 0],
    ]) {
      const bytes = packr.pack([1, 0, [[0, 'p', 10, grants]]]);
      expect(() => decodeEntry(bytes)).toThrow();
    }
  });

  it('S12: a version 1 snapshot (before grants) restores with every permission', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    // version, appliedIndex, nowMs, lastSequence, lastSessionId, sessions, locks; one session; its lists.
    const v1 = packr.pack([1, 7, 100, 0, 1, 1, 0, 1, 'old', 1000, 0, 1, -1, 0, 0, 0, 0]);
    const table = LockTable.restore(v1);
    expect(table.getSession(1)).toMatchObject({ principal: 'old', grants: null });
  });
});
