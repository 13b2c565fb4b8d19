// Scripted scenarios for cases real Raft implementations got wrong, in the spirit of etcd's
// interaction tests: each reads as a story, runs on the simulated cluster with every checker on,
// and names the SPEC rule it proves.

import { describe, expect, it } from 'vitest';
import type { NodeId } from '../../src/raft/types.ts';
import { Cluster, type ClusterOptions } from './cluster.ts';

function newCluster(options: Partial<ClusterOptions> = {}): Cluster {
  return new Cluster({
    seed: 7,
    nodes: 3,
    network: { latencyMin: 2, latencyMax: 6 },
    diskDelayMin: 1,
    diskDelayMax: 4,
    ...options,
  });
}

function electLeader(c: Cluster): NodeId {
  expect(
    c.runUntil(() => c.leader() !== null, 20 * c.electionTimeoutTicks),
    'a leader is elected',
  ).toBe(true);
  return c.leader()!;
}

/** Proposes on the leader and waits until every running node has committed it; returns its index. */
function commitEverywhere(c: Cluster, ids: NodeId[] = c.liveIds): number {
  const leader = electLeader(c);
  const result = c.proposeOn(leader, c.payload());
  if (!result.ok) throw new Error(`proposal on ${leader} refused: ${result.code}`);
  const committed = c.runUntil(
    () => ids.every((id) => c.isUp(id) && c.status(id).commit >= result.index),
    20 * c.electionTimeoutTicks,
  );
  expect(committed, `entry ${result.index} commits on ${ids.join(', ')}`).toBe(true);
  return result.index;
}

function followersOf(c: Cluster, leader: NodeId): NodeId[] {
  return c.liveIds.filter((id) => id !== leader);
}

