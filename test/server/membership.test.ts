// C5 membership with real processes, while sessions lock and unlock: grow 3 → 5 by `raftlock start
// --join`, hand leadership over, shrink 5 → 3 with `raftlock members remove`; membership requests need
// the admin permission (S12). At the end the lock history has no anomaly and every replica converges.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Session } from 'raftlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from './harness.ts';
import {
  admin,
  expectHistorySound,
  type Joiner,
  joiner,
  LockWorkload,
  raftlock,
  waitForMembers,
  worker,
  writeUsersFile,
} from './membership-harness.ts';

const names = ['m/a', 'm/b', 'm/c'];

describe('cluster membership (C5)', () => {
  let cluster: TestCluster;
  let usersFile: string;
  let workload: LockWorkload;
  const joiners = new Map<string, Joiner>();
  const servers = () => ['--servers', cluster.urls.join(',')];

  const usersDir = mkdtempSync(join(tmpdir(), 'raftlock-members-'));

  beforeAll(async () => {
    // Founders and joiners run with the same users file: an admin, and a worker without `admin`.
    usersFile = writeUsersFile(usersDir);
    cluster = await TestCluster.create(3, ['--users', usersFile]);
    await cluster.waitForLeader(15_000);
    workload = await LockWorkload.start(cluster.urls, 3, names);
  }, 30_000);

  afterAll(async () => {
    await workload?.stop().catch(() => undefined);
    await cluster?.destroy();
    rmSync(usersDir, { recursive: true, force: true });
  });

  it('S12/C5: membership requests need the admin permission; bad input changes nothing', async () => {
    const session: Session = await connect({ servers: cluster.urls, ...worker });
    try {
      await expect(session.members()).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      await expect(
        session.addMember({ id: 'x9', peerAddress: '127.0.0.1:1', clientUrl: 'ws://127.0.0.1:2' }),
      ).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      await expect(session.removeMember('n1')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
      await expect(session.transferLeader('n1')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    } finally {
      await session.close();
    }
    const bad = async (args: string[], message: RegExp) => {
      const run = await raftlock([...args, ...servers()]);
      expect(run.code, run.stderr).toBe(17); // INVALID_ARGUMENT: 10 + its index in src/errors.ts
      expect(run.stderr).toMatch(message);
    };
    await bad(
      ['members', 'add', 'n1', '--peer-url', '127.0.0.1:9', '--client-url', 'ws://127.0.0.1:9'],
      /already a member/,
    );
    await bad(
      ['members', 'add', 'n9', '--peer-url', 'nowhere', '--client-url', 'ws://127.0.0.1:9'],
      /HOST:PORT/,
    );
    await bad(['members', 'add', 'n9', '--peer-url', '127.0.0.1:9', '--client-url', 'http://x:1'], /ws:\/\//);
    await bad(
      ['members', 'add', 'bad id!', '--peer-url', '127.0.0.1:9', '--client-url', 'ws://x:1'],
      /member id/,
    );
    await bad(['members', 'remove', 'n9'], /not a member/);
    await bad(['leader', 'transfer', 'n9'], /not a voter/);
    const list = await raftlock(['members', '--json', ...servers()]);
    expect(list.code, list.stderr).toBe(0);
    const members = JSON.parse(list.stdout) as { members: { id: string; role: string }[] };
    expect(members.members.map((member) => `${member.id}:${member.role}`).sort()).toEqual([
      'n1:voter',
      'n2:voter',
      'n3:voter',
    ]);
  }, 30_000);

  it('C5: a member added but never started stays a learner, listed as one in every /status and metric, until removed', async () => {
    const session: Session = await connect({ servers: cluster.urls, ...admin });
    const everyStatus = async (check: (learners: readonly string[], voters: readonly string[]) => boolean) =>
      cluster.waitFor(
        async () => {
          const statuses = await Promise.all(['n1', 'n2', 'n3'].map((id) => cluster.status(id)));
          return statuses.every((status) => status !== null && check(status.learners, status.voters));
        },
        10_000,
        'every node to report the membership',
      );
    try {
      await session.addMember({ id: 'n8', peerAddress: '127.0.0.1:1', clientUrl: 'ws://127.0.0.1:2' });
      await everyStatus(
        (learners, voters) => learners.join() === 'n8' && [...voters].sort().join() === 'n1,n2,n3',
      );
      const metrics = await fetch(`${cluster.urls[0]!.replace('ws://', 'http://')}/metrics`);
      expect(await metrics.text()).toMatch(/^raftlock_raft_learners 1$/m);
      await session.removeMember('n8');
      await everyStatus((learners, voters) => learners.length === 0 && voters.length === 3);
    } finally {
      // After a failure above, leave the later tests a 3-voter cluster.
      await session.removeMember('n8').catch(() => undefined);
      await session.close();
    }
  }, 30_000);

  it('C5: grows 3 → 5 by --join while sessions lock and unlock; joiners are promoted to voters', async () => {
    for (const id of ['n4', 'n5']) {
      const node = await joiner(cluster, id, usersFile);
      joiners.set(id, node);
      node.start();
      const voters = id === 'n4' ? ['n1', 'n2', 'n3', 'n4'] : ['n1', 'n2', 'n3', 'n4', 'n5'];
      await waitForMembers(cluster, voters, 20_000);
    }
    const list = await raftlock(['members', '--json', ...servers()]);
    expect(list.code, list.stderr).toBe(0);
    const view = JSON.parse(list.stdout) as {
      members: {
        id: string;
        role: string;
        peerAddress: string | null;
        clientUrl: string | null;
        lag?: number;
      }[];
    };
    expect(view.members.map((member) => member.id).sort()).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);
    for (const member of view.members) {
      expect(member.role).toBe('voter');
      expect(member.peerAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(member.clientUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    }
    expect(view.members.find((member) => member.id === 'n5')?.peerAddress).toBe(
      joiners.get('n5')!.peerAddress,
    );
    const before = workload.grantCount();
    await cluster.waitFor(async () => workload.grantCount() > before + 10, 10_000, 'grants on 5 nodes');
  }, 60_000);

  it('C5: leadership moves (asked on a follower, by the CLI), then 5 → 3 by `raftlock members remove`', async () => {
    // Asked on a follower: it hands the request to the leader and relays the answer.
    const leader = await cluster.waitForLeader(5_000);
    const follower = ['n1', 'n2', 'n3', 'n5'].find((id) => id !== leader)!;
    const session = await connect({ servers: [cluster.node(follower).url], ...admin });
    try {
      const target = leader === 'n5' ? 'n1' : 'n5';
      await session.transferLeader(target);
      expect(await cluster.waitForLeader(5_000)).toBe(target);
    } finally {
      await session.close();
    }
    const transfer = await raftlock(['leader', 'transfer', 'n4', ...servers()]);
    expect(transfer.code, transfer.stderr).toBe(0);
    expect(await cluster.waitForLeader(5_000)).toBe('n4');
    // Remove a follower and then the leader itself: it answers, steps down and stops.
    for (const id of ['n5', 'n4']) {
      const run = await raftlock(['members', 'remove', id, ...servers()]);
      expect(run.code, run.stderr).toBe(0);
      await cluster.waitFor(async () => cluster.node(id).process === null, 10_000, `${id} to exit`);
    }
    await waitForMembers(cluster, ['n1', 'n2', 'n3'], 15_000);
    const before = workload.grantCount();
    await cluster.waitFor(async () => workload.grantCount() > before + 10, 10_000, 'grants on 3 nodes');
    // A removed node refuses to start on its old data directory.
    const restart = joiners.get('n5')!;
    restart.start();
    await cluster.waitFor(async () => restart.node.process === null, 10_000, 'removed n5 to refuse');
  }, 60_000);

  it('C5: no anomaly in the lock history; every acknowledged grant survives; replicas converge', async () => {
    expect(workload.grantCount()).toBeGreaterThan(30);
    await expectHistorySound(cluster, cluster.urls, workload, names);
  }, 30_000);
});
