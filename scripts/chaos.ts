// Chaos test of a real cluster (issue 7): 3 or 5 `raftlock start` processes with every peer link
// through a fault-injecting proxy, client sessions looping lock → guarded writes → unlock on a few hot
// names, a nemesis on a schedule, then a heal, a recovery window and the history checkers.
//
//   npm run chaos -- --short                  ≤ 3 minutes, what .ci/run runs
//   npm run chaos -- --seconds 3600 --nodes 5 --report docs/chaos.md
//   options: --seed N --workers N --names N --clock monotonic|wall --faults kill-leader,drop,…
//            --keep (keep the data directory) --quiet
//            --plant-anomaly (adds a fake stale write and a fake overlapping grant to the history before
//            the checks, to show they fail the run)
//
// Exit status 0 when every checker passed, 1 on an anomaly, 2 when the run itself failed.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect, type Session } from '../src/client/index.ts';
import { createPrng } from '../src/raft/prng.ts';
import {
  type CheckResult,
  checkHistory,
  checkReads,
  checkRecovery,
  checkSurvival,
  type ReadObservation,
} from './chaos/checkers.ts';
import { ChaosCluster } from './chaos/cluster.ts';
import { grantsOf, HistoryRecorder } from './chaos/history.ts';
import { type FaultKind, faultKinds, Nemesis } from './chaos/nemesis.ts';
import { renderReport, summaryTable } from './chaos/report.ts';
import { Workload, withTimeout } from './chaos/workload.ts';

const { values } = parseArgs({
  options: {
    short: { type: 'boolean' },
    seconds: { type: 'string' },
    nodes: { type: 'string' },
    workers: { type: 'string' },
    names: { type: 'string' },
    seed: { type: 'string' },
    clock: { type: 'string', default: 'monotonic' },
    faults: { type: 'string' },
    report: { type: 'string' },
    keep: { type: 'boolean' },
    'plant-anomaly': { type: 'boolean' },
    quiet: { type: 'boolean' },
  },
});

const short = values.short === true;
const faultSeconds = Number(values.seconds ?? (short ? 100 : 600));
const size = Number(values.nodes ?? (short ? 3 : 5));
const workerCount = Number(values.workers ?? 6);
const nameCount = Number(values.names ?? 3);
const seed = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
const clockMode = values.clock === 'wall' ? 'wall' : 'monotonic';
const kinds = (values.faults?.split(',') ?? [...faultKinds]) as FaultKind[];
for (const kind of kinds) if (!faultKinds.includes(kind)) throw new Error(`unknown fault ${kind}`);
if (![3, 5].includes(size)) throw new Error('--nodes is 3 or 5');

/** Progress must resume within this long after the final heal (C1, C2): generous for a loaded machine. */
const recoveryBoundMs = 30_000;
const timing = {
  tickMs: 100,
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  connectionTimeoutMs: 2_000,
  snapshotEveryEntries: 500,
  snapshotKeepEntries: 100,
};
const reconnectionWindowMs = 8_000;

const random = createPrng(seed);
const dir = mkdtempSync(join(tmpdir(), 'raftlock-chaos-'));
const recorder = new HistoryRecorder(join(dir, 'history.jsonl'));
const log = (line: string) => {
  if (values.quiet !== true) console.log(`[${(recorder.now() / 1000).toFixed(1).padStart(6)} s] ${line}`);
};
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const names = Array.from({ length: nameCount }, (_, i) => `hot-${i}`);

console.log(
  `raftlock chaos: ${size} nodes, ${workerCount} sessions on ${nameCount} locks, ${faultSeconds} s of faults, ` +
    `seed ${seed}, node clock ${clockMode}; data in ${dir}`,
);

