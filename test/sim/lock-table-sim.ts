// One simulated run of the lock table on a Raft cluster: the schedule's faults, the lock workload
// (test/sim/lock-workload.ts) as the clients, every replica a `LockTableMachine` checked after every
// entry (test/sim/lock-table-machine.ts), then heal, liveness, and the end-of-run checks:
//
//   1. quiet period: every live replica reaches the same applied index; each one's table agrees with
//      the effects history (locks and waits) and all produce byte-identical snapshots;
//   2. drain: every open session is closed through the leader (retried until committed); every
//      request ever answered `waiting` must then have been granted or ended by an effect — none left
//      pending — and the tables are empty and still byte-identical.
//
// Throws a `SimViolation` (check 'core failure' wrapping a `LockViolation`, or a Raft check) on any
// broken property; the message carries the seed and the tick.

import { encodeEntry } from '../../src/locks/index.ts';
import { SimViolation } from './checkers.ts';
import { applyFault, FaultState } from './faults.ts';
import { LockHistory, LockTableMachine, LockViolation } from './lock-table-machine.ts';
import { LockWorkload } from './lock-workload.ts';
import {
  baselineNetwork,
  checkLiveness,
  clusterFor,
  healEverything,
  type RunOptions,
  type Schedule,
} from './schedule.ts';

export interface LockSimReport {
  seed: number;
  nodes: number;
  ticks: number;
  entries: number;
  grants: number;
  waits: number;
  waitsEnded: number;
  releases: number;
  sessions: number;
  restores: number;
  retries: number;
  dedupeHits: number;
  faults: number;
  leaderChanges: number;
  crashes: number;
}

/** Ticks the end-of-run phases may take (each), after liveness holds, besides shipping a backlog. */
const settleTicksMax = 400;
/** Ticks per append round trip allowed when a replica (a learner added late, say) ships a backlog. */
const backlogTicksPerAppend = 4;

export function runLockSchedule(schedule: Schedule, options: RunOptions = {}): LockSimReport {
  const history = new LockHistory();
  const workload = new LockWorkload(history);
  const machines = new Map<string, LockTableMachine>();
  const cluster = clusterFor(schedule, options, {
    machine: (id) => {
      const machine = new LockTableMachine(id, history);
      machines.set(id, machine);
      return machine;
    },
    payload: workload.payload,
  });
  const faults = new FaultState(baselineNetwork(schedule), cluster.diskDelay);
  for (const event of [...schedule.events].sort((a, b) => a.at - b.at))
    cluster.at(event.at, () => applyFault(cluster, faults, event));
  cluster.runTicks(schedule.ticks);

  faults.over = true;
  cluster.workload = null;
  healEverything(cluster, faults.baselineDisk);
  checkLiveness(cluster);

  const fail = (detail: string): never => {
    throw new SimViolation('core failure', `LockViolation: ${detail}`, {
      seed: cluster.seed,
      time: cluster.now,
      tick: cluster.tick,
    });
  };
  // Live members of the configuration (a node whose addLearner entry was lost runs but gets nothing).
  const live = (): LockTableMachine[] => {
    const leader = cluster.leader();
    const conf = leader === null ? null : cluster.status(leader).conf;
    const member = (id: string) => conf === null || conf.voters.includes(id) || conf.learners.includes(id);
    return cluster.liveIds.filter(member).map((id) => machines.get(id)!);
  };
  const settle = (what: string): void => {
    const caughtUp = () => live().every((m) => m.index === history.appliedMax);
    const lag = history.appliedMax - Math.min(...live().map((m) => m.index));
    const bound =
      settleTicksMax + backlogTicksPerAppend * Math.ceil(lag / cluster.raftConfig.entriesPerAppendMax);
    if (!cluster.runUntil(caughtUp, bound)) {
      fail(
        `${what}: live replicas did not all reach index ${history.appliedMax} within ${bound} ticks (${live()
          .map((m) => `${m.id}@${m.index}`)
          .join(' ')})`,
      );
    }
    try {
      for (const machine of live()) history.checkReplicaAgainstModel(machine);
      identicalTables(live(), what);
    } catch (error) {
      if (error instanceof LockViolation) fail(error.message);
      throw error;
    }
  };

  // 1. Quiet period: all replicas converge on one table that matches the history.
  settle('after heal');

  // 2. Drain: close every session; every wait must end in a grant or an explicit end.
  let lastProposal = Number.NEGATIVE_INFINITY;
  const drained = () => history.openSessions.length === 0;
  const drain = () => {
    if (drained()) return true;
    if (cluster.tick - lastProposal >= cluster.electionTimeoutTicks) {
      const commands = history.openSessions.map((session) => ({ type: 'closeSession' as const, session }));
      if (cluster.propose(encodeEntry({ timeMs: cluster.now, commands }))?.ok) lastProposal = cluster.tick;
    }
    return false;
  };
  if (!cluster.runUntil(drain, settleTicksMax * 2))
    fail(
      `drain: sessions ${history.openSessions.join(', ')} still open after closing them for ${settleTicksMax * 2} ticks`,
    );
  settle('after closing every session');
  if (history.pending.size > 0)
    fail(`S3/S7 no waiter lost: requests ${[...history.pending.keys()].join(', ')} never granted nor ended`);
  for (const k of history.everWaited) {
    if (history.pending.has(k))
      fail(`S3/S7 no waiter lost: request ${k} still pending after every session closed`);
  }
  for (const machine of live()) {
    if (machine.table.lockCount !== 0 || machine.table.waiterCount !== 0 || machine.table.sessionCount !== 0)
      fail(`drain: ${machine.id}'s table still holds locks, waits or sessions after every session closed`);
  }

  return {
    seed: schedule.seed,
    nodes: schedule.nodes,
    ticks: cluster.tick,
    entries: history.appliedMax,
    grants: history.grants,
    waits: history.waits,
    waitsEnded: history.waitsEnded,
    releases: history.releases,
    sessions: history.opened.length,
    restores: history.restores,
    retries: workload.retries,
    dedupeHits: workload.dedupeHits,
    faults: faults.count,
    leaderChanges: cluster.checker.elections,
    crashes: cluster.stats.crashes,
  };
}

/** All replicas at one index hold byte-identical tables (restored ones included). */
function identicalTables(machines: readonly LockTableMachine[], what: string): void {
  let first: { id: string; bytes: Uint8Array } | null = null;
  for (const machine of machines) {
    const bytes = machine.table.snapshot();
    if (first === null) {
      first = { id: machine.id, bytes };
      continue;
    }
    if (!Buffer.from(bytes).equals(Buffer.from(first.bytes)))
      throw new LockViolation(
        `identical tables (${what}): ${machine.id}'s snapshot at ${machine.index} differs from ${first.id}'s (${bytes.byteLength} vs ${first.bytes.byteLength} bytes)`,
      );
  }
}
