// The workloads of `npm run bench` (W1–W4 for any BenchCluster, W5 for raftlock), each returning plain
// figures. Timing uses performance.now(); every latency is one lock → unlock cycle (two commits).

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { decode, encode, openConnection } from '../src/client/connection.ts';
import { type RaftlockCluster, sleep } from './bench-cluster.ts';
import type { BenchCluster, BenchSession } from './bench-types.ts';

export interface Progress {
  /** Fraction 0..1 of the current step, and a short note. */
  (fraction: number, note?: string): void;
}

/** CPU time (user + system) so far of these processes, in ms; processes that are gone count 0. */
export function cpuMs(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      // Fields after the command name: state is field 3, utime 14 and stime 15 (clock ticks, 100 per second).
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      total += (Number(fields[11]) + Number(fields[12])) * 10;
    } catch {
      // not Linux, or the process exited: no figure from it
    }
  }
  return total;
}

/**
 * How long W1–W3 run before measuring. Each run starts a fresh cluster, and a fresh Node process runs its
 * hot paths unoptimised until V8 has compiled them: W1 on a new raftlock cluster climbs from ~330 to
 * ~850 cycles/s over its first four to five seconds (docs/benchmarks.md, "Warm-up"). The figures are for
 * a running service, so every system gets the same five seconds first (half the run for short runs).
 */
