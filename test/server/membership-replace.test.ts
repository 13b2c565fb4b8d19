// C5 with real processes: replacing a dead node (kill -9, `raftlock members remove`, a fresh node with
// `--join` that catches up from a snapshot), then restarts with the data directory — the joined node
// needs no second join, a founder learns the new member's address from disk — while sessions lock and
// unlock. At the end the lock history has no anomaly and every replica converges.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from './harness.ts';
import {
  expectHistorySound,
  type Joiner,
  joiner,
  LockWorkload,
  raftlock,
  waitForConvergence,
  waitForMembers,
  writeUsersFile,
} from './membership-harness.ts';

const names = ['r/a', 'r/b', 'r/c'];
// Small snapshots, so the replacement is far behind compaction and catches up from a snapshot.
const snapshotArgs = ['--snapshot-every', '200', '--snapshot-keep', '20'];

describe('replacing and restarting members (C5)', () => {
  let cluster: TestCluster;
  let usersFile: string;
  let workload: LockWorkload;
  let fresh: Joiner;
  const usersDir = mkdtempSync(join(tmpdir(), 'raftlock-replace-'));
  const servers = () => [
    '--servers',
    cluster.nodes
      .filter((n) => n.id !== 'n3')
      .map((n) => n.url)
      .join(','),
  ];
  const logOf = (id: string) => readFileSync(join(cluster.dir, `${id}.log`), 'utf8');

  beforeAll(async () => {
    usersFile = writeUsersFile(usersDir);
    cluster = await TestCluster.create(3, ['--users', usersFile, ...snapshotArgs]);
    await cluster.waitForLeader(15_000);
    workload = await LockWorkload.start(cluster.urls, 3, names);
  }, 30_000);

  afterAll(async () => {
    await workload?.stop().catch(() => undefined);
    await cluster?.destroy();
    rmSync(usersDir, { recursive: true, force: true });
  });

  it('C5: a dead node is replaced: kill -9, members remove, a fresh node joins from a snapshot', async () => {
    await cluster.waitFor(async () => workload.grantCount() > 150, 15_000, 'a few snapshots worth of grants');
    await cluster.kill('n3', 'SIGKILL');
    const remove = await raftlock(['members', 'remove', 'n3', ...servers()]);
    expect(remove.code, remove.stderr).toBe(0);
    await waitForMembers(cluster, ['n1', 'n2'], 10_000);
    fresh = await joiner(cluster, 'n4', usersFile, snapshotArgs);
    fresh.start();
    await waitForMembers(cluster, ['n1', 'n2', 'n4'], 20_000);
    expect(logOf('n4')).toMatch(/"event":"snapshot_installed"/);
    const before = workload.grantCount();
    await cluster.waitFor(
      async () => workload.grantCount() > before + 10,
      10_000,
      'grants after the replacement',
    );
  }, 60_000);

  it('C5: restarts with the data directory: the joined node rejoins without a join, a founder finds it', async () => {
    await cluster.kill('n4', 'SIGKILL');
    fresh.start();
    await cluster.waitFor(
      async () => /"event":"join_not_needed"/.test(logOf('n4')),
      15_000,
      'n4 to find itself a member',
    );
    expect(logOf('n4').match(/"event":"join_requested"/g)?.length).toBe(1);
    // n1's flags know n1–n3 only; n4's address comes from its members.json (or a snapshot).
    await cluster.kill('n1', 'SIGTERM');
    cluster.start('n1');
    await waitForMembers(cluster, ['n1', 'n2', 'n4'], 15_000);
    const members = await raftlock(['members', '--json', ...servers()]);
    expect(members.code, members.stderr).toBe(0);
    const view = JSON.parse(members.stdout) as { members: { id: string; peerAddress: string }[] };
    expect(view.members.find((member) => member.id === 'n4')?.peerAddress).toBe(fresh.peerAddress);
    await waitForConvergence(cluster, 15_000);
  }, 60_000);

  it('C5: no anomaly in the lock history; every acknowledged grant survives; replicas converge', async () => {
    await expectHistorySound(
      cluster,
      cluster.urls.filter((_, i) => i !== 2),
      workload,
      names,
    );
  }, 30_000);

  it('C5: a node removed while it was down stops when it comes back: a majority of its voters refuse it', async () => {
    // n3 was killed, then removed; its data directory still says n1–n3. Every member refuses its links
    // as "not a member"; after ten election timeouts of that it stops as a removed node would.
    cluster.start('n3');
    const child = cluster.node('n3').process!;
    const code = await new Promise<number | null>((resolve) => child.once('exit', (exit) => resolve(exit)));
    expect(code).toBe(0);
    const log = logOf('n3');
    expect(log).toMatch(/"event":"peer_refused_us"[^\n]*"detail":"not a member"/);
    expect(log).toMatch(/"event":"member_removed"[^\n]*"refusedBy":\["n1","n2"\]/);
    expect(existsSync(join(cluster.dir, 'n3', 'removed'))).toBe(true);
    // The cluster went on without it.
    await waitForMembers(cluster, ['n1', 'n2', 'n4'], 5_000);
  }, 40_000);
});