const startedMs = performance.now();
let cluster: ChaosCluster | null = null;
let exitCode = 2;
try {
  cluster = await ChaosCluster.create({ dir, size, timing, random, clockMode });
  const firstLeader = await cluster.waitForLeader(60_000);
  if (firstLeader === null) throw new Error('no leader within 60 s of start');
  log(`leader ${firstLeader}`);

  const workload = new Workload({
    urls: cluster.urls,
    names,
    workers: workerCount,
    recorder,
    random,
    holdMs: 60,
    lockTimeoutMs: 4_000,
    reconnectionWindowMs,
  });
  workload.start();

  // A reader: linearizable lock listings (S15) every 400 ms, from a session of its own, compared with the
  // grants the workers hold around each read.
  const reads: ReadObservation[] = [];
  let failedReads = 0;
  let reading = true;
  const reader = (async () => {
    let session: Session | null = null;
    while (reading) {
      await sleep(400);
      try {
        if (session === null || session.isClosed)
          session = await connect({
            servers: [...cluster!.urls].sort(() => random() - 0.5),
            principal: 'control',
            password: 'password',
            connectDeadlineMs: 3_000,
          });
        const heldBefore = workload.held();
        const timeMs = recorder.now();
        const locks = await withTimeout(session.listLocks({ prefix: 'hot-' }), 3_000);
        reads.push({
          timeMs,
          heldBefore,
          heldAfter: workload.held(),
          locks: locks.map(({ name, owner, sequence }) => ({ name, owner, sequence })),
        });
      } catch {
        failedReads++;
      }
    }
    await withTimeout(session?.close() ?? Promise.resolve(), 5_000).catch(() => undefined);
  })();
  const nemesis = new Nemesis({
    cluster,
    random,
    now: () => recorder.now(),
    faultMs: short ? [2_500, 5_000] : [3_000, 10_000],
    quietMs: short ? [1_500, 3_000] : [2_000, 6_000],
    kinds,
    log,
    clockMode,
  });

  const progress = setInterval(() => {
    const s = workload.stats;
    const links = cluster!.linkStats();
    const errors = [...s.acquireErrors].map(([code, n]) => `${code}:${n}`).join(' ');
    log(
      `progress: ${s.grants} grants, ${s.cycles} cycles, ${s.sessionsOpened} sessions opened, ` +
        `${links.dropped} frames dropped${errors === '' ? '' : `, acquire errors ${errors}`}` +
        `${nemesis.current === null ? '' : ` | fault: ${nemesis.current.description}`}`,
    );
  }, 5_000);

  await sleep(short ? 4_000 : 10_000);
  await nemesis.run(recorder.now() + faultSeconds * 1000);
  await nemesis.healAll();
  const healMs = recorder.now();
  log('healed: network clean, every node running, clocks true; recovery window');

  // Recovery window: until every lock was granted again (or the bound passed), then a little steady state.
  const recoveredBy = performance.now() + recoveryBoundMs;
  const healIndex = recorder.events.length;
  while (performance.now() < recoveredBy) {
    const since = new Set<string>();
    for (const event of recorder.events.slice(healIndex))
      if (event.f === 'acquire' && event.type === 'ok') since.add(event.name);
    if (names.every((name) => since.has(name))) break;
    await sleep(250);
  }
  await sleep(3_000);
  clearInterval(progress);
  reading = false;
  await reader;
  log('stopping the workload');
  await workload.stop();

  // After the heal: a fresh grant of every lock must carry a sequence above every acknowledged one.
  const after = new Map<string, number | string>();
  try {
    const probe = await connect({ servers: cluster.urls, principal: 'control', password: 'password' });
    for (const name of names) {
      try {
        const lock = await probe.lock(name, 'UNLOCK_ON_SESSION_LOSS', { timeoutMs: 20_000 });
        after.set(name, lock.getSequence());
        await lock.unlock();
      } catch (error) {
        after.set(name, String((error as Error).message));
      }
    }
    await withTimeout(probe.close(), 10_000).catch(() => undefined);
  } catch (error) {
    for (const name of names) after.set(name, `probe could not connect: ${(error as Error).message}`);
  }

  // Every replica reaches the same applied index once the cluster is quiet.
  const convergeDeadline = performance.now() + 20_000;
  let applied: (number | null)[] = [];
  while (performance.now() < convergeDeadline) {
    applied = (await cluster.statuses()).map((status) => status?.appliedIndex ?? null);
    if (applied.every((index) => index !== null && index === applied[0])) break;
    await sleep(250);
  }
  const converged = applied.every((index) => index !== null && index === applied[0]);

  if (values['plant-anomaly'] === true) plantAnomaly(recorder);
  const grants = grantsOf(recorder.events);
  const recovery = checkRecovery(grants, names, healMs, recoveryBoundMs);
  const crashes = cluster.exits.filter((exit) => !exit.expected);
  const checks: CheckResult[] = [
    ...checkHistory(recorder.events),
    checkReads(reads, failedReads),
    checkSurvival(grants, after),
    recovery,
    {
      name: 'replicas converge',
      rules: 'C3',
      ok: converged,
      anomalies: converged ? [] : [`applied indexes after the heal: ${applied.join(', ')}`],
      detail: `applied index ${applied.join(', ')}`,
    },
    {
      name: 'no node crashed by itself',
      rules: 'C7',
      ok: crashes.length === 0,
      anomalies: crashes.map((exit) => `${exit.id} exited (code ${exit.code}, signal ${exit.signal})`),
      detail: `${cluster.exits.length} exits, all by the nemesis`,
    },
  ];

  // Per fault: from its heal to the next grant of any lock, and the longest time without any grant
  // from the fault's start to that next grant (how long the cluster stalled).
  const grantTimes = grants.map((g) => g.okMs).sort((a, b) => a - b);
  const faultRecoveries = nemesis.faults.map((fault) => {
    const next = grantTimes.find((t) => t >= fault.healMs) ?? Number.POSITIVE_INFINITY;
    let stallMs = 0;
    let previous = fault.startMs;
    for (const t of grantTimes) {
      if (t < fault.startMs) continue;
      if (t > next) break;
      stallMs = Math.max(stallMs, t - previous);
      previous = t;
    }
    if (!Number.isFinite(next)) stallMs = Number.POSITIVE_INFINITY;
    return { fault, recoveryMs: next - fault.healMs, stallMs };
  });
  const summary = {
    seed,
    size,
    clockMode,
    workers: workerCount,
    names: nameCount,
    faultSeconds,
    wallSeconds: (performance.now() - startedMs) / 1000,
    events: recorder.events.length,
    stats: workload.stats,
    resource: { accepted: workload.resource.accepted, rejected: workload.resource.rejected },
    links: cluster.linkStats(),
    faults: faultRecoveries,
    finalRecoveryMs: recovery.recoveryMs,
    checks,
  };
  console.log(summaryTable(summary));
  if (values.report !== undefined) {
    writeFileSync(values.report, renderReport(summary));
    console.log(`report written to ${values.report}`);
  }
  exitCode = checks.every((check) => check.ok) ? 0 : 1;
} catch (error) {
  console.error(`chaos run failed: ${(error as Error).stack ?? String(error)}`);
  exitCode = 2;
} finally {
  await cluster?.destroy().catch(() => undefined);
  if (exitCode === 0 && values.keep !== true) rmSync(dir, { recursive: true, force: true });
  else console.log(`data, node logs and history kept in ${dir}`);
}
process.exit(exitCode);

