// Random fault schedules against the Raft core, every checker on every step, liveness after each.
//
//   npx vitest run test/sim/raft-sim.test.ts               500 schedules from a random base seed
//   SEED=1234 npx vitest run test/sim/raft-sim.test.ts     replays the schedule of seed 1234 only
//   SIM_RUNS=2000 npx vitest run test/sim/raft-sim.test.ts more schedules
//
// The seeds are spread over one child process per core; each run is independent and deterministic.
//
// A failure prints the seed, the broken property, the fast-check-shrunk minimal schedule and the
// commands that replay both (`SEED=<n> npm run sim`, `npm run sim -- --schedule <file>`).

import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkSeed, formatFailure } from './check-seed.ts';
import { checkSeedsInParallel } from './parallel.ts';
import { runSchedule, type SimReport, scheduleForSeed } from './schedule.ts';

const replaySeed = process.env.SEED === undefined ? null : Number(process.env.SEED);
const baseSeed = replaySeed ?? randomInt(0, 2 ** 31);
const runs = Number(process.env.SIM_RUNS ?? (replaySeed === null ? 500 : 1));
/** A failure is shrunk for at most this long, so the report arrives well inside the test's timeout. */
const shrinkTimeLimitMs = 90_000;

describe('raft simulator', () => {
  it(`C1–C5: ${runs} random fault schedules of ≥ 2,000 ticks on 3, 5 and 7 nodes hold every safety and liveness check (base seed ${baseSeed})`, async () => {
    const seeds = Array.from({ length: runs }, (_, k) => baseSeed + k);
    let reports: SimReport[];
    if (runs === 1) {
      const outcome = checkSeed(seeds[0]!, { shrinkTimeLimitMs });
      if (!outcome.ok) throw new Error(`\n${formatFailure(outcome)}\n`);
      reports = [outcome.report];
    } else {
      const result = await checkSeedsInParallel(seeds, { shrinkTimeLimitMs });
      if (result.failure !== null) throw new Error(`\n${result.failure.text}\n`);
      reports = result.reports;
    }
    expect(reports.length).toBe(runs);
    const sizes = { 3: 0, 5: 0, 7: 0 };
    let ticks = 0;
    let commits = 0;
    let elections = 0;
    let faults = 0;
    for (const report of reports) {
      sizes[report.nodes as 3 | 5 | 7]++;
      ticks += report.ticks;
      commits += report.commits;
      elections += report.elections;
      faults += report.faults;
      expect(report.ticks).toBeGreaterThanOrEqual(2000);
    }
    console.log(
      `sim: ${runs} runs from seed ${baseSeed} (3/5/7 nodes: ${sizes[3]}/${sizes[5]}/${sizes[7]}), ` +
        `${ticks} ticks, ${elections} elections, ${commits} commits, ${faults} faults`,
    );
    if (runs >= 100) {
      expect(sizes[3]).toBeGreaterThan(0);
      expect(sizes[5]).toBeGreaterThan(0);
      expect(sizes[7]).toBeGreaterThan(0);
      expect(commits).toBeGreaterThan(runs * 100);
    }
  }, 300_000);

  it('replays a seed bit for bit: two runs of one seed end the same way, with the same trace hash', () => {
    // Whether the run passes or fails, both runs must agree to the last event.
    const outcome = (seed: number) => {
      try {
        const report = runSchedule(scheduleForSeed(seed));
        return { traceHash: report.traceHash, stats: report.stats };
      } catch (error) {
        return { failure: error instanceof Error ? error.message : String(error) };
      }
    };
    for (const seed of [baseSeed ^ 0x5a5a, 17, 4242]) {
      const first = outcome(seed);
      expect(outcome(seed), `seed ${seed}`).toEqual(first);
    }
  });

  it('a seed names one schedule: the same seed gives the same schedule, another seed another', () => {
    expect(scheduleForSeed(77)).toEqual(scheduleForSeed(77));
    expect(scheduleForSeed(78)).not.toEqual(scheduleForSeed(77));
  });
});
