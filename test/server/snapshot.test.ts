// Integration: snapshots and log compaction with real processes (C4).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/index.ts';
import { TestCluster } from './harness.ts';

describe('snapshots', () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    cluster = await TestCluster.create(3, ['--snapshot-every', '20', '--snapshot-keep', '5']);
    await cluster.waitForLeader(15_000);
  });

  afterAll(async () => {
    await cluster?.destroy();
  });

  it('C4: a follower that was down while the log was compacted catches up from a snapshot', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.nodes.find((node) => node.id !== leader)!.id;
    await cluster.kill(follower);
    const session = await connect({ servers: cluster.urls, principal: 'control', password: 'password' });
    let last = 0;
    for (let i = 0; i < 40; i++) {
      const lock = await session.lock(`snap-${i % 3}`);
      expect(lock.getSequence()).toBeGreaterThan(last);
      last = lock.getSequence();
      await lock.unlock();
    }
    const kept = await session.lock('snap-kept');
    const leaderStatus = (await cluster.status(leader))!;
    expect(leaderStatus.snapshotIndex).toBeGreaterThan(20);
    expect(leaderStatus.firstIndex).toBeGreaterThan(10);

    cluster.start(follower);
    await cluster.waitFor(
      async () => {
        const status = await cluster.status(follower);
        return status !== null && status.appliedIndex >= leaderStatus.commitIndex;
      },
      15_000,
      'the follower to catch up',
    );
    const status = (await cluster.status(follower))!;
    expect(status.snapshotIndex).toBeGreaterThan(0);
    expect(status.locks).toBe(leaderStatus.locks);
    expect(status.sessions).toBe(leaderStatus.sessions);
    await kept.unlock();
    await session.close();
  });
});
