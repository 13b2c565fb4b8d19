// Integration: clients served by a follower's gateway (DESIGN.md "Sessions across a cluster"): requests
// forwarded to the leader, answers and notices from the follower's own apply (S9), keepalives confirmed
// through leader-acked liveness reports (S10), and a leader failover the client never sees (C2).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect, type Session, SessionLockScope } from '../../src/client/index.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('clients on a follower', () => {
  const sessions: Session[] = [];
  const suite = useTestCluster(3, { sessions });
  /** Opens a session through exactly one node (no other server to fall back to). */
  const openOn = async (id: string) => {
    const session = await connect({ servers: [suite.cluster.node(id).url], ...credentials });
    sessions.push(session);
    return session;
  };
  const followers = async (except: string | null = null) => {
    const leader = await suite.cluster.waitForLeader(5_000, except);
    return suite.cluster.nodes.filter(
      (node) => node.id !== leader && node.id !== except && node.process !== null,
    );
  };

  it('S9: a client on a follower locks, waits, is granted and unlocks through its follower', async () => {
    const [follower] = await followers();
    const status = await suite.cluster.status(follower!.id);
    expect(status?.role).toBe('follower');
    const a = await openOn(follower!.id);
    const b = await openOn(follower!.id);
    expect((await suite.cluster.status(follower!.id))?.clientConnections).toBeGreaterThanOrEqual(2);
    // The node serving these sockets is still a follower: nothing was redirected to the leader.
    expect((await suite.cluster.status(follower!.id))?.role).toBe('follower');

    const held = await a.lock('fw-basic');
    expect(held.getSequence()).toBeGreaterThan(0);
    expect(held.isOwned()).toBe(true);
    const waiting = b.lock('fw-basic');
    await suite.cluster.waitFor(
      async () => ((await a.listLocks({ prefix: 'fw-basic' }))[0]?.waiters.length ?? 0) === 1,
      5_000,
      'the wait to be replicated',
    );
    expect(await held.unlock()).toBe(true);
    const granted = await waiting;
    expect(granted.getSequence()).toBeGreaterThan(held.getSequence());
    expect(await granted.unlock()).toBe(true);
    expect(await a.listLocks({ prefix: 'fw-basic' })).toEqual([]);
  });

  it('S10: keepalives through a follower are confirmed by leader-acked liveness reports; an idle session keeps its lock', async () => {
    const [follower] = await followers();
    // A leader in office for longer than the connection timeout: a session it has never heard of must
    // still get a full bound from its opening, not from the leader's start (C6).
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const session = await openOn(follower!.id);
    let lost = 0;
    session.on('lockLost', () => lost++);
    // The weaker scope: released as soon as the leader believes the connection lost (S5).
    const lock = await session.lock('fw-liveness', SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
    // Past several connection timeouts with only keepalives: the leader keeps hearing of the session
    // through the follower's reports, so nothing is declared lost, and isOwned() stays true because
    // keepalives keep being confirmed.
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect(lost).toBe(0);
    expect(lock.isOwned()).toBe(true);
    const [listed] = await session.listLocks({ prefix: 'fw-liveness' });
    expect(listed?.owner).toBe(session.sessionId);
    expect(listed?.sequence).toBe(lock.getSequence());
    expect(await lock.unlock()).toBe(true);
  });

  it('C2: kill -9 of the leader while a follower-connected client waits → its grant arrives once, on the same connection, with a greater sequence', async () => {
    const leader = await suite.cluster.waitForLeader();
    const [follower, other] = await followers();
    const owner = await openOn(other!.id);
    const waiter = await openOn(follower!.id);
    let reconnects = 0;
    waiter.on('reconnecting', () => reconnects++);
    const grants: number[] = [];
    const held = await owner.lock('fw-failover');
    const waiting = waiter.lock('fw-failover').then((lock) => {
      grants.push(lock.getSequence());
      return lock;
    });
    await suite.cluster.waitFor(
      async () => ((await waiter.listLocks({ prefix: 'fw-failover' }))[0]?.waiters.length ?? 0) === 1,
      5_000,
      'the wait to be replicated',
    );

    await suite.cluster.kill(leader);
    const newLeader = await suite.cluster.waitForLeader(5_000, leader);
    expect(newLeader).not.toBe(leader);

    // The owner's unlock goes through its node (follower or new leader) to the new leader.
    expect(await held.unlock()).toBe(true);
    const granted = await waiting;
    expect(granted.getSequence()).toBeGreaterThan(held.getSequence());
    expect(granted.isOwned()).toBe(true);
    // Once: no second grant shows up later.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(grants).toEqual([granted.getSequence()]);
    if (follower!.id !== newLeader) {
      // Still served by a follower, over the connection it had before the failover.
      expect((await suite.cluster.status(follower!.id))?.role).toBe('follower');
    }
    expect(reconnects).toBe(0);
    expect(await granted.unlock()).toBe(true);

    suite.cluster.start(leader);
    await suite.cluster.waitFor(
      async () => (await suite.cluster.status(leader))?.leader === newLeader,
      10_000,
      'the old leader to rejoin',
    );
  });

  it('graceful SIGTERM of the leader hands leadership over first; follower clients carry on', async () => {
    const leader = await suite.cluster.waitForLeader();
    const [follower] = await followers();
    const session = await openOn(follower!.id);
    let reconnects = 0;
    session.on('reconnecting', () => reconnects++);
    const before = await session.lock('fw-sigterm');
    await suite.cluster.kill(leader, 'SIGTERM');
    const newLeader = await suite.cluster.waitForLeader(3_000, leader);
    expect(newLeader).not.toBe(leader);
    // The old leader handed over before it closed anything (no election timeout to wait out).
    const log = readFileSync(join(suite.cluster.dir, `${leader}.log`), 'utf8');
    expect(log).toMatch(/"event":"leadership_handed_over","ok":true/);
    expect(log.indexOf('"event":"leadership_handed_over"')).toBeLessThan(
      log.lastIndexOf('"event":"node_stopped"'),
    );
    expect(await before.unlock()).toBe(true);
    const after = await session.lock('fw-sigterm');
    expect(after.getSequence()).toBeGreaterThan(before.getSequence());
    expect(await after.unlock()).toBe(true);
    if (follower!.id !== newLeader) expect(reconnects).toBe(0);
    suite.cluster.start(leader);
  });
});
