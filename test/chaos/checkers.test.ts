// The chaos run's checkers (scripts/chaos/checkers.ts) on hand-made histories: a clean one passes every
// check, and each planted anomaly is caught by the check that stands for its rule.

import { describe, expect, it } from 'vitest';
import {
  checkFence,
  checkHistory,
  checkLinearizability,
  checkOwnership,
  checkReads,
  checkRecovery,
  checkSequences,
  checkSurvival,
} from '../../scripts/chaos/checkers.ts';
import { grantsOf, type HistoryEvent } from '../../scripts/chaos/history.ts';

/** One worker's full cycle on `name`: acquire, a guarded write, unlock answered "owned". */
function cycle(
  process: number,
  name: string,
  sequence: number,
  t: { invoke: number; ok: number; write: number; unlock: number; done: number },
  options: { writeAccepted?: boolean; owned?: boolean } = {},
): HistoryEvent[] {
  const session = process + 100;
  return [
    {
      f: 'acquire',
      type: 'invoke',
      process,
      session,
      name,
      scope: 'UNLOCK_ON_SESSION_LOSS',
      timeMs: t.invoke,
    },
    {
      f: 'acquire',
      type: 'ok',
      process,
      session,
      name,
      scope: 'UNLOCK_ON_SESSION_LOSS',
      sequence,
      timeMs: t.ok,
    },
    {
      f: 'write',
      type: options.writeAccepted === false ? 'fail' : 'ok',
      process,
      session,
      name,
      sequence,
      timeMs: t.write,
    },
    { f: 'release', type: 'invoke', process, session, name, sequence, timeMs: t.unlock },
    {
      f: 'end',
      type: 'ok',
      process,
      session,
      name,
      sequence,
      reason: 'unlocked',
      lastOwnedMs: t.unlock,
      timeMs: t.unlock,
    },
    {
      f: 'release',
      type: 'ok',
      process,
      session,
      name,
      sequence,
      owned: options.owned ?? true,
      timeMs: t.done,
    },
  ];
}

const byTime = (events: HistoryEvent[]) => [...events].sort((a, b) => a.timeMs - b.timeMs);

/** Two workers taking turns on one lock, b waiting while a holds it. */
const clean = byTime([
  ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 2, unlock: 5, done: 6 }),
  ...cycle(1, 'x', 12, { invoke: 3, ok: 7, write: 8, unlock: 9, done: 10 }),
  ...cycle(0, 'y', 11, { invoke: 7, ok: 8, write: 9, unlock: 12, done: 13 }),
]);

