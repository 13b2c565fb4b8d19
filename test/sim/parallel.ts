// Checks many seeds on all cores: each seed's run is independent and deterministic, so splitting the
// seeds over child processes changes nothing but the wall time. The first failure stops the rest.

import { type ChildProcess, fork } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { CheckSeedOptions } from './check-seed.ts';
import type { SimReport } from './schedule.ts';
import type { WorkerReply, WorkerRequest } from './sim-worker.ts';

export interface ParallelResult {
  reports: SimReport[];
  failure: { seed: number; text: string } | null;
}

const workerPath = fileURLToPath(new URL('./sim-worker.ts', import.meta.url));

export async function checkSeedsInParallel(
  seeds: readonly number[],
  options: CheckSeedOptions,
  workers = Math.max(1, Math.min(availableParallelism(), 8)),
): Promise<ParallelResult> {
  const reports: SimReport[] = [];
  let failure: ParallelResult['failure'] = null;
  const children: ChildProcess[] = [];
  const jobs = Array.from({ length: Math.min(workers, seeds.length) }, (_, w) => {
    const mine = seeds.filter((_, k) => k % workers === w);
    const child = fork(workerPath, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    return new Promise<void>((resolve, reject) => {
      child.on('message', (reply: WorkerReply) => {
        if (reply.type === 'report') reports.push(reply.report);
        else if (reply.type === 'failure') {
          failure ??= { seed: reply.seed, text: reply.text };
          for (const other of children) if (other !== child) other.kill();
        }
      });
      child.on('exit', (code, signal) => {
        if (code === 0 || signal === 'SIGTERM' || failure !== null) resolve();
        else reject(new Error(`sim worker exited with ${code ?? signal}`));
      });
      child.on('error', reject);
      child.send({ seeds: mine, options } satisfies WorkerRequest);
    });
  });
  await Promise.all(jobs);
  return { reports, failure };
}
