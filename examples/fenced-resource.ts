// A fenced resource: a store that remembers the highest lock sequence it has seen for each key and
// rejects writes that carry a smaller one. The sequence (S8) is the fencing token: it makes the store
// safe even against the races every lock service has — here, a write from worker A that sits in a slow
// network while A dies, B takes the lock and writes, and then arrives late.
//
//   npx tsx examples/fenced-resource.ts [ws://host:port …]

import { connect } from 'raftlock';
import { connectOptions, runIfMain, sleep } from './config.ts';

export class StaleTokenError extends Error {
  override readonly name = 'StaleTokenError';
}

/** The protected resource. It knows nothing of raftlock: only that tokens must not go backwards. */
export class FencedStore {
  private readonly highestToken = new Map<string, number>();
  private readonly values = new Map<string, string>();

  write(key: string, value: string, token: number): void {
    const highest = this.highestToken.get(key) ?? Number.NEGATIVE_INFINITY;
    if (token < highest) throw new StaleTokenError(`token ${token} is older than ${highest} for ${key}`);
    this.highestToken.set(key, token);
    this.values.set(key, value);
  }

  read(key: string): string | undefined {
    return this.values.get(key);
  }
}

export async function main(): Promise<void> {
  const options = connectOptions();
  const store = new FencedStore();
  const key = 'orders/42';

  const workerA = await connect(options);
  const workerB = await connect(options);
  try {
    const lockA = await workerA.lock('fenced/orders-42');
    console.log(`A holds the lock with token ${lockA.getSequence()}`);
    store.write(key, 'written by A', lockA.getSequence());

    // A checks it still owns the lock, then sends a write that the network holds up for a while.
    if (!lockA.isOwned()) throw new Error('A should still own the lock');
    const tokenA = lockA.getSequence();
    const lateWrite = sleep(1500).then(() => store.write(key, 'late write by A', tokenA));

    // Meanwhile A's process dies: its session ends and the cluster releases its lock (S11).
    await workerA.close();
    console.log(`A is gone; its lock is owned: ${lockA.isOwned()}`);

    const lockB = await workerB.lock('fenced/orders-42');
    console.log(`B holds the lock with token ${lockB.getSequence()}`);
    store.write(key, 'written by B', lockB.getSequence());

    try {
      await lateWrite;
      throw new Error("the store accepted A's stale write");
    } catch (error) {
      if (!(error instanceof StaleTokenError)) throw error;
      console.log(`A's late write was rejected: ${error.message}`);
    }
    console.log(`the store holds: ${store.read(key)}`);
    if (store.read(key) !== 'written by B') throw new Error('the stale write won');
    await lockB.unlock();
  } finally {
    await Promise.all([workerA.close(), workerB.close()]);
  }
}

runIfMain(import.meta.url, main);
