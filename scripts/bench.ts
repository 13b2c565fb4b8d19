// `npm run bench`: raftlock's lock workloads against a local 3-node cluster (separate processes on
// loopback, LevelDB, fsync on), and with `--vs etcd` the same workloads against a 3-node etcd cluster
// using etcd's own lock service, in the same run, with raftlock/etcd ratios.
//
//   W1  one session looping lock → unlock                      cycles/s, p50, p99 of one cycle
//   W2  32 sessions, each looping on its own name              cycles/s, p99
//   W3  32 sessions contending for one name                    handoffs/s, fairness (max/min grants)
//   W4  kill -9 of the leader under W2's load, ≥ 5 times       time until every session cycles again
//   W5  1,000,000 held locks across 100,000 sessions           leader RSS, restart + catch-up of a node
//
//   npm run bench [-- --vs etcd] [--short] [--only W1,W2] [--seconds 10] [--kills 5]
//                    [--json bench-results.json] [--chart docs/benchmarks.svg] [--no-fsync]
//                    [--baseline DIR] [--rounds N] [--own-connections]
//
// A workload's raftlock sessions share one WebSocket per node (a `ConnectionPool`), as sessions of one
// process would; `--own-connections` gives each its own, as before shared connections existed (and as
// the `--baseline` checkout always runs, since it may not speak them).
//
// Workloads run side by side: for each, raftlock, then etcd (and the baseline), so a machine whose load
// changes during the run weighs on every system alike. `--baseline DIR` also runs W1–W5 against the
// raftlock of another checkout (say `git archive HEAD` unpacked in DIR, with node_modules linked) and
// adds a "before" column: before/after figures from the same run. `--rounds N` runs each of W1–W3 N times
// per system, alternating which system goes first, and reports the run with the median throughput: on a
// shared VM one 10 s run can be 20 % off the next, and side by side medians are what the targets compare.
//
// Sessions start on the leader (both systems), so the figures measure the replicated write path rather
// than follower forwarding. W5 runs against raftlock (and the baseline) only. `--short` fits in about a
// minute: 3 s runs, 2 kills, and W5 scaled down to 100,000 locks across 10,000 sessions.

import { existsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { RaftlockCluster } from './bench-cluster.ts';
import { EtcdCluster, etcdInstallHint, etcdVersion } from './bench-etcd.ts';
import { chartSvg, ProgressBar, type Row, ratio, table } from './bench-report.ts';
import type { BenchCluster } from './bench-types.ts';
import {
  type ContentionFigures,
  type CycleFigures,
  type FailoverFigures,
  runContention,
  runFailover,
  runOwnNames,
  runScale,
  type ScaleFigures,
} from './bench-workloads.ts';

const { values } = parseArgs({
  options: {
    vs: { type: 'string' },
    short: { type: 'boolean' },
    only: { type: 'string' },
    seconds: { type: 'string' },
    kills: { type: 'string' },
    sessions: { type: 'string' },
    json: { type: 'string' },
    chart: { type: 'string' },
    'no-fsync': { type: 'boolean' },
    baseline: { type: 'string' },
    rounds: { type: 'string' },
    'own-connections': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (values.help === true) {
  process.stdout.write(
    'npm run bench [-- --vs etcd] [--short] [--only W1,W2,W3,W4,W5] [--seconds N] [--kills N] [--sessions 32]\n' +
      '                 [--json FILE] [--chart FILE.svg] [--no-fsync] [--baseline DIR] [--rounds N]\n' +
      '                 [--own-connections]\n',
  );
  process.exit(0);
}

const short = values.short === true;
const seconds = Number(values.seconds ?? (short ? 3 : 10));
const kills = Number(values.kills ?? (short ? 2 : 5));
const manySessions = Number(values.sessions ?? 32);
const rounds = Number(values.rounds ?? 1);
if (!Number.isSafeInteger(rounds) || rounds < 1 || rounds > 15) {
  process.stderr.write('--rounds must be an integer from 1 to 15\n');
  process.exit(2);
}
const fsync = values['no-fsync'] !== true;
const sharedConnections = values['own-connections'] !== true;
const only = new Set((values.only ?? 'W1,W2,W3,W4,W5').toUpperCase().split(','));
const w5Sessions = short ? 10_000 : 100_000;
const w5LocksPerSession = 10;
const jsonPath = values.json ?? 'bench-results.json';
// The committed chart is a full run's: a short or partial (--only) run writes one only when asked.
const chartPath = values.chart ?? (short || values.only !== undefined ? undefined : 'docs/benchmarks.svg');

let withEtcd = false;
let etcdLabel: string | null = null;
if (values.vs !== undefined) {
  if (values.vs !== 'etcd') {
    process.stderr.write(`--vs ${values.vs}: only etcd is supported\n`);
    process.exit(2);
  }
  etcdLabel = etcdVersion();
  if (etcdLabel === null) process.stderr.write(`${etcdInstallHint}; running raftlock alone.\n`);
  else withEtcd = true;
}

interface SystemResults {
  w1?: CycleFigures;
  w2?: CycleFigures;
  w3?: ContentionFigures;
  w4?: FailoverFigures;
  w5?: ScaleFigures;
}
const results: { raftlock: SystemResults; etcd: SystemResults; baseline: SystemResults } = {
  raftlock: {},
  etcd: {},
  baseline: {},
};
const baselineMain = values.baseline === undefined ? undefined : resolve(values.baseline, 'src/cli/main.ts');
if (baselineMain !== undefined && !existsSync(baselineMain)) {
  process.stderr.write(`--baseline: ${baselineMain} does not exist\n`);
  process.exit(2);
}

const cycleWorkloads = ['W1', 'W2', 'W3', 'W4'].filter((w) => only.has(w));
const systemCount = 1 + (withEtcd ? 1 : 0) + (baselineMain === undefined ? 0 : 1);
const roundsOf = (workload: string) => (workload === 'W4' ? 1 : rounds);
const steps =
  cycleWorkloads.reduce((sum, workload) => sum + roundsOf(workload) * systemCount, 0) +
  (only.has('W5') ? (baselineMain === undefined ? 1 : 2) : 0);
const bar = new ProgressBar(steps);
const loadBefore = loadavg();
const startedAt = new Date();

/** Every round's figures per system and workload, for the median (`--rounds`). */
const roundResults = new Map<string, (CycleFigures | ContentionFigures)[]>();

function keepRound(system: string, workload: string, figures: CycleFigures | ContentionFigures): void {
  const key = `${system} ${workload}`;
  const list = roundResults.get(key) ?? [];
  list.push(figures);
  roundResults.set(key, list);
}

/** The round with the median throughput (the lower middle one for an even count). */
function medianRound<T extends CycleFigures | ContentionFigures>(system: string, workload: string): T {
  const list = [...(roundResults.get(`${system} ${workload}`) ?? [])] as T[];
  const rate = (f: T) => ('cyclesPerSecond' in f ? f.cyclesPerSecond : f.handoffsPerSecond);
  list.sort((a, b) => rate(a) - rate(b));
  return list[Math.floor((list.length - 1) / 2)]!;
}

async function runCycleWorkload(
  workload: string,
  system: 'raftlock' | 'etcd' | 'baseline',
  start: () => Promise<BenchCluster>,
  round: number,
) {
  const out = results[system];
  {
    bar.step(
      `${workload} ${system}${roundsOf(workload) > 1 ? ` (round ${round + 1}/${roundsOf(workload)})` : ''}`,
    );
    // A fresh cluster per workload: no workload inherits another's log, leases or failed-over leader.
    const cluster = await start();
    const progress = (fraction: number, note?: string) => bar.update(fraction, note);
    try {
      if (workload === 'W1') keepRound(system, workload, await runOwnNames(cluster, 1, seconds, progress));
      if (workload === 'W2')
        keepRound(system, workload, await runOwnNames(cluster, manySessions, seconds, progress));
      if (workload === 'W3')
        keepRound(system, workload, await runContention(cluster, manySessions, seconds, progress));
      if (workload === 'W1') out.w1 = medianRound<CycleFigures>(system, workload);
      if (workload === 'W2') out.w2 = medianRound<CycleFigures>(system, workload);
      if (workload === 'W3') out.w3 = medianRound<ContentionFigures>(system, workload);
      if (workload === 'W4') out.w4 = await runFailover(cluster, manySessions, kills, progress);
    } finally {
      await cluster.stop();
    }
  }
}

try {
  for (const workload of cycleWorkloads) {
    const systems: ['raftlock' | 'etcd' | 'baseline', () => Promise<BenchCluster>][] = [
      ['raftlock', () => RaftlockCluster.start({ fsync, sharedConnections })],
    ];
    if (withEtcd) systems.push(['etcd', () => EtcdCluster.start()]);
    if (baselineMain !== undefined)
      systems.push([
        'baseline',
        () => RaftlockCluster.start({ fsync, cliMain: baselineMain, sharedConnections: false }),
      ]);
    for (let round = 0; round < roundsOf(workload); round++) {
      // Odd rounds go in reverse order, so no system always runs first (or last) on a drifting machine.
      const order = round % 2 === 0 ? systems : [...systems].reverse();
      for (const [system, start] of order) await runCycleWorkload(workload, system, start, round);
    }
  }
  if (only.has('W5')) {
    // With --baseline, W5 runs on the other checkout too, right after: before and after on one machine state.
    const systems =
      baselineMain === undefined ? (['raftlock'] as const) : (['raftlock', 'baseline'] as const);
    for (const system of systems) {
      bar.step(`W5 ${system} (${w5Sessions.toLocaleString('en-US')} sessions)`);
      const cluster = await RaftlockCluster.start({
        fsync,
        ...(system === 'baseline' ? { cliMain: baselineMain } : {}),
      });
      try {
        results[system].w5 = await runScale(cluster, w5Sessions, w5LocksPerSession, (f, note) =>
          bar.update(f, note),
        );
      } finally {
        await cluster.stop();
      }
    }
  }
} finally {
  bar.finish();
}

// ---- the summary

const r = results.raftlock;
const e = results.etcd;
const b = results.baseline;
const rows: Row[] = [];
function add(
  workload: string,
  measure: string,
  better: Row['better'],
  unit: string,
  target: string,
  pick: (results: SystemResults) => number | undefined,
  met: (value: number) => boolean,
): void {
  const raftlock = pick(r) ?? null;
  const etcd = pick(e) ?? null;
  const before = pick(b) ?? null;
  if (raftlock === null && etcd === null && before === null) return;
  rows.push({
    workload,
    measure,
    better,
    unit,
    target,
    raftlock,
    etcd,
    before,
    met: raftlock === null ? null : met(raftlock),
  });
}
add(
  'W1',
  'cycles/s',
  'higher',
  '',
  '≥ 750',
  (s) => s.w1?.cyclesPerSecond,
  (v) => v >= 750,
);
add(
  'W1',
  'p50',
  'lower',
  'ms',
  '≤ 1.5 ms',
  (s) => s.w1?.p50Ms,
  (v) => v <= 1.5,
);
add(
  'W1',
  'p99',
  'lower',
  'ms',
  '—',
  (s) => s.w1?.p99Ms,
  () => true,
);
add(
  'W1',
  'server CPU / cycle',
  'lower',
  'µs',
  '—',
  (s) => s.w1?.serverCpuUsPerCycle,
  () => true,
);
add(
  'W2',
  'cycles/s',
  'higher',
  '',
  '≥ 20,000',
  (s) => s.w2?.cyclesPerSecond,
  (v) => v >= 20_000,
);
add(
  'W2',
  'p99',
  'lower',
  'ms',
  '≤ 10 ms',
  (s) => s.w2?.p99Ms,
  (v) => v <= 10,
);
add(
  'W2',
  'server CPU / cycle',
  'lower',
  'µs',
  '—',
  (s) => s.w2?.serverCpuUsPerCycle,
  () => true,
);
add(
  'W3',
  'handoffs/s',
  'higher',
  '',
  '≥ 1,200',
  (s) => s.w3?.handoffsPerSecond,
  (v) => v >= 1_200,
);
add(
  'W3',
  'fairness max/min',
  'lower',
  '×',
  '≤ 1.5',
  (s) => s.w3?.fairness,
  (v) => v <= 1.5,
);
add(
  'W4',
  'recovery p50',
  'lower',
  'ms',
  '≤ 500 ms',
  (s) => s.w4?.p50Ms,
  (v) => v <= 500,
);
add(
  'W4',
  'recovery max',
  'lower',
  'ms',
  '≤ 1,500 ms',
  (s) => s.w4?.maxMs,
  (v) => v <= 1_500,
);
const w5Locks = r.w5?.locks.toLocaleString('en-US') ?? '';
add(
  'W5',
  `leader RSS, ${w5Locks} locks`,
  'lower',
  'MB',
  '≤ 1,000 MB',
  (s) => (s.w5 === undefined ? undefined : s.w5.leaderRssBytes / 1e6),
  (v) => v <= 1_000,
);
add(
  'W5',
  'restart + catch-up',
  'lower',
  'ms',
  '≤ 5,000 ms',
  (s) => s.w5?.restartCatchUpMs,
  (v) => v <= 5_000,
);

const command = `npm run bench --${process.argv
  .slice(2)
  .map((arg) => ` ${arg}`)
  .join('')}`;
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  etcd: etcdLabel,
  loadAverageBefore: loadBefore.map((v) => Number(v.toFixed(2))),
  loadAverageAfter: loadavg().map((v) => Number(v.toFixed(2))),
};
const summary = table(rows, withEtcd, baselineMain !== undefined);
process.stdout.write(
  `\nraftlock bench ${startedAt.toISOString()} — 3 nodes on loopback, fsync ${fsync ? 'on' : 'off'}, ` +
    `${seconds} s per run${rounds > 1 ? `, median of ${rounds} interleaved runs in W1–W3` : ''}, ${manySessions} sessions in W2–W4 (raftlock: ${sharedConnections ? 'one shared WebSocket per node' : 'a WebSocket each'}); one cycle = lock + unlock (2 commits)\n` +
    `machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}` +
    `${etcdLabel === null ? '' : `, ${etcdLabel}`}; load average before ${machine.loadAverageBefore.join(' ')}, ` +
    `after ${machine.loadAverageAfter.join(' ')}\n\n${summary}\n`,
);
if (r.w4 !== undefined)
  process.stdout.write(
    `\nW4 raftlock recoveries (ms): ${r.w4.recoveryMs.map((v) => v.toFixed(0)).join(', ')}\n`,
  );
if (e.w4 !== undefined)
  process.stdout.write(`W4 etcd recoveries (ms): ${e.w4.recoveryMs.map((v) => v.toFixed(0)).join(', ')}\n`);
if (b.w4 !== undefined)
  process.stdout.write(`W4 before recoveries (ms): ${b.w4.recoveryMs.map((v) => v.toFixed(0)).join(', ')}\n`);

writeFileSync(
  jsonPath,
  `${JSON.stringify(
    {
      command,
      startedAt: startedAt.toISOString(),
      machine,
      options: {
        short,
        seconds,
        kills,
        sessions: manySessions,
        fsync,
        sharedConnections,
        vs: withEtcd ? 'etcd' : null,
        baseline: values.baseline ?? null,
      },
      results,
      rows: rows.map((row) => ({ ...row, ratio: ratio(row) })),
    },
    null,
    2,
  )}\n`,
);
process.stdout.write(`\nresults: ${jsonPath}\n`);
if (chartPath !== undefined) {
  const subtitle =
    `${command}\n${machine.cpus} cores, load average ${machine.loadAverageBefore[0]}–${machine.loadAverageAfter[0]}, ` +
    `${startedAt.toISOString().slice(0, 10)}; a bar right of 1× means raftlock is ahead`;
  writeFileSync(chartPath, chartSvg(rows, 'raftlock vs etcd, same machine, same run', subtitle));
  process.stdout.write(`chart: ${chartPath}\n`);
}
process.exit(0);
