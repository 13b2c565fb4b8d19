// The model test: random entries applied to the lock table and to the naive model in model.ts; after
// every entry the results, the effects, every lock's owner and queue and every session must agree, the
// table's invariants must hold, and snapshot → restore → snapshot must give the same bytes. Now and then
// the test carries on with the restored table, so restored state is checked against the model too.
// Runs: 2 properties × 5,000 sequences = 10,000 random command sequences.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Command,
  defaultLockTableLimits,
  type Entry,
  LockTable,
  type LockTableLimits,
  SessionLockScope,
} from '../../src/locks/index.ts';
import type { Grants } from '../../src/locks/permissions.ts';
import { Model, normalize } from './model.ts';

const SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS;
const CONNECTION = SessionLockScope.UNLOCK_ON_CONNECTION_LOSS;
const runsPerProperty = Number(process.env.MODEL_RUNS ?? 5_000);

/**
 * A command in the abstract: numbers that pick a live session, a request number (next, a retry, a
 * jump ahead), a name, an epoch. `resolve` turns them into a concrete command against the model's state
 * at that moment, so most commands hit live sessions and owned locks instead of erroring out, and
 * shrinking still works on plain numbers.
 */
interface Abstract {
  readonly op: Command['type'];
  readonly pick: number;
  readonly pick2: number;
  readonly mode: number;
  readonly scope: SessionLockScope;
  readonly deadlineInMs: number | null;
  readonly sequence: number | null;
}

interface Step {
  readonly advanceMs: number;
  readonly commands: Abstract[];
  /** Continue with a table restored from a snapshot taken before this entry. */
  readonly restore: boolean;
}

// Relative weights: mostly lock traffic, with enough session churn to reach every end-of-session path.
const opWeights: readonly [Command['type'], number][] = [
  ['acquire', 16],
  ['release', 8],
  ['cancel', 4],
  ['openSession', 3],
  ['closeSession', 1],
  ['expireSession', 1],
  ['connectionLost', 2],
  ['reconnect', 2],
];
const opTable: readonly Command['type'][] = opWeights.flatMap(([op, weight]) => new Array(weight).fill(op));

const arbAbstract: fc.Arbitrary<Abstract> = fc.record({
  op: fc.nat(opTable.length - 1).map((i) => opTable[i] as Command['type']),
  pick: fc.nat(1000),
  pick2: fc.nat(1000),
  mode: fc.nat(19),
  scope: fc.constantFrom(SESSION, SESSION, CONNECTION),
  deadlineInMs: fc.option(fc.nat(12), { freq: 3 }),
  sequence: fc.option(fc.integer({ min: 1, max: 30 }), { freq: 4 }),
});

function arbSteps(): fc.Arbitrary<Step[]> {
  const step = fc.record({
    advanceMs: fc.nat(4),
    commands: fc.array(arbAbstract, { minLength: 0, maxLength: 3 }),
    restore: fc.nat(7).map((n) => n === 0),
  });
  return fc.array(step, { minLength: 1, maxLength: 30 });
}

const grantChoices: readonly (Grants | undefined)[] = [
  undefined,
  undefined,
  { acquire: ['*'], read: [], admin: false },
  { acquire: ['a*'], read: ['a*'], admin: false },
  { acquire: ['*b', 'c'], read: [], admin: false },
  { acquire: [], read: ['*'], admin: true },
];

class Resolver {
  private readonly lastRequestNo = new Map<number, number>();

  constructor(
    private readonly model: Model,
    private readonly names: readonly string[],
  ) {}