describe('scenarios', () => {
  it('C1 (pre-vote): a follower rejoining after a partition does not depose a healthy leader', () => {
    const c = newCluster({ nodes: 3 });
    const leader = electLeader(c);
    commitEverywhere(c);
    const term = c.status(leader).term;
    const [outcast] = followersOf(c, leader);
    c.isolate(outcast!);
    c.runTicks(10 * c.electionTimeoutTicks);
    // Its pre-votes fail, so it never bumps its term while cut off…
    expect(c.status(outcast!).term).toBe(term);
    c.heal();
    c.runTicks(5 * c.electionTimeoutTicks);
    // …and after the partition heals the leader keeps its term and its job.
    expect(c.leader()).toBe(leader);
    expect(c.status(leader).term).toBe(term);
    commitEverywhere(c);
  });

  it('C1 (check-quorum): a leader cut off from a majority steps down, and what it accepted alone never commits', () => {
    const c = newCluster({ nodes: 5 });
    const leader = electLeader(c);
    commitEverywhere(c);
    c.isolate(leader);
    const lonely = c.proposeOn(leader, c.payload());
    expect(lonely.ok).toBe(true);
    c.runTicks(3 * c.electionTimeoutTicks);
    expect(c.status(leader).role).not.toBe('leader');
    const successor = c.leader();
    expect(successor).not.toBeNull();
    expect(successor).not.toBe(leader);
    c.heal();
    const index = commitEverywhere(c);
    expect(index).toBeGreaterThan(0);
    if (lonely.ok) expect(c.checker.committedAt(lonely.index)?.term).not.toBe(lonely.term);
  });

  it('C1 (check-quorum): a leader that can send but not hear steps down and a new leader takes over', () => {
    const c = newCluster({ nodes: 3 });
    const leader = electLeader(c);
    commitEverywhere(c);
    c.connectOnly((_from, to) => to !== leader);
    expect(c.runUntil(() => c.status(leader).role !== 'leader', 3 * c.electionTimeoutTicks)).toBe(true);
    expect(c.runUntil(() => c.leader() !== null && c.leader() !== leader, 10 * c.electionTimeoutTicks)).toBe(
      true,
    );
    c.heal();
    commitEverywhere(c);
  });

  it('C4: a follower that fell behind the compaction point catches up from a chunked snapshot', () => {
    const c = newCluster({ nodes: 3, snapshots: { every: 5, keep: 0 }, raft: { snapshotChunkBytesMax: 32 } });
    const leader = electLeader(c);
    commitEverywhere(c);
    const [laggard] = followersOf(c, leader);
    c.crash(laggard!);
    for (let k = 0; k < 40; k++) {
      c.proposeOn(leader, c.payload());
      c.runTicks(1);
    }
    c.runTicks(2 * c.electionTimeoutTicks);
    expect(c.status(leader).firstIndex).toBeGreaterThan(c.storage(laggard!).durableLastIndex() + 1);
    const installedBefore = c.stats.snapshotsInstalled;
    c.restart(laggard!);
    const target = c.status(leader).commit;
    expect(c.runUntil(() => c.status(laggard!).commit >= target, 20 * c.electionTimeoutTicks)).toBe(true);
    expect(c.stats.snapshotsInstalled).toBeGreaterThan(installedBefore);
    // Same state machine once both have applied the same index (the checkers compare every index too).
    expect(
      c.runUntil(() => c.machine(laggard!).index === c.machine(leader).index, 10 * c.electionTimeoutTicks),
    ).toBe(true);
    expect(c.machine(laggard!).chain).toBe(c.machine(leader).chain);
    commitEverywhere(c);
  });

  it('C5: a membership change proposed right after an election adds a voter safely; a removal shuts a node out', () => {
    const c = newCluster({ nodes: 3 });
    const first = electLeader(c);
    commitEverywhere(c);
    c.crash(first);
    expect(c.runUntil(() => c.leader() !== null && c.leader() !== first, 20 * c.electionTimeoutTicks)).toBe(
      true,
    );
    // The very tick the new leader appears, ask it to add a node (it may refuse until its own
    // term's entry commits — then keep asking).
    let added: NodeId | null = null;
    const tryAdd = (): boolean => {
      added ??= c.addNode();
      return added !== null;
    };
    expect(c.runUntil(tryAdd, 5 * c.electionTimeoutTicks)).toBe(true);
    c.restart(first);
    const joined = added!;
    expect(
      c.runUntil(() => {
        const leader = c.leader();
        return leader !== null && c.status(leader).conf.voters.includes(joined);
      }, 30 * c.electionTimeoutTicks),
      `${joined} becomes a voter`,
    ).toBe(true);
    commitEverywhere(c);
    expect(c.status(joined).commit).toBeGreaterThan(0);

    const leader = c.leader()!;
    const leaving = followersOf(c, leader).find((id) => id !== joined)!;
    const removal = c.removeNode(leaving);
    expect(removal?.ok).toBe(true);
    expect(
      c.runUntil(() => c.isRemoved(leaving), 20 * c.electionTimeoutTicks),
      `${leaving} is removed`,
    ).toBe(true);
    expect(c.status(c.leader()!).conf.voters).not.toContain(leaving);
    commitEverywhere(c);
  });

  it('C2: leadership transfer hands the leadership to the chosen follower in a new term', () => {
    const c = newCluster({ nodes: 5 });
    const leader = electLeader(c);
    commitEverywhere(c);
    const term = c.status(leader).term;
    const target = followersOf(c, leader)[1]!;
    expect(c.transferLeadership(target)).toBe(true);
    expect(c.runUntil(() => c.leader() === target, 3 * c.electionTimeoutTicks)).toBe(true);
    expect(c.status(target).term).toBeGreaterThan(term);
    commitEverywhere(c);
  });

  it('S15: ReadIndex confirms an index ≥ the commit at request time, on the leader and through a follower', () => {
    const c = newCluster({ nodes: 3 });
    const leader = electLeader(c);
    for (let k = 0; k < 5; k++) commitEverywhere(c);
    const commitAtRequest = c.status(leader).commit;
    const onLeader = c.readIndex(leader);
    const onFollower = c.readIndex(followersOf(c, leader)[0]!);
    expect(
      c.runUntil(
        () => c.readResults.has(onLeader) && c.readResults.has(onFollower),
        5 * c.electionTimeoutTicks,
      ),
    ).toBe(true);
    for (const context of [onLeader, onFollower]) {
      const result = c.readResults.get(context)!;
      expect('index' in result ? result.index : -1).toBeGreaterThanOrEqual(commitAtRequest);
    }
  });

  it('S15: a read on a deposed leader fails instead of returning stale data', () => {
    const c = newCluster({ nodes: 5 });
    const leader = electLeader(c);
    commitEverywhere(c);
    c.isolate(leader);
    const stale = c.readIndex(leader);
    // The majority moves on and commits more while the old leader still believes it leads.
    expect(c.runUntil(() => c.leader() !== null && c.leader() !== leader, 20 * c.electionTimeoutTicks)).toBe(
      true,
    );
    commitEverywhere(c, followersOf(c, leader));
    expect(c.runUntil(() => c.readResults.has(stale), 5 * c.electionTimeoutTicks)).toBe(true);
    expect(c.readResults.get(stale)).toHaveProperty('code');
    c.heal();
    commitEverywhere(c);
  });

  it('C3: a follower crashing between persist-start and persist-end loses only the unsynced write', () => {
    const c = newCluster({ nodes: 3, diskDelayMin: 30, diskDelayMax: 30 });
    const leader = electLeader(c);
    commitEverywhere(c);
    const [follower] = followersOf(c, leader);
    const durableBefore = c.storage(follower!).durableLastIndex();
    const proposal = c.proposeOn(leader, c.payload());
    if (!proposal.ok) throw new Error(proposal.code);
    const writing = c.runEventsUntil(
      () => c.status(follower!).lastIndex >= proposal.index && c.storage(follower!).pendingCount > 0,
      c.electionTimeoutTicks,
    );
    expect(writing, 'the follower is mid-write').toBe(true);
    c.crash(follower!);
    expect(c.storage(follower!).durableLastIndex()).toBeLessThan(proposal.index);
    expect(c.storage(follower!).durableLastIndex()).toBeGreaterThanOrEqual(durableBefore);
    c.restart(follower!);
    const committed = c.runUntil(
      () => c.liveIds.every((id) => c.status(id).commit >= proposal.index),
      20 * c.electionTimeoutTicks,
    );
    expect(committed).toBe(true);
    expect(c.checker.committedAt(proposal.index)?.term).toBe(proposal.term);
  });

  it('C3: a leader crashing before its own fsync completes loses its unsynced tail without breaking safety', () => {
    const c = newCluster({ nodes: 3, diskDelayMin: 30, diskDelayMax: 30 });
    const leader = electLeader(c);
    commitEverywhere(c);
    const proposal = c.proposeOn(leader, c.payload());
    if (!proposal.ok) throw new Error(proposal.code);
    expect(c.storage(leader).pendingCount).toBeGreaterThan(0);
    c.crash(leader);
    expect(c.storage(leader).durableLastIndex()).toBeLessThan(proposal.index);
    c.runTicks(3 * c.electionTimeoutTicks);
    c.restart(leader);
    // Whether or not the entry survives (the followers got it early), every node ends up agreeing.
    const index = commitEverywhere(c);
    expect(index).toBeGreaterThan(proposal.index - 1);
  });

  it('C3: the whole cluster restarting from disk keeps every committed entry', () => {
    const c = newCluster({ nodes: 3, snapshots: { every: 7, keep: 2 } });
    electLeader(c);
    const indexes: number[] = [];
    for (let k = 0; k < 12; k++) indexes.push(commitEverywhere(c));
    const committed = indexes.map((i) => c.checker.committedAt(i));
    for (const id of c.liveIds) c.crash(id);
    c.runTicks(5);
    for (const id of c.ids) c.restart(id);
    commitEverywhere(c);
    // The checkers compared every reloaded log with the committed entries; they are all still there.
    expect(indexes.map((i) => c.checker.committedAt(i))).toEqual(committed);
  });
});