describe('chaos checkers', () => {
  it('S2, S8, S10: a clean history passes every check', () => {
    for (const check of checkHistory(clean))
      expect(check, check.name).toMatchObject({ ok: true, anomalies: [] });
  });

  it('S10: a guarded write rejected as stale is an anomaly (planted: a stale holder wrote after a newer grant)', () => {
    const stale = byTime([
      ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 20, unlock: 21, done: 22 }, { writeAccepted: false }),
      ...cycle(1, 'x', 12, { invoke: 3, ok: 7, write: 8, unlock: 9, done: 10 }),
    ]);
    const fence = checkFence(stale);
    expect(fence.ok).toBe(false);
    expect(fence.anomalies[0]).toMatch(/sequence 10 while isOwned\(\) was true, after sequence 12/);
    // The same run seen through isOwned(): session 100 thought it owned x until 21, session 101 from 7.
    expect(checkOwnership(grantsOf(stale)).ok).toBe(false);
    // And the mutex cannot explain a's unlock answered "owned" at 21 after b's grant at 7.
    expect(checkLinearizability(grantsOf(stale)).ok).toBe(false);
  });

  it('S8: the fence catches a resource that accepted a lower sequence', () => {
    const events: HistoryEvent[] = [
      { f: 'write', type: 'ok', process: 0, session: 1, name: 'x', sequence: 12, timeMs: 1 },
      { f: 'write', type: 'ok', process: 1, session: 2, name: 'x', sequence: 10, timeMs: 2 },
    ];
    expect(checkFence(events).anomalies).toEqual(['x: accepted sequence 10 after 12 (t=2.0)']);
  });

  it('S8: a grant acknowledged before another was asked for must carry the lower sequence', () => {
    const inverted = byTime([
      ...cycle(0, 'x', 12, { invoke: 0, ok: 1, write: 2, unlock: 5, done: 6 }),
      ...cycle(1, 'x', 10, { invoke: 7, ok: 8, write: 9, unlock: 10, done: 11 }),
    ]);
    expect(checkSequences(grantsOf(inverted)).ok).toBe(false);
    expect(checkLinearizability(grantsOf(inverted)).ok).toBe(false);
    const duplicate = byTime([
      ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 2, unlock: 5, done: 6 }),
      ...cycle(1, 'y', 10, { invoke: 0, ok: 1, write: 2, unlock: 5, done: 6 }),
    ]);
    expect(checkSequences(grantsOf(duplicate)).anomalies[0]).toMatch(/sequence 10 granted twice/);
  });

  it('S10: overlapping isOwned() intervals of two sessions are caught even when every write was accepted', () => {
    const overlap = byTime([
      ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 2, unlock: 8, done: 9 }),
      ...cycle(1, 'x', 12, { invoke: 3, ok: 7, write: 7.5, unlock: 10, done: 11 }),
    ]);
    expect(checkFence(overlap).ok).toBe(true);
    const ownership = checkOwnership(grantsOf(overlap));
    expect(ownership.ok).toBe(false);
    expect(ownership.anomalies[0]).toMatch(/session 100 \(sequence 10\) saw isOwned\(\) true until 8\.0/);
  });

  it('S10: a grant that arrived already ended (held: false after a resume) is no ownership interval', () => {
    const late = byTime([
      ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 2, unlock: 8, done: 9 }),
      { f: 'acquire', type: 'invoke', process: 1, session: 101, name: 'x', timeMs: 0.5 },
      { f: 'acquire', type: 'ok', process: 1, session: 101, name: 'x', sequence: 9, timeMs: 5 },
      {
        f: 'end',
        type: 'ok',
        process: 1,
        session: 101,
        name: 'x',
        sequence: 9,
        reason: 'released',
        lastOwnedMs: -1,
        timeMs: 5,
      },
    ]);
    for (const check of checkHistory(late)) expect(check.ok, check.name).toBe(true);
  });

  it('an unlock answered "not owned" is explained by a release the cluster made earlier', () => {
    const lostEarlier = byTime([
      ...cycle(0, 'x', 10, { invoke: 0, ok: 1, write: 2, unlock: 30, done: 31 }, { owned: false }),
      ...cycle(1, 'x', 12, { invoke: 3, ok: 7, write: 8, unlock: 9, done: 10 }),
    ]);
    // a's isOwned() is recorded until the unlock at 30: that alone is an S10 anomaly …
    expect(checkOwnership(grantsOf(lostEarlier)).ok).toBe(false);
    // … but the lock history itself is linearizable: the cluster released a before b's grant.
    expect(checkLinearizability(grantsOf(lostEarlier)).ok).toBe(true);
  });

  it('S6, S10: a grant returned again after its unlock failed is one grant to the other checkers, and an anomaly', () => {
    const regrant = byTime([
      { f: 'acquire', type: 'invoke', process: 0, session: 5, name: 'x', timeMs: 0 },
      { f: 'acquire', type: 'ok', process: 0, session: 5, name: 'x', sequence: 10, timeMs: 1 },
      { f: 'release', type: 'invoke', process: 0, session: 5, name: 'x', sequence: 10, timeMs: 2 },
      {
        f: 'end',
        type: 'ok',
        process: 0,
        session: 5,
        name: 'x',
        sequence: 10,
        reason: 'unlocked',
        lastOwnedMs: 2,
        timeMs: 2,
      },
      {
        f: 'release',
        type: 'info',
        process: 0,
        session: 5,
        name: 'x',
        sequence: 10,
        error: 'NOT_LEADER',
        timeMs: 3,
      },
      ...cycle(0, 'x', 10, { invoke: 4, ok: 5, write: 6, unlock: 7, done: 8 }).map((e) => ({
        ...e,
        session: 5,
      })),
      ...cycle(1, 'x', 12, { invoke: 4.5, ok: 9, write: 10, unlock: 11, done: 12 }),
    ]);
    const checks = checkHistory(regrant);
    for (const check of checks) expect(check.ok, check.name).toBe(check.name !== 'no stale grant returned');
    expect(checks.find((check) => check.name === 'no stale grant returned')?.anomalies).toEqual([
      'x: session 5 got grant 10 back at 5.0 after its unlock failed',
    ]);
  });

  it('S15, S10: a read taken while a client held a grant must not show another owner (planted: a stale read)', () => {
    const held = [{ name: 'x', session: 7, sequence: 40 }];
    const good = {
      timeMs: 1,
      heldBefore: held,
      heldAfter: held,
      locks: [{ name: 'x', owner: 7, sequence: 40 }],
    };
    // Free is allowed (released, no waiter, notice on its way); a grant held only before or after is not compared.
    const free = { ...good, locks: [] };
    const moved = { ...good, heldAfter: [], locks: [{ name: 'x', owner: 8, sequence: 41 }] };
    expect(checkReads([good, free, moved], 2)).toMatchObject({
      ok: true,
      detail: '3 reads (2 failed), 2 held grants compared, 1 shown free',
    });
    const stale = { ...good, locks: [{ name: 'x', owner: 8, sequence: 39 }] };
    expect(checkReads([stale], 0).anomalies).toEqual([
      'x: read at 1.0 shows owner 8 sequence 39 while session 7 held sequence 40 with isOwned() true',
    ]);
  });

  it('S8, C3: after the heal, a fresh grant must be above every acknowledged one', () => {
    const grants = grantsOf(clean);
    expect(checkSurvival(grants, new Map([['x', 13]])).ok).toBe(true);
    expect(checkSurvival(grants, new Map([['x', 12]])).anomalies).toEqual([
      'x: granted 12 after the heal, but 12 had been acknowledged before',
    ]);
    expect(checkSurvival(grants, new Map([['x', 'TIMEOUT']])).ok).toBe(false);
  });

  it('C1: progress must resume within the bound after the heal', () => {
    const grants = grantsOf(clean);
    expect(checkRecovery(grants, ['x', 'y'], 5, 10)).toMatchObject({ ok: true, recoveryMs: 3 });
    expect(checkRecovery(grants, ['x', 'y'], 5, 2).ok).toBe(false);
    expect(checkRecovery(grants, ['x', 'y', 'z'], 5, 100).anomalies).toEqual([
      'z: no grant within 100 ms of the heal',
    ]);
  });
});
