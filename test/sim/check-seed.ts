// Runs the schedule a seed names and, if it fails, lets fast-check shrink it to a minimal failing
// schedule. Shared by test/sim/raft-sim.test.ts and scripts/sim.ts so both print failures alike.

import { mkdirSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { SimViolation } from './checkers.ts';
import {
  type RunOptions,
  runSchedule,
  type Schedule,
  type ScheduleOptions,
  type SimReport,
  scheduleArbitrary,
} from './schedule.ts';

export interface CheckSeedOptions extends ScheduleOptions, RunOptions {
  /** Shrink a failing schedule (default true). */
  shrink?: boolean;
  /** Wall-clock budget for shrinking (fast-check's own timer; the simulation never reads a clock). */
  shrinkTimeLimitMs?: number;
  /** Where to save the shrunk schedule (default .sim-failures/). */
  failuresDir?: string | null;
}

export type SeedOutcome =
  | { ok: true; seed: number; report: SimReport }
  | {
      ok: false;
      seed: number;
      schedule: Schedule;
      error: unknown;
      shrunk: Schedule;
      shrunkError: unknown;
      shrinks: number;
      savedTo: string | null;
    };

export function checkSeed(seed: number, options: CheckSeedOptions = {}): SeedOutcome {
  let report: SimReport | null = null;
  let first: { schedule: Schedule; error: unknown } | null = null;
  const property = fc.property(scheduleArbitrary(options), (schedule) => {
    try {
      report = runSchedule(schedule, options);
    } catch (error) {
      first ??= { schedule, error };
      throw error;
    }
  });
  const details = fc.check(property, {
    seed,
    numRuns: 1,
    endOnFailure: options.shrink === false,
    interruptAfterTimeLimit: options.shrinkTimeLimitMs ?? 120_000,
    markInterruptAsFailure: false,
  });
  if (!details.failed || first === null) {
    if (report === null) throw new Error(`sim: seed ${seed} produced neither a report nor a failure`);
    return { ok: true, seed, report };
  }
  const { schedule, error } = first as { schedule: Schedule; error: unknown };
  const shrunk = (details.counterexample?.[0] as Schedule | undefined) ?? schedule;
  const shrunkError = details.errorInstance ?? error;
  const dir = options.failuresDir === undefined ? '.sim-failures' : options.failuresDir;
  let savedTo: string | null = null;
  if (dir !== null) {
    mkdirSync(dir, { recursive: true });
    savedTo = `${dir}/seed-${seed}.json`;
    writeFileSync(savedTo, `${JSON.stringify(shrunk, null, 2)}\n`);
  }
  return { ok: false, seed, schedule, error, shrunk, shrunkError, shrinks: details.numShrinks, savedTo };
}

/** A failure report a person can act on: what broke, where, and the commands that replay it. */
export function formatFailure(outcome: Extract<SeedOutcome, { ok: false }>): string {
  const { seed, schedule, shrunk } = outcome;
  const lines = [
    `SIMULATION FAILED: seed ${seed} (${schedule.nodes} nodes, ${schedule.ticks} ticks, ${schedule.events.length} fault events)`,
    ...describeError(outcome.error),
    `  replay:  SEED=${seed} npm run sim`,
  ];
  if (outcome.shrinks > 0 || shrunk !== schedule) {
    lines.push(
      `  shrunk (${outcome.shrinks} steps) to ${shrunk.nodes} nodes, ${shrunk.ticks} ticks, ${shrunk.events.length} fault events:`,
      ...describeError(outcome.shrunkError).map((line) => `  ${line}`),
      ...shrunk.events.map((event) => `      ${JSON.stringify(event)}`),
    );
  }
  if (outcome.savedTo !== null)
    lines.push(`  minimal schedule: npm run sim -- --schedule ${outcome.savedTo}`);
  return lines.join('\n');
}

function describeError(error: unknown): string[] {
  if (error instanceof SimViolation) {
    return [
      `  check:   ${error.check}`,
      `  at:      tick ${error.context.tick}`,
      `  detail:  ${error.message}`,
    ];
  }
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return [`  error:   ${text}`];
}
