// A thin driver for the lock table in tests: numbers the entries, keeps a clock, and checks every
// invariant after every entry so a test fails at the step that broke one.

import { expect } from 'vitest';
import {
  type ApplyOutput,
  type Command,
  type Effect,
  LockTable,
  type LockTableLimits,
  type Result,
  SessionLockScope,
} from '../../src/locks/index.ts';

export const SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS;
export const CONNECTION = SessionLockScope.UNLOCK_ON_CONNECTION_LOSS;

export interface Step {
  readonly result: Result;
  readonly effects: Effect[];
}

export class Harness {
  table: LockTable;
  index = 0;
  timeMs = 1_000;

  constructor(limits: Partial<LockTableLimits> = {}) {
    this.table = new LockTable({ limits });
  }

  batch(commands: Command[], timeMs = this.timeMs): ApplyOutput {
    this.timeMs = timeMs;
    const output = this.table.apply(++this.index, { timeMs, commands });
    this.table.assertInvariants();
    return output;
  }

  run(command: Command, timeMs = this.timeMs): Step {
    const { results, effects } = this.batch([command], timeMs);
    expect(results).toHaveLength(1);
    return { result: results[0] as Result, effects };
  }

  open(principal = 'alice', reconnectionWindowMs = 30_000): number {
    const { result } = this.run({ type: 'openSession', principal, reconnectionWindowMs });
    if (result.kind !== 'opened') throw new Error(`open failed: ${JSON.stringify(result)}`);
    return result.session;
  }

  acquire(
    session: number,
    requestNo: number,
    name: string,
    scope = SESSION as SessionLockScope,
    deadlineMs?: number,
  ) {
    return this.run({ type: 'acquire', session, requestNo, name, scope, deadlineMs });
  }

  release(session: number, requestNo: number, name: string, sequence?: number) {
    return this.run({ type: 'release', session, requestNo, name, sequence });
  }

  cancel(session: number, requestNo: number) {
    return this.run({ type: 'cancel', session, requestNo });
  }

  lost(session: number, epoch: number) {
    return this.run({ type: 'connectionLost', session, epoch });
  }

  reconnect(session: number, epoch: number) {
    return this.run({ type: 'reconnect', session, epoch });
  }

  close(session: number) {
    return this.run({ type: 'closeSession', session });
  }

  expire(session: number, epoch: number) {
    return this.run({ type: 'expireSession', session, epoch });
  }

  /** An entry with no commands: only time passes. */
  tick(timeMs: number): Effect[] {
    return this.batch([], timeMs).effects;
  }

  owner(name: string): number | null {
    return this.table.getLock(name)?.owner ?? null;
  }

  waiters(name: string): readonly number[] {
    return this.table.getLock(name)?.waiters ?? [];
  }

  /** Everything observable through the read API, for "state unchanged" checks. */
  observable(): unknown {
    return {
      locks: this.table.listLocks(),
      sessions: this.table.sessionIds().map((id) => this.table.getSession(id)),
      counts: [
        this.table.sessionCount,
        this.table.lockCount,
        this.table.waiterCount,
        this.table.lastSequence,
      ],
    };
  }
}

export function grantedOf(effects: readonly Effect[]) {
  return effects.filter((effect) => effect.kind === 'granted');
}

/**
 * Applies `command` and checks that it changed nothing: the table's snapshot equals that of a twin
 * that applied an empty entry at the same index and time instead. Returns the command's result.
 */
export function expectUnchanged(h: Harness, command: Command): Result {
  const twin = LockTable.restore(h.table.snapshot(), { limits: h.table.limits });
  const { result, effects } = h.run(command);
  twin.apply(h.index, { timeMs: h.timeMs, commands: [] });
  expect(effects).toEqual([]);
  expect(Buffer.from(h.table.snapshot()).equals(Buffer.from(twin.snapshot()))).toBe(true);
  return result;
}
