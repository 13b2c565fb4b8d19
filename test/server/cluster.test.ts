// Integration: real `raftlock start` processes on loopback, driven through the client library.

import { describe, expect, it } from 'vitest';
import { connect, type Session, SessionLockScope } from '../../src/client/index.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

// Every test runs twice: with synced writes on the event loop's thread (the default) and in libuv's pool.
describe.each(['inline', 'pool'])('a 3-node cluster of real processes, disk writes %s', (diskWrites) => {
  const sessions: Session[] = [];
  const suite = useTestCluster(3, { sessions, extraArgs: ['--disk-writes', diskWrites] });
  const open = async () => {
    const session = await connect({ servers: suite.cluster.urls, ...credentials });
    sessions.push(session);
    return session;
  };

  it('C1: elects one leader, and a client locks and unlocks through it', async () => {
    const leader = await suite.cluster.waitForLeader();
    const statuses = await Promise.all(suite.cluster.nodes.map((node) => suite.cluster.status(node.id)));
    expect(statuses.filter((status) => status?.role === 'leader')).toHaveLength(1);
    for (const status of statuses) expect(status?.leader).toBe(leader);

    const session = await open();
    const lock = await session.lock('it-basic');
    expect(lock.getName()).toBe('it-basic');
    expect(lock.getScope()).toBe(SessionLockScope.UNLOCK_ON_SESSION_LOSS);
    expect(lock.getSequence()).toBeGreaterThan(0);
    expect(lock.isOwned()).toBe(true);
    // S4: a repeat call gets an equal SessionLock at once.
    expect((await session.lock('it-basic')).equals(lock)).toBe(true);
    expect(await lock.unlock()).toBe(true);
    expect(lock.isOwned()).toBe(false);
    const again = await session.lock('it-basic');
    expect(again.getSequence()).toBeGreaterThan(lock.getSequence());
    expect(await again.unlock()).toBe(true);
    const listed = await session.listLocks({ prefix: 'it-basic' });
    expect(listed).toEqual([]);
  });

  it('S9: a waiter is told of its grant only through a committed handoff, FIFO', async () => {
    const [a, b, c] = [await open(), await open(), await open()];
    const held = await a.lock('it-fifo');
    const bWait = b.lock('it-fifo');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const cWait = c.lock('it-fifo');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const locks = await a.listLocks({ prefix: 'it-fifo' });
    expect(locks[0]?.waiters).toEqual([b.sessionId, c.sessionId]);
    expect(await held.unlock()).toBe(true);
    const bLock = await bWait;
    expect(bLock.getSequence()).toBeGreaterThan(held.getSequence());
    expect(await bLock.unlock()).toBe(true);
    const cLock = await cWait;
    expect(cLock.getSequence()).toBeGreaterThan(bLock.getSequence());
    await cLock.unlock();
  });

  it('C2, S8: kill -9 of the leader → a new leader within 2 s; the waiter gets its grant with a greater sequence', async () => {
    const owner = await open();
    const waiter = await open();
    const held = await owner.lock('it-failover');
    const waiting = waiter.lock('it-failover');
    await suite.cluster.waitFor(
      async () => ((await owner.listLocks({ prefix: 'it-failover' }))[0]?.waiters.length ?? 0) === 1,
      5_000,
      'the wait to be replicated',
    );
    const oldLeader = await suite.cluster.waitForLeader();
    const killedAt = Date.now();
    await suite.cluster.kill(oldLeader);
    const newLeader = await suite.cluster.waitForLeader(5_000, oldLeader);
    const electionMs = Date.now() - killedAt;
    console.log(`leader ${oldLeader} killed; ${newLeader} leads after ${electionMs} ms`);
    expect(newLeader).not.toBe(oldLeader);
    expect(electionMs).toBeLessThan(2_000);

    // The owner's client resumes its session on the new leader by itself; its lock survived.
    expect(await held.unlock()).toBe(true);
    const granted = await waiting;
    expect(granted.getSequence()).toBeGreaterThan(held.getSequence());
    expect(granted.isOwned()).toBe(true);
    expect(await granted.unlock()).toBe(true);

    suite.cluster.start(oldLeader);
    await suite.cluster.waitFor(
      async () => (await suite.cluster.status(oldLeader))?.leader === newLeader,
      10_000,
      'the old leader to rejoin',
    );
  });

  it('C3: kill -9 of every node and a restart keep every acknowledged grant, wait and session', async () => {
    const owner = await open();
    const waiter = await open();
    const held = await owner.lock('it-durable');
    const waiting = waiter.lock('it-durable');
    await suite.cluster.waitFor(
      async () => ((await owner.listLocks({ prefix: 'it-durable' }))[0]?.waiters.length ?? 0) === 1,
      5_000,
      'the wait to be replicated',
    );
    await Promise.all(suite.cluster.nodes.map((node) => suite.cluster.kill(node.id)));
    for (const node of suite.cluster.nodes) suite.cluster.start(node.id);
    await suite.cluster.waitForLeader(15_000);

    const observer = await open();
    await suite.cluster.waitFor(
      async () => {
        const [lock] = await observer.listLocks({ prefix: 'it-durable' }).catch(() => []);
        return lock !== undefined;
      },
      10_000,
      'the lock table to be readable',
    );
    const [lock] = await observer.listLocks({ prefix: 'it-durable' });
    expect(lock?.owner).toBe(owner.sessionId);
    expect(lock?.sequence).toBe(held.getSequence());
    expect(lock?.waiters).toEqual([waiter.sessionId]);

    // Both clients resume their sessions; the handoff still happens, once.
    expect(await held.unlock()).toBe(true);
    const granted = await waiting;
    expect(granted.getSequence()).toBeGreaterThan(held.getSequence());
    expect(await granted.unlock()).toBe(true);
  });
});
