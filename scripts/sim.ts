// The deterministic cluster simulator from the command line.
//
//   npm run sim                          100 schedules from a fresh random base seed
//   SEED=1234 npm run sim                replays the schedule of seed 1234 exactly
//   SEED=1234 npm run sim -- --runs 500  seeds 1234, 1235, … 1733
//   npm run sim -- --nodes 5 --ticks 4000
//   npm run sim -- --schedule .sim-failures/seed-1234.json   replays a saved (shrunk) schedule
//   npm run sim -- --checks end-to-end   only the end-to-end properties (no protocol checks)
//   npm run sim -- --trace               keep the last events and print them with a failure
//   npm run sim -- --no-shrink           report the first failure as it is
//   npm run sim -- --without addNode,removeNode   leave fault kinds out (triage)
//   npm run sim -- --no-liveness         safety checks only (triage)
//
// Exits 1 on the first violation, after printing the seed, the broken check and how to replay it.

import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type CheckSeedOptions, checkSeed, formatFailure } from '../test/sim/check-seed.ts';
import type { CheckLevel } from '../test/sim/checkers.ts';
import { SimViolation } from '../test/sim/checkers.ts';
import { type FaultKind, faultKinds } from '../test/sim/faults.ts';
import { runSchedule, type Schedule, type SimReport } from '../test/sim/schedule.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string' },
    nodes: { type: 'string' },
    ticks: { type: 'string' },
    schedule: { type: 'string' },
    checks: { type: 'string', default: 'all' },
    trace: { type: 'boolean', default: false },
    'no-shrink': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
    without: { type: 'string' },
    'no-liveness': { type: 'boolean', default: false },
  },
});

const checks = values.checks as CheckLevel;
if (checks !== 'all' && checks !== 'end-to-end')
  fail(`--checks must be 'all' or 'end-to-end', not ${checks}`);

function runSeeds(): void {
  const seedText = process.env.SEED;
  const baseSeed = seedText === undefined ? randomInt(0, 2 ** 31) : Number(seedText);
  if (!Number.isInteger(baseSeed) || baseSeed < 0)
    fail(`SEED must be a non-negative integer, not ${seedText}`);
  const runs = values.runs === undefined ? (seedText === undefined ? 100 : 1) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) fail(`--runs must be a positive integer, not ${values.runs}`);
  const options: CheckSeedOptions = {
    checks,
    trace: values.trace,
    shrink: !values['no-shrink'],
    liveness: !values['no-liveness'],
  };
  if (values.nodes !== undefined) {
    const nodes = Number(values.nodes);
    if (nodes !== 3 && nodes !== 5 && nodes !== 7) fail(`--nodes must be 3, 5 or 7, not ${values.nodes}`);
    options.nodes = [nodes];
  }
  if (values.without !== undefined) {
    const without = values.without.split(',').filter((k) => k.length > 0) as FaultKind[];
    for (const kind of without)
      if (!faultKinds.includes(kind))
        fail(`--without: unknown fault kind ${kind} (${faultKinds.join(', ')})`);
    options.without = without;
  }
  if (values.ticks !== undefined) {
    const ticks = Number(values.ticks);
    if (!Number.isInteger(ticks) || ticks < 10) fail(`--ticks must be an integer ≥ 10, not ${values.ticks}`);
    options.ticksMin = ticks;
    options.ticksMax = ticks;
  }
  console.log(`raftlock simulator: ${runs} run(s) from seed ${baseSeed} (checks: ${checks})`);
  const totals = new Totals();
  const started = performance.now();
  for (let k = 0; k < runs; k++) {
    const seed = baseSeed + k;
    const outcome = checkSeed(seed, options);
    if (!outcome.ok) {
      totals.print(performance.now() - started, 1);
      console.error(`\n${formatFailure(outcome)}`);
      process.exit(1);
    }
    totals.add(outcome.report);
    if (!values.quiet && (runs <= 20 || (k + 1) % Math.ceil(runs / 20) === 0 || k === runs - 1)) {
      const r = outcome.report;
      console.log(
        `  run ${String(k + 1).padStart(String(runs).length)}/${runs}  seed ${seed}  ${r.nodes} nodes  ${r.ticks} ticks  ` +
          `${r.elections} elections  ${r.commits} commits  ${r.faults} faults  trace ${hex(r.traceHash)}`,
      );
    }
  }
  totals.print(performance.now() - started, 0);
}

function replayFile(path: string): void {
  const schedule = JSON.parse(readFileSync(path, 'utf8')) as Schedule;
  console.log(
    `replaying ${path}: seed ${schedule.seed}, ${schedule.nodes} nodes, ${schedule.ticks} ticks, ${schedule.events.length} events`,
  );
  try {
    const report = runSchedule(schedule, { checks, trace: values.trace, liveness: !values['no-liveness'] });
    const totals = new Totals();
    totals.add(report);
    totals.print(0, 0);
    console.log(`trace hash ${hex(report.traceHash)}`);
  } catch (error) {
    if (error instanceof SimViolation) {
      console.error(`\nSIMULATION FAILED: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
}

class Totals {
  runs = 0;
  ticks = 0;
  messages = 0;
  elections = 0;
  commits = 0;
  faults = 0;
  crashes = 0;
  snapshotsInstalled = 0;
  reads = 0;
  livenessTicksMax = 0;

  add(report: SimReport): void {
    this.runs++;
    this.ticks += report.ticks;
    this.messages += report.messages;
    this.elections += report.elections;
    this.commits += report.commits;
    this.faults += report.faults;
    this.crashes += report.stats.crashes;
    this.snapshotsInstalled += report.stats.snapshotsInstalled;
    this.reads += report.stats.readsConfirmed;
    this.livenessTicksMax = Math.max(this.livenessTicksMax, report.livenessTicks);
  }

  print(elapsedMs: number, violations: number): void {
    const rows: [string, number | string][] = [
      ['runs', this.runs],
      ['ticks', this.ticks],
      ['messages', this.messages],
      ['elections', this.elections],
      ['commits', this.commits],
      ['faults', this.faults],
      ['crashes', this.crashes],
      ['snapshots installed', this.snapshotsInstalled],
      ['reads confirmed', this.reads],
      ['liveness ticks (max)', this.livenessTicksMax],
      ['violations', violations],
    ];
    if (elapsedMs > 0) rows.push(['seconds', (elapsedMs / 1000).toFixed(1)]);
    console.log('');
    for (const [name, value] of rows) console.log(`  ${name.padEnd(22)} ${String(value).padStart(12)}`);
  }
}

function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}

function fail(message: string): never {
  console.error(`sim: ${message}`);
  process.exit(2);
}

if (values.schedule !== undefined) replayFile(values.schedule);
else runSeeds();
