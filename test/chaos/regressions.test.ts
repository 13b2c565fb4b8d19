// Scripted scenarios, against real processes, for bugs the chaos run (npm run chaos) found. Each names
// the run that found it. A test marked `it.fails` reproduces a bug that is still open: it passes while
// the bug is there and turns red when the fix lands — then drop the `.fails`.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChaosCluster } from '../../scripts/chaos/cluster.ts';
import { connect, type RaftlockError } from '../../src/client/index.ts';
import { createPrng } from '../../src/raft/prng.ts';
import { nodeTimingDefaults } from '../../src/server/node.ts';
import { TcpProxy } from '../client/proxy.ts';
import { TestCluster } from '../server/harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('chaos regressions (real processes)', () => {
  let cluster: TestCluster | null = null;
  let chaos: { cluster: ChaosCluster; dir: string } | null = null;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = null;
    await chaos?.cluster.destroy();
    if (chaos !== null) rmSync(chaos.dir, { recursive: true, force: true });
    chaos = null;
  });

  // Found by `npm run chaos -- --short --seconds 30` (seed 30613637): after kill -9 of the leader, a
  // follower that knows no leader yet answers an unlock with NOT_LEADER (RaftlockNode.submit); the client
  // rejects unlock() with it instead of re-sending once a leader is known (C2), yet the grant stays in the
  // table. The session's next lock() of the name then resolves at once (S4 in the table) with the *old*
  // sequence: a new SessionLock for a grant the client already reported ended (S6, S10).
  // Fixed: a node that knows no leader keeps keyed commands pending until one is elected (node.ts submit).
  it('S6, S10, C2: an unlock sent while the gateway knows no leader applies once a leader is back; the next grant has a new sequence', async () => {
    cluster = await TestCluster.create(3);
    const leader = await cluster.waitForLeader(15_000);
    const follower = cluster.nodes.find((node) => node.id !== leader)!;
    const session = await connect({ servers: [follower.url], ...credentials, connectDeadlineMs: 15_000 });
    const first = await session.lock('regression-not-leader', undefined, { timeoutMs: 10_000 });

    // Leave the follower alone: it knows no leader, and no election can succeed.
    for (const node of cluster.nodes) if (node.id !== follower.id) await cluster.kill(node.id);
    await cluster.waitFor(
      async () => (await cluster!.status(follower.id))?.leader === null,
      10_000,
      'the follower to forget the leader',
    );
    const unlocked = first.unlock().then(
      (owned) => ({ owned, error: null as string | null }),
      (error: RaftlockError) => ({ owned: false, error: error.code }),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const node of cluster.nodes) if (node.id !== follower.id) cluster.start(node.id);
    await cluster.waitForLeader(20_000);

    expect(await unlocked).toEqual({ owned: true, error: null });
    const second = await session.lock('regression-not-leader', undefined, { timeoutMs: 15_000 });
    expect(second.getSequence()).toBeGreaterThan(first.getSequence());
    await session.close();
  });

  // Found by `npm run chaos -- --short` (seed 553528129): after the nemesis stepped n3's clock back 39 s
  // and restarted it, 1,189 lock calls failed TIMEOUT. The gateway turns `timeoutMs` into an absolute
  // deadline on its own clock (gateway.ts: nodeClock.now() + frame.timeoutMs), and the lock table fires
  // it against the leader's entry times: a gateway whose clock is behind the leader's by more than
  // timeoutMs makes every contended lock(…, {timeoutMs}) fail TIMEOUT at once (S14). Clocks of different
  // hosts are never exactly equal; the leader should stamp the deadline from its own clock.
  // Fixed: a forward batch carries the follower's send time; the leader keeps the time left, on its clock.
  it('S14: a lock timeout counts from when it was asked, even through a gateway whose clock is 60 s behind the leader', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-skew-'));
    chaos = {
      dir,
      cluster: await ChaosCluster.create({
        dir,
        size: 3,
        timing: nodeTimingDefaults,
        random: createPrng(1),
        clockMode: 'monotonic',
      }),
    };
    const skewed = chaos.cluster;
    const leader = await skewed.waitForLeader(20_000);
    const behind = skewed.ids.find((id) => id !== leader)!;
    skewed.jumpClock(behind, -60_000);
    await skewed.kill(behind, 'SIGTERM');
    skewed.start(behind);
    const deadline = performance.now() + 20_000;
    while ((await skewed.status(behind))?.leader !== leader && performance.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));

    const holder = await connect({ servers: [skewed.node(leader!).url], ...credentials });
    await holder.lock('regression-skew');
    const waiter = await connect({
      servers: [skewed.node(behind).url],
      ...credentials,
      connectDeadlineMs: 15_000,
    });
    const askedAt = performance.now();
    const outcome = await waiter.lock('regression-skew', undefined, { timeoutMs: 3_000 }).then(
      () => 'granted',
      (error: RaftlockError) => error.code,
    );
    const waitedMs = performance.now() - askedAt;
    await Promise.all([holder.close(), waiter.close()]);
    expect(outcome).toBe('TIMEOUT');
    expect(waitedMs).toBeGreaterThan(2_500);
  });

  // Why the node runs on a monotonic clock (src/server/clock.ts, docs/chaos.md "The node's clock"). Run
  // with CHAOS_CLOCK_MODE=wall (the nodes then use RAFTLOCK_CLOCK=wall) this scenario fails: the leader's
  // forward step expires the disconnected session at once and hands its lock to another session while
  // the first client still, by its own monotonic clock, reports it owned — an S10 violation.
  it('S10, C6: a +60 s wall-clock step on the leader does not expire a disconnected session early', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-step-'));
    chaos = {
      dir,
      cluster: await ChaosCluster.create({
        dir,
        size: 3,
        timing: nodeTimingDefaults,
        random: createPrng(2),
        clockMode: (process.env.CHAOS_CLOCK_MODE as 'wall' | undefined) ?? 'monotonic',
      }),
    };
    const stepped = chaos.cluster;
    const leader = (await stepped.waitForLeader(20_000))!;
    const follower = stepped.ids.find((id) => id !== leader)!;
    const proxy = await TcpProxy.start(stepped.node(follower).url);
    const holder = await connect({
      servers: [proxy.url],
      ...credentials,
      reconnectionWindowMs: 20_000,
      connectDeadlineMs: 15_000,
    });
    const held = await holder.lock('regression-clock-step');
    await proxy.stop(); // the holder is cut off: its session lives on for its 20 s window
    // Past the connection-loss bound, so the leader has stamped the loss with its clock; then step it.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    stepped.jumpClock(leader, 60_000);

    const other = await connect({ servers: [stepped.node(leader).url], ...credentials });
    const outcome = await other.lock('regression-clock-step', undefined, { timeoutMs: 4_000 }).then(
      (lock) => `granted while the holder's isOwned() was ${held.isOwned()} (sequence ${lock.getSequence()})`,
      (error: RaftlockError) => error.code,
    );
    expect(held.isOwned()).toBe(true);
    expect(outcome).toBe('TIMEOUT');
    await other.close();
    holder.removeAllListeners();
  });

  // Found by `npm run chaos -- --seconds 1200 --nodes 5` (seed 1255184297): 10,638 lock calls failed
  // TIMEOUT, in bursts of ~270 per 5 s lasting about a minute after the nemesis stepped a node's clock
  // forward (+56.8 s) and restarted it. Once a leader whose clock is ahead has committed entries, the
  // table's time (the largest entry time seen, which never moves back) is ahead of every later leader's
  // clock, so the deadline a later leader computed (its now + the time left) was already past and every
  // contended lock(…, {timeoutMs}) failed TIMEOUT at once — until real time caught up (S14).
  // Fixed: the leader stamps entries no earlier than the table's time and moves deadlines by as much
  // (node.ts flushProposals). Takes 10–35 s: a few kill -9 rounds make the skewed node leader.
  it('S14: a lock timeout counts from when it was asked after a leader whose clock was 60 s ahead', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-fwdskew-'));
    chaos = {
      dir,
      cluster: await ChaosCluster.create({
        dir,
        size: 3,
        timing: nodeTimingDefaults,
        random: createPrng(3),
        clockMode: 'monotonic',
      }),
    };
    const skewed = chaos.cluster;
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let leader = await skewed.waitForLeader(20_000);
    skewed.jumpClock('n1', 60_000);
    await skewed.kill('n1', 'SIGTERM');
    skewed.start('n1');
    await sleep(2_000);
    // Make the node whose clock is ahead the leader, and let it commit a few entries.
    for (let i = 0; i < 10; i++) {
      leader = await skewed.waitForLeader(20_000);
      if (leader === 'n1') break;
      await skewed.kill(leader!, 'SIGKILL');
      await sleep(2_500);
      skewed.start(leader!);
      await sleep(1_500);
    }
    expect(leader).toBe('n1');
    const warm = await connect({ servers: skewed.urls, ...credentials });
    for (let i = 0; i < 5; i++) await (await warm.lock('regression-warm')).unlock();
    await warm.close();
    // Depose it: a leader with a true clock takes over.
    await skewed.kill('n1', 'SIGKILL');
    const next = (await skewed.waitForLeader(20_000))!;
    const holder = await connect({ servers: [skewed.node(next).url], ...credentials });
    await holder.lock('regression-forward-skew');
    const waiter = await connect({ servers: [skewed.node(next).url], ...credentials });
    const askedAt = performance.now();
    const outcome = await waiter.lock('regression-forward-skew', undefined, { timeoutMs: 3_000 }).then(
      () => 'granted',
      (error: RaftlockError) => error.code,
    );
    const waitedMs = performance.now() - askedAt;
    await Promise.all([holder.close(), waiter.close()]);
    expect(outcome).toBe('TIMEOUT');
    expect(waitedMs).toBeGreaterThan(2_500); // the bug: ~5 ms
  }, 120_000);
});
