// Electing one worker among many to run a housekeeping task. Every worker asks for the same lock; the
// one that gets it is the leader and runs the task, the others wait in line (FIFO, S7). The lock is
// UNLOCK_ON_CONNECTION_LOSS, so a leader that drops off the network is replaced within the
// connection-loss bound; `lock.signal` stops its task the moment ownership ends (S10). Here each leader
// does a few rounds and then steps down (as in a rolling deploy), so the next one takes over.
//
//   npx tsx examples/housekeeping-election.ts [ws://host:port …]

import { connect, SessionLockScope } from 'raftlock';
import { connectOptions, runIfMain, sleep } from './config.ts';

const workerCount = 3;
const roundsPerTerm = 2;

export async function main(): Promise<void> {
  const options = connectOptions();
  let running = 0;
  let overlaps = 0;
  const terms: { worker: number; sequence: number }[] = [];

  async function housekeeping(worker: number, round: number, signal: AbortSignal): Promise<void> {
    running += 1;
    if (running > 1) overlaps += 1;
    try {
      console.log(`worker ${worker}: housekeeping round ${round}`);
      await sleep(200, signal); // the task stops as soon as leadership ends
    } finally {
      running -= 1;
    }
  }

  async function worker(id: number): Promise<void> {
    await using session = await connect(options);
    const lock = await session.lock('housekeeping-leader', SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
    console.log(`worker ${id}: elected (sequence ${lock.getSequence()})`);
    terms.push({ worker: id, sequence: lock.getSequence() });
    for (let round = 1; round <= roundsPerTerm && lock.isOwned(); round++) {
      await housekeeping(id, round, lock.signal);
    }
    console.log(`worker ${id}: stepping down`);
    await lock.unlock();
  }

  await Promise.all(Array.from({ length: workerCount }, (_, i) => worker(i + 1)));

  const sequences = terms.map((term) => term.sequence);
  const increasing = sequences.every((sequence, i) => i === 0 || sequence > (sequences[i - 1] ?? 0));
  console.log(`${terms.length} terms, ${overlaps} overlaps, sequences increasing: ${increasing}`);
  if (terms.length !== workerCount || overlaps !== 0 || !increasing) throw new Error('election went wrong');
}

runIfMain(import.meta.url, main);
