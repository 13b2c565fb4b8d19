// A request to wait for a lock another session holds is proposed up to `waitProposalDeferMs` late, or
// with the next command someone waits on (src/server/node.ts `deferProposals`): under contention the
// next waiter's request rides in the holder's unlock entry instead of a round of its own (W3,
// docs/benchmarks.md). These tests pin down what must not change: a lone wait is still proposed at once,
// and deferring never reorders a session's commands.

import { describe, expect, it } from 'vitest';
import { AbortedError, connect, type Session } from '../../src/client/index.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('deferred wait proposals', () => {
  const sessions: Session[] = [];
  const suite = useTestCluster(3, { sessions });
  const open = async () => {
    const leader = await suite.cluster.waitForLeader(15_000);
    const session = await connect({ servers: [suite.cluster.node(leader).url], ...credentials });
    sessions.push(session);
    return session;
  };
  const waiters = async (observer: Session, name: string) =>
    (await observer.listLocks({ prefix: name })).find((lock) => lock.name === name)?.waiters ?? [];

  it('S3: a wait alone, with no other command to carry it, joins the queue within milliseconds', async () => {
    const [a, b] = [await open(), await open()];
    const held = await a.lock('defer-alone');
    const started = performance.now();
    const bCall = b.lock('defer-alone');
    // listLocks is a linearizable read, not a command: it does not flush the deferred proposal.
    await suite.cluster.waitFor(
      async () => (await waiters(a, 'defer-alone')).includes(b.sessionId),
      5_000,
      'the wait to be applied',
    );
    // Held back 1 ms at most, plus a commit and a read: far below the 5 s a lost proposal would take.
    expect(performance.now() - started).toBeLessThan(1_000);
    await held.unlock();
    const granted = await bCall;
    expect(granted.getSequence()).toBe(held.getSequence() + 1);
    await granted.unlock();
  });

  // Also the regression test for a cancel sent while its acquire was still pending on the node: under the
  // acquire's own retry key it was taken for a retry, never proposed, and the wait stayed queued.
  it('S14, S3: a wait and its cancel sent together: the wait is withdrawn, never granted', async () => {
    const [a, b] = [await open(), await open()];
    for (let round = 0; round < 5; round++) {
      const held = await a.lock('defer-order');
      const controller = new AbortController();
      const bCall = b.lock('defer-order', undefined, { signal: controller.signal, timeoutMs: 60_000 });
      // Same tick: the acquire (deferrable) and the cancel (not) reach the leader together.
      queueMicrotask(() => controller.abort(new Error('changed my mind')));
      await expect(bCall).rejects.toBeInstanceOf(AbortedError);
      await suite.cluster.waitFor(
        async () => (await waiters(a, 'defer-order')).length === 0,
        5_000,
        'the withdrawn wait to leave the queue',
      );
      await held.unlock();
      // Had the cancel overtaken the acquire, b would now wait, or hold the lock.
      const next = await a.lock('defer-order', undefined, { timeoutMs: 2_000 });
      expect(next.getSequence()).toBe(held.getSequence() + 1);
      expect(await waiters(a, 'defer-order')).toEqual([]);
      await next.unlock();
    }
  });
});
