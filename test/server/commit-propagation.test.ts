// The leader spreads a commit index at once only when another node waits for it (src/server/node.ts
// noteWaiters; docs/raft.md deferCommitBroadcast): a follower's gateway answers its clients, and sends
// their grant notices, only once it applies the entry itself. Left to the next heartbeat (or to the
// ReadIndex round that confirms a follower's liveness report, once a tick), a commit would wait half a
// tick on average — 100 ms with the 200 ms ticks here; these clients must not.

import { describe, expect, it } from 'vitest';
import { connect, type Session } from '../../src/client/index.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('commit propagation with deferred broadcasts', () => {
  const sessions: Session[] = [];
  const suite = useTestCluster(3, {
    sessions,
    extraArgs: ['--tick-ms', '200', '--heartbeat-ticks', '5', '--election-ticks', '10'],
  });
  const openOn = async (id: string) => {
    const session = await connect({ servers: [suite.cluster.node(id).url], ...credentials });
    sessions.push(session);
    return session;
  };

  it('S9, C2: a client on a follower locks and unlocks without waiting for a heartbeat', async () => {
    const leader = await suite.cluster.waitForLeader(15_000);
    const follower = suite.cluster.nodes.find((node) => node.id !== leader)!;
    const session = await openOn(follower.id);
    await (await session.lock('cp-warm')).unlock();
    const started = performance.now();
    for (let i = 0; i < 10; i++) {
      const lock = await session.lock(`cp-${i}`);
      expect(lock.isOwned()).toBe(true);
      expect(await lock.unlock()).toBe(true);
    }
    // 20 commits: ~2 s if each waited for the next tick (measured with the broadcast planted out).
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('S9: a waiter on a follower hears of its grant at once when a holder on the leader unlocks', async () => {
    const leader = await suite.cluster.waitForLeader(15_000);
    const follower = suite.cluster.nodes.find((node) => node.id !== leader)!;
    const holder = await openOn(leader);
    const waiter = await openOn(follower.id);
    let waited = 0;
    for (let i = 0; i < 20; i++) {
      const held = await holder.lock('cp-handoff');
      const granted = waiter.lock('cp-handoff');
      await new Promise((resolve) => setTimeout(resolve, 100)); // the wait reaches the leader's table
      const releasedAt = performance.now();
      expect(await held.unlock()).toBe(true);
      const lock = await granted;
      waited += performance.now() - releasedAt;
      expect(lock.getSequence()).toBeGreaterThan(held.getSequence());
      expect(await lock.unlock()).toBe(true);
    }
    // Twenty handoffs: ~1 s in all if each waited for the next tick (measured: 0.1 s without waiting).
    expect(waited).toBeLessThan(400);
  });
});
