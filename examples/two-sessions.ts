// The Diffusion session-lock example, ported: session 1 takes `lockA` with UNLOCK_ON_CONNECTION_LOSS,
// session 2 asks for it and waits, session 1 releases it after a second, session 2 gets it with a
// greater sequence (S7, S8), releases it after a second, and both sessions close.
//
//   npx tsx examples/two-sessions.ts [ws://host:port …]

import { connect, SessionLockScope } from 'raftlock';
import { connectOptions, runIfMain, sleep } from './config.ts';

const LOCK_NAME = 'lockA';

export async function main(): Promise<void> {
  const options = connectOptions();
  const session1 = await connect(options);
  const session2 = await connect(options);
  console.log('Sessions 1 and 2 have been created.');
  try {
    console.log('Requesting lock 1...');
    const lock1 = await session1.lock(LOCK_NAME, SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
    console.log(`Lock 1 has been acquired (sequence ${lock1.getSequence()}).`);

    console.log('Requesting lock 2...');
    const lock2Promise = session2.lock(LOCK_NAME, SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
    lock2Promise.then((lock2) => console.log(`Lock 2 has been acquired (sequence ${lock2.getSequence()}).`));

    await sleep(1000);
    console.log('Requesting lock 1 release...');
    const wasOwned1 = await lock1.unlock();
    console.log(`Lock 1 has been released (was owned: ${wasOwned1}).`);

    const lock2 = await lock2Promise;
    if (lock2.getSequence() <= lock1.getSequence())
      throw new Error(`sequence did not grow: ${lock1.getSequence()} then ${lock2.getSequence()}`);

    await sleep(1000);
    console.log('Requesting lock 2 release...');
    const wasOwned2 = await lock2.unlock();
    console.log(`Lock 2 has been released (was owned: ${wasOwned2}).`);
  } finally {
    await Promise.all([session1.close(), session2.close()]);
    console.log('Sessions 1 and 2 have been closed.');
  }
}

runIfMain(import.meta.url, main);