export function warmupMsFor(seconds: number): number {
  return Math.min(5000, seconds * 500);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function openSessions(cluster: BenchCluster, count: number): Promise<BenchSession[]> {
  const target = cluster.target(await cluster.serversLeaderFirst());
  const sessions: BenchSession[] = [];
  for (let start = 0; start < count; start += 16) {
    const batch = Math.min(16, count - start);
    sessions.push(...(await Promise.all(Array.from({ length: batch }, () => target.open()))));
  }
  return sessions;
}

async function closeSessions(sessions: readonly BenchSession[]): Promise<void> {
  await Promise.all(sessions.map((session) => session.close().catch(() => undefined)));
}

/** Ticks `progress` from 0 to 1 over `ms`, until stopped. */
function timedProgress(progress: Progress, ms: number, note: () => string): () => void {
  const start = performance.now();
  const timer = setInterval(() => progress(Math.min(1, (performance.now() - start) / ms), note()), 200);
  return () => clearInterval(timer);
}

export interface CycleFigures {
  readonly sessions: number;
  readonly seconds: number;
  readonly cycles: number;
  readonly cyclesPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  /**
   * CPU time all server processes spent per measured cycle, in µs: what a cycle costs the servers. Less
   * at the mercy of other work on a shared 2-core machine than throughput and latency, though contention
   * (cold caches, more wake-ups per batch) still inflates it.
   */
  readonly serverCpuUsPerCycle: number;
}

/** W1 / W2: `count` sessions, each looping lock → unlock on its own name, for `seconds` after a warm-up. */
export async function runOwnNames(
  cluster: BenchCluster,
  count: number,
  seconds: number,
  progress: Progress,
): Promise<CycleFigures> {
  const sessions = await openSessions(cluster, count);
  const warmupMs = warmupMsFor(seconds);
  const latencies: number[] = [];
  let errors = 0;
  const startAt = performance.now();
  const measureFrom = startAt + warmupMs;
  const endAt = measureFrom + seconds * 1000;
  const stop = timedProgress(progress, warmupMs + seconds * 1000, () => `${latencies.length} cycles`);
  const pids = cluster.pids();
  let cpuAtStart = Number.NaN;
  const cpuTimer = setTimeout(() => {
    cpuAtStart = cpuMs(pids);
  }, warmupMs);
  await Promise.all(
    sessions.map(async (session, i) => {
      const name = `w-${count}-${i}`;
      while (performance.now() < endAt) {
        const start = performance.now();
        try {
          await session.lock(name);
          await session.unlock(name);
        } catch {
          errors++;
          continue;
        }
        if (start >= measureFrom) latencies.push(performance.now() - start);
      }
    }),
  );
  stop();
  clearTimeout(cpuTimer);
  const serverCpuMs = cpuMs(pids) - cpuAtStart;
  await closeSessions(sessions);
  latencies.sort((a, b) => a - b);
  return {
    sessions: count,
    seconds,
    cycles: latencies.length,
    cyclesPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    errors,
    serverCpuUsPerCycle: latencies.length > 0 ? (serverCpuMs * 1000) / latencies.length : Number.NaN,
  };
}

export interface ContentionFigures {
  readonly sessions: number;
  readonly seconds: number;
  readonly handoffs: number;
  readonly handoffsPerSecond: number;
  /** Most grants to one session divided by fewest. */
  readonly fairness: number;
  readonly grantsMin: number;
  readonly grantsMax: number;
  readonly errors: number;
}

/** W3: `count` sessions contending for one name: lock → unlock in a loop; every grant is a handoff. */
export async function runContention(
  cluster: BenchCluster,
  count: number,
  seconds: number,
  progress: Progress,
): Promise<ContentionFigures> {
  const sessions = await openSessions(cluster, count);
  const name = 'w3-contended';
  const warmupMs = warmupMsFor(seconds);
  const grants = sessions.map(() => 0);
  let errors = 0;
  let handoffs = 0;
  const measureFrom = performance.now() + warmupMs;
  const endAt = measureFrom + seconds * 1000;
  const stop = timedProgress(progress, warmupMs + seconds * 1000, () => `${handoffs} handoffs`);
  await Promise.all(
    sessions.map(async (session, i) => {
      while (performance.now() < endAt) {
        try {
          await session.lock(name);
          const grantedAt = performance.now();
          await session.unlock(name);
          if (grantedAt >= measureFrom && grantedAt < endAt) {
            grants[i]!++;
            handoffs++;
          }
        } catch {
          errors++;
        }
      }
    }),
  );
  stop();
  await closeSessions(sessions);
  const grantsMin = Math.min(...grants);
  const grantsMax = Math.max(...grants);
  return {
    sessions: count,
    seconds,
    handoffs,
    handoffsPerSecond: handoffs / seconds,
    fairness: grantsMin === 0 ? Number.POSITIVE_INFINITY : grantsMax / grantsMin,
    grantsMin,
    grantsMax,
    errors,
  };
}

export interface FailoverFigures {
  readonly kills: number;
  readonly sessions: number;
  /** Per kill: ms from the kill until every session completed a cycle that started after it. */
  readonly recoveryMs: readonly number[];
  readonly p50Ms: number;
  readonly maxMs: number;
  readonly errors: number;
}

/**
 * W4: W2's load (`count` sessions on their own names) while the leader is killed with SIGKILL `kills`
 * times; after each, the time until every session has completed a cycle begun after the kill. The killed
 * node is restarted and the load settles before the next kill.
 */
export async function runFailover(
  cluster: BenchCluster,
  count: number,
  kills: number,
  progress: Progress,
): Promise<FailoverFigures> {
  const sessions = await openSessions(cluster, count);
  let running = true;
  let errors = 0;
  // Completion time of each session's latest cycle, and when that cycle started.
  const lastStart = sessions.map(() => 0);
  const firstDoneAfter = sessions.map(() => Number.POSITIVE_INFINITY);
  let killAt = Number.POSITIVE_INFINITY;
  const loops = sessions.map(async (session, i) => {
    const name = `w4-${i}`;
    while (running) {
      const start = performance.now();
      lastStart[i] = start;
      try {
        await session.lock(name);
        await session.unlock(name);
      } catch {
        errors++;
        await sleep(5);
        continue;
      }
      const done = performance.now();
      if (start >= killAt && done < firstDoneAfter[i]!) firstDoneAfter[i] = done;
    }
  });
  const recoveryMs: number[] = [];
  try {
    await sleep(1000);
    for (let k = 0; k < kills; k++) {
      progress(k / kills, `kill ${k + 1}/${kills}`);
      const leader = await cluster.waitForLeader(30_000);
      firstDoneAfter.fill(Number.POSITIVE_INFINITY);
      killAt = performance.now();
      cluster.kill9(leader);
      const deadline = killAt + 30_000;
      while (firstDoneAfter.some((t) => t === Number.POSITIVE_INFINITY) && performance.now() < deadline)
        await sleep(5);
      const recovered = Math.max(...firstDoneAfter);
      recoveryMs.push(recovered - killAt);
      killAt = Number.POSITIVE_INFINITY;
      cluster.restart(leader);
      // Let the restarted node come back and catch up before the next kill.
      await sleep(3000);
    }
  } finally {
    running = false;
    await Promise.race([Promise.all(loops), sleep(10_000)]);
    await closeSessions(sessions);
  }
  const sorted = [...recoveryMs].sort((a, b) => a - b);
  return {
    kills,
    sessions: count,
    recoveryMs,
    p50Ms: percentile(sorted, 50),
    maxMs: sorted.at(-1) ?? Number.NaN,
    errors,
  };
}

export interface ScaleFigures {
  readonly sessions: number;
  readonly locks: number;
  readonly loadSeconds: number;
  readonly leaderRssBytes: number;
  /** From spawning the killed node until its applied index reached the leader's commit index. */
  readonly restartCatchUpMs: number;
}

/**
 * W5: `sessionCount` sessions holding `locksPerSession` locks each (sessions whose connection then
 * drops keep their locks for their reconnection window), the leader's RSS, then kill -9 of a follower
 * and the time for it to restart and catch up.
 */
export async function runScale(
  cluster: RaftlockCluster,
  sessionCount: number,
  locksPerSession: number,
  progress: Progress,
): Promise<ScaleFigures> {
  const servers = await cluster.serversLeaderFirst();
  const url = servers[0]!;
  const started = performance.now();
  let opened = 0;
  let next = 0;
  const concurrency = 256;
  const one = async (s: number): Promise<void> => {
    const connection = await openConnection(
      url,
      { principal: 'control', password: 'password', reconnectionWindowMs: 3_600_000 },
      30_000,
    );
    const ws = connection.ws;
    await new Promise<void>((resolve, reject) => {
      let answered = 0;
      ws.on('message', (data) => {
        const frame = decode(data);
        if (frame.t !== 'res') return;
        if (!frame.ok) {
          reject(new Error(`W5: lock refused: ${frame.error.code} ${frame.error.message}`));
          return;
        }
        if (++answered === locksPerSession) resolve();
      });
      ws.on('close', () => reject(new Error('W5: connection closed')));
      for (let k = 0; k < locksPerSession; k++) {
        ws.send(
          encode({
            t: 'req',
            id: k + 1,
            op: 'lock',
            requestNo: k + 1,
            name: `w5-${s}-${k}`,
            scope: 'UNLOCK_ON_SESSION_LOSS',
          }),
        );
      }
    });
    ws.terminate();
    opened++;
  };
  const workers = Array.from({ length: concurrency }, async () => {
    while (next < sessionCount) {
      const s = next++;
      for (let attempt = 0; ; attempt++) {
        try {
          await one(s);
          break;
        } catch (error) {
          if (attempt >= 3) throw error;
          await sleep(100);
        }
      }
      if (opened % 500 === 0) progress((0.8 * opened) / sessionCount, `${opened} sessions`);
    }
  });
  await Promise.all(workers);
  const loadSeconds = (performance.now() - started) / 1000;
  const leader = await cluster.waitForLeader(30_000);
  // Let the last entries apply and memory settle.
  await sleep(2000);
  const leaderRssBytes = cluster.rssBytes(leader);
  progress(0.85, 'restart');
  const follower = leader === 0 ? 1 : 0;
  cluster.kill9(follower);
  await sleep(500);
  const target = (await cluster.status(leader, 5_000))?.commitIndex ?? 0;
  const spawnAt = performance.now();
  cluster.restart(follower);
  let restartCatchUpMs = Number.NaN;
  while (performance.now() - spawnAt < 120_000) {
    const status = await cluster.status(follower, 500);
    if (status !== null && status.appliedIndex >= target) {
      restartCatchUpMs = performance.now() - spawnAt;
      break;
    }
    await sleep(20);
  }
  progress(1, 'done');
  return {
    sessions: sessionCount,
    locks: sessionCount * locksPerSession,
    loadSeconds,
    leaderRssBytes,
    restartCatchUpMs,
  };
}