  resolve(a: Abstract): Command {
    const model = this.model;
    const live = model.sessions.map((s) => s.id);
    const session =
      live.length === 0 || a.pick % 12 === 0
        ? 1 + (a.pick % (model.lastSessionId + 2))
        : (live[a.pick % live.length] as number);
    const state = model.session(session);
    const last = this.lastRequestNo.get(session) ?? 0;
    let requestNo: number;
    if (a.mode < 14) requestNo = last + 1;
    else if (a.mode < 17)
      requestNo = Math.max(1, last - (a.pick2 % 5)); // a retry
    else if (a.mode < 19)
      requestNo = last + 2 + (a.pick2 % 3); // out of order
    else requestNo = 1 + (a.pick2 % 14);
    const name = this.names[a.pick2 % this.names.length] as string;
    const epoch = state === undefined ? a.pick2 % 3 : state.epoch;
    switch (a.op) {
      case 'openSession':
        return {
          type: 'openSession',
          principal: a.mode === 0 ? '' : 'p',
          reconnectionWindowMs: a.pick2 % 9,
          // S12: some sessions may take only some names (`a*` also covers 'abcd'; `*b` needs the suffix).
          grants: grantChoices[a.pick % grantChoices.length],
        };
      case 'closeSession':
        return { type: 'closeSession', session };
      case 'expireSession':
        return { type: 'expireSession', session, epoch: a.mode < 15 ? epoch : Math.max(0, epoch - 1) };
      case 'connectionLost':
        return {
          type: 'connectionLost',
          session,
          epoch: a.mode < 15 ? epoch : epoch + (a.mode % 2 === 0 ? 1 : -1),
        };
      case 'reconnect':
        return {
          type: 'reconnect',
          session,
          epoch: a.mode < 15 ? epoch + 1 + (a.pick2 % 2) : Math.max(0, epoch - (a.pick2 % 2)),
        };
      case 'cancel': {
        // Mostly a recent request (perhaps still waiting); sometimes one not yet seen (a cancel overtaking).
        const target = a.mode < 16 ? Math.max(1, last - (a.pick2 % 4)) : last + 1;
        return { type: 'cancel', session, requestNo: target };
      }
      case 'acquire':
        if (requestNo > last) this.lastRequestNo.set(session, requestNo);
        return {
          type: 'acquire',
          session,
          requestNo,
          name,
          scope: a.scope,
          deadlineMs: a.deadlineInMs === null ? undefined : model.nowMs + a.deadlineInMs,
        };
      case 'release': {
        if (requestNo > last) this.lastRequestNo.set(session, requestNo);
        const owned = state?.owned ?? [];
        const target =
          owned.length > 0 && a.mode % 3 !== 0 ? (owned[a.pick2 % owned.length] as string) : name;
        const lock = model.locks.get(target);
        // A fence that is usually right, sometimes stale.
        const sequence =
          a.sequence === null ? undefined : a.sequence % 2 === 0 && lock ? lock.sequence : a.sequence;
        return { type: 'release', session, requestNo, name: target, sequence };
      }
      default:
        throw new Error(`no such op ${a.op}`);
    }
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

function compareState(table: LockTable, model: Model): void {
  const names = [...model.locks.keys()].sort();
  expect(table.lockCount).toBe(names.length);
  expect(table.listLocks().map((l) => l.name)).toEqual(names);
  for (const name of names) {
    const lock = model.locks.get(name);
    expect(table.getLock(name)).toEqual({ name, ...lock, waiters: model.queue(name) });
  }
  expect(table.sessionIds()).toEqual(model.sessions.map((s) => s.id));
  for (const s of model.sessions) {
    expect(table.getSession(s.id)).toEqual({
      id: s.id,
      principal: s.principal,
      reconnectionWindowMs: s.reconnectionWindowMs,
      grants: s.grants,
      connectionEpoch: s.epoch,
      connected: s.connected,
      connectionLostAtMs: s.lostAtMs,
      locks: s.owned.map((name) => {
        const lock = model.locks.get(name);
        return { name, sequence: lock?.sequence, scope: lock?.scope };
      }),
      waits: model.waits
        .filter((w) => w.session === s.id)
        .map((w) => ({ name: w.name, requestNos: w.requests.map((r) => r.requestNo) })),
    });
  }
  expect(table.waiterCount).toBe(model.waits.length);
  expect(table.lastSequence).toBe(model.lastSequence);
  expect(table.nowMs).toBe(model.nowMs);
}

const opens: Command[] = [1, 2, 3].map(() => ({
  type: 'openSession',
  principal: 'p',
  reconnectionWindowMs: 5,
}));

function runAgainstModel(limits: LockTableLimits, names: readonly string[], steps: Step[]): void {
  let table = new LockTable({ limits });
  const model = new Model(limits);
  const resolver = new Resolver(model, names);
  table.apply(1, { timeMs: 0, commands: opens });
  model.apply({ timeMs: 0, commands: opens });
  let timeMs = 0;
  let index = 1;
  for (const step of steps) {
    if (step.restore) table = LockTable.restore(table.snapshot(), { limits });
    timeMs += step.advanceMs;
    // A leader change may stamp an earlier time now and then; the table must not go back.
    const entryTimeMs = step.advanceMs === 4 ? Math.max(0, timeMs - 6) : timeMs;
    // Resolve against the model as the entry will see it: overdue waits go before the commands run.
    model.nowMs = Math.max(model.nowMs, entryTimeMs);
    const entry: Entry = { timeMs: entryTimeMs, commands: step.commands.map((a) => resolver.resolve(a)) };
    index += 1 + (step.advanceMs % 2); // gaps in the index are allowed
    const got = table.apply(index, entry);
    const want = model.apply(entry);
    expect(got.results.map(normalize)).toEqual(want.results);
    expect(got.effects).toEqual(want.effects);
    table.assertInvariants();
    compareState(table, model);
    const bytes = table.snapshot();
    expect(equalBytes(LockTable.restore(bytes, { limits }).snapshot(), bytes)).toBe(true);
  }
}

describe('lock table against the model', () => {
  it('S2–S8, S11, S14: tight limits (names, waiters, claims, sessions, dedupe window all reachable)', () => {
    const limits: LockTableLimits = {
      ...defaultLockTableLimits,
      lockNameBytesMax: 3,
      waitersPerLockMax: 2,
      locksAndWaitsPerSessionMax: 3,
      sessionsMax: 4,
      dedupeResultsPerSessionMax: 4,
      reconnectionWindowMsMax: 8,
    };
    fc.assert(
      fc.property(arbSteps(), (steps) =>
        runAgainstModel(limits, ['a', 'b', 'a', 'b', 'c', 'é', 'a', 'b', '', 'abcd'], steps),
      ),
      { numRuns: runsPerProperty },
    );
  });

  it('S2–S8, S11, S14: roomy limits (long queues, many requests per wait)', () => {
    const limits: LockTableLimits = { ...defaultLockTableLimits, dedupeResultsPerSessionMax: 10 };
    fc.assert(
      fc.property(arbSteps(), (steps) => runAgainstModel(limits, ['a', 'b'], steps)),
      { numRuns: runsPerProperty },
    );
  });

  it('two replicas that apply the same entries write identical snapshots', () => {
    const limits: LockTableLimits = { ...defaultLockTableLimits, dedupeResultsPerSessionMax: 4 };
    fc.assert(
      fc.property(arbSteps(), (steps) => {
        const one = new LockTable({ limits });
        const two = new LockTable({ limits });
        const model = new Model(limits);
        const resolver = new Resolver(model, ['a', 'b', 'c']);
        let timeMs = 0;
        for (const entry of [{ timeMs, commands: opens }]) {
          one.apply(1, entry);
          two.apply(1, structuredClone(entry));
          model.apply(entry);
        }
        steps.forEach((step, i) => {
          timeMs += step.advanceMs;
          model.nowMs = timeMs;
          const entry = { timeMs, commands: step.commands.map((a) => resolver.resolve(a)) };
          model.apply(entry);
          one.apply(i + 2, entry);
          two.apply(i + 2, structuredClone(entry));
        });
        expect(equalBytes(one.snapshot(), two.snapshot())).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