/**
 * Makes the history wrong on purpose: the holder of the last grant of a lock "writes" after a newer
 * grant, with isOwned() true (rejected by the fence), and a phantom session holds that lock at the same
 * time with a lower sequence. Every safety checker must then fail.
 */
function plantAnomaly(history: HistoryRecorder): void {
  const grants = grantsOf(history.events);
  const last = grants.at(-1);
  if (last === undefined) return;
  const base = { process: 999, session: 999_999, name: last.name };
  const okMs = last.okMs + 0.001;
  history.add({
    ...base,
    f: 'acquire',
    type: 'invoke',
    scope: 'UNLOCK_ON_SESSION_LOSS',
    timeMs: last.invokeMs,
  });
  history.add({ ...base, f: 'acquire', type: 'ok', sequence: last.sequence - 1, timeMs: okMs });
  history.add({ ...base, f: 'write', type: 'fail', sequence: last.sequence - 1, timeMs: okMs + 1 });
  history.add({ ...base, f: 'release', type: 'invoke', sequence: last.sequence - 1, timeMs: okMs + 2 });
  history.add({
    ...base,
    f: 'end',
    type: 'ok',
    sequence: last.sequence - 1,
    reason: 'unlocked',
    lastOwnedMs: okMs + 2,
    timeMs: okMs + 2,
  });
  history.add({
    ...base,
    f: 'release',
    type: 'ok',
    sequence: last.sequence - 1,
    owned: true,
    timeMs: okMs + 3,
  });
}
