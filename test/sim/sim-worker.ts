// A child process that checks a list of seeds for test/sim/parallel.ts and reports back over IPC.

import { type CheckSeedOptions, checkSeed, formatFailure } from './check-seed.ts';
import type { SimReport } from './schedule.ts';

export interface WorkerRequest {
  seeds: number[];
  options: CheckSeedOptions;
}

export type WorkerReply =
  | { type: 'report'; report: SimReport }
  | { type: 'failure'; seed: number; text: string }
  | { type: 'done' };

process.once('message', (request: WorkerRequest) => {
  for (const seed of request.seeds) {
    const outcome = checkSeed(seed, request.options);
    if (!outcome.ok) {
      process.send!({ type: 'failure', seed, text: formatFailure(outcome) } satisfies WorkerReply, () =>
        process.disconnect(),
      );
      return;
    }
    process.send!({ type: 'report', report: outcome.report } satisfies WorkerReply);
  }
  process.send!({ type: 'done' } satisfies WorkerReply, () => process.disconnect());
});
