// `GET /metrics` on a real 3-node cluster: Prometheus text, with Raft, lock, session, storage, transport
// and event-loop metrics, and lock traffic counted alike on every replica.

import { connect, SessionLockScope } from 'raftlock';
import { describe, expect, it } from 'vitest';
import { httpUrl } from '../../src/cli/status.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

/** metric name (with labels) → value, from Prometheus text format. */
async function scrape(url: string): Promise<{ type: string | null; values: Map<string, number> }> {
  const response = await fetch(`${httpUrl(url)}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { type: response.headers.get('content-type'), values };
}

describe('GET /metrics', () => {
  const suite = useTestCluster(3);

  it('counts grants, releases by reason, wait and hold times, sessions — the same on every replica', async () => {
    const before = await scrape(suite.cluster.urls[0]!);
    const a = await connect({ servers: suite.cluster.urls, ...credentials });
    const b = await connect({ servers: suite.cluster.urls, ...credentials });
    const held = await a.lock('metrics-x');
    const waiting = b.lock('metrics-x', SessionLockScope.UNLOCK_ON_SESSION_LOSS);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await held.unlock();
    const second = await waiting;
    await second.unlock();
    await Promise.all([a.close(), b.close()]);
    // Every replica has applied it all once its applied index reaches the leader's commit.
    const leader = await suite.cluster.waitForLeader();
    const target = (await suite.cluster.status(leader))!.commitIndex;
    await suite.cluster.waitFor(
      async () =>
        (await Promise.all(suite.cluster.nodes.map((n) => suite.cluster.status(n.id)))).every(
          (s) => (s?.appliedIndex ?? 0) >= target,
        ),
      10_000,
      'every replica to apply',
    );

    const delta = (after: Map<string, number>, key: string) =>
      (after.get(key) ?? 0) - (before.values.get(key) ?? 0);
    for (const url of suite.cluster.urls) {
      const { type, values } = await scrape(url);
      expect(type).toContain('text/plain');
      expect(values.get('raftlock_raft_term')).toBeGreaterThan(0);
      expect(values.get('raftlock_raft_applied_index')).toBeGreaterThanOrEqual(target);
      expect(delta(values, 'raftlock_lock_grants_total')).toBe(2);
      expect(delta(values, 'raftlock_lock_releases_total{reason="unlock"}')).toBe(2);
      expect(delta(values, 'raftlock_sessions_opened_total')).toBeGreaterThanOrEqual(2);
      expect(delta(values, 'raftlock_sessions_ended_total{reason="closed"}')).toBe(2);
      // b waited ≈ 300 ms; both holds were short but not zero.
      expect(delta(values, 'raftlock_lock_wait_seconds_count')).toBe(2);
      expect(delta(values, 'raftlock_lock_wait_seconds_sum')).toBeGreaterThan(0.2);
      expect(delta(values, 'raftlock_lock_hold_seconds_count')).toBe(2);
      expect(values.get('raftlock_locks_held')).toBe(0);
      expect(values.get('raftlock_storage_fsyncs')).toBeGreaterThan(0);
      // Synced batches go through the sync log; a fresh node had nothing to replay.
      expect(values.get('raftlock_storage_sync_log_records')).toBeGreaterThan(0);
      expect(values.get('raftlock_storage_sync_log_replayed')).toBe(0);
      expect(values.get('raftlock_raft_persist_seconds_count')).toBeGreaterThan(0);
      expect([...values.keys()].some((key) => key.startsWith('raftlock_transport_bytes_sent{peer='))).toBe(
        true,
      );
      expect(values.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    }
    const leaders = await Promise.all(
      suite.cluster.urls.map(async (url) => (await scrape(url)).values.get('raftlock_raft_is_leader')),
    );
    expect(leaders.filter((value) => value === 1)).toHaveLength(1);
  });
});
