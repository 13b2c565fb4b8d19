// In-process nodes with fsync on: synced writes run on the event loop's thread until one is slow, then in
// the thread pool for a while (RaftlockNode.writeInline, docs/storage.md "Inline writes").

import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/index.ts';
import { serverLimits } from '../../src/server/limits.ts';
import { type LiveCluster, startLiveCluster } from '../security/live.ts';

const credentials = { principal: 'control', password: 'password' } as const;
const limits = serverLimits as { inlineWriteSlowMs: number; inlineWritePauseMs: number };
const defaults = { ...limits };

describe('disk writes on the event loop', () => {
  let cluster: LiveCluster | null = null;
  afterEach(async () => {
    Object.assign(limits, defaults);
    await cluster?.stop();
    cluster = null;
  });

  async function cycles(live: LiveCluster, count: number): Promise<void> {
    const session = await connect({ servers: live.urls, ...credentials });
    try {
      for (let i = 0; i < count; i++) {
        const lock = await session.lock(`dw-${i % 3}`);
        expect(lock.isOwned()).toBe(true);
        expect(await lock.unlock()).toBe(true);
      }
    } finally {
      await session.close();
    }
  }

  const slowWarnings = (live: LiveCluster) =>
    live.logs.filter((record) => record.event === 'disk_write_slow');

  it('C3: locks cycle with fsync on and writes inline; a rare slow fsync warns once per node at most', async () => {
    cluster = await startLiveCluster({ size: 3, sync: true });
    await cluster.waitForLeader();
    await cycles(cluster, 30);
    // A busy machine may stall one fsync past 20 ms; the pause that follows holds further warnings back.
    expect(slowWarnings(cluster).length).toBeLessThanOrEqual(3);
    expect(cluster.fatal).toEqual([]);
  });

  it('C3: a slow write sends the next ones to the pool: one warning per node, and locks keep cycling', async () => {
    // Every inline write counts as slow; the pause outlasts the test.
    limits.inlineWriteSlowMs = -1;
    limits.inlineWritePauseMs = 60_000;
    cluster = await startLiveCluster({ size: 3, sync: true });
    await cluster.waitForLeader();
    await cycles(cluster, 30);
    const warnings = slowWarnings(cluster);
    // Each node wrote inline once (its first synced write), then only through the pool: 60 commits later,
    // still exactly one warning per node.
    expect(warnings.map((record) => record.node).sort()).toEqual(['n1', 'n2', 'n3']);
    expect(warnings[0]).toMatchObject({ level: 40, poolForMs: 60_000 });
    expect(cluster.fatal).toEqual([]);
  });
});
