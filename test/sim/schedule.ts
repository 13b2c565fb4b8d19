// Schedules: a whole simulated run as plain data — cluster size, network and disk conditions,
// workload, Raft tuning and a list of timed fault events — generated (and shrunk) by fast-check.
// `runSchedule` plays one against a fresh cluster with every checker on, then heals everything and
// demands liveness: a leader, and a new proposal committed on every live voter, within a bound.
//
// A seed names a schedule: `scheduleForSeed(seed)` is fast-check's first value for that seed, which
// is also the value `fc.assert(..., { seed, numRuns: 1 })` tests and then shrinks.

import fc from 'fast-check';
import type { NodeId } from '../../src/raft/types.ts';
import { type CheckLevel, SimViolation } from './checkers.ts';
import { Cluster, type ClusterOptions, unitsPerTick } from './cluster.ts';
import { applyFault, type FaultEvent, type FaultKind, FaultState, partitionShapes } from './faults.ts';
import { mix } from './hash.ts';
import type { NetworkConditions } from './network.ts';

export interface Schedule {
  /** Seeds every random stream of the run (network, disk, nodes' timeouts, workload). */
  seed: number;
  nodes: 3 | 5 | 7;
  ticks: number;
  network: {
    dropPermille: number;
    duplicatePermille: number;
    latencyMin: number;
    latencyMax: number;
    slowPermille: number;
    slowLatencyMax: number;
    /** Links are FIFO unless set (then per-copy latency reorders them). */
    reorder: boolean;
  };
  disk: { delayMin: number; delayMax: number };
  clockSkew: boolean;
  workload: { proposalPermille: number; readPermille: number; payloadBytesMax: number };
  snapshots: { every: number; keep: number } | null;
  raft: {
    electionTimeoutTicks: number;
    heartbeatIntervalTicks: number;
    entriesPerAppendMax: number;
    inflightAppendsMax: number;
    snapshotChunkBytesMax: number;
    /** Client backpressure: the leader refuses proposals (PROPOSALS_FULL) beyond this many uncommitted. */
    uncommittedEntriesMax: number;
    /** Absent in schedules saved before it existed (then false). */
    deferCommitBroadcast?: boolean;
  };
  events: FaultEvent[];
}

export interface ScheduleOptions {
  /** Cluster sizes to draw from (default 3, 5 and — less often — 7). */
  nodes?: readonly (3 | 5 | 7)[];
  ticksMin?: number;
  ticksMax?: number;
  eventsMax?: number;
  /** Fault kinds to leave out (to triage a failure, e.g. without membership changes). */
  without?: readonly FaultKind[];
}

export interface RunOptions {
  checks?: CheckLevel;
  /** Keep recent events in memory and print them with a failure. */
  trace?: boolean;
  /** Skip the liveness phase (safety only). */
  liveness?: boolean;
}

export interface SimReport {
  seed: number;
  nodes: number;
  ticks: number;
  livenessTicks: number;
  elections: number;
  commits: number;
  faults: number;
  messages: number;
  traceHash: number;
  stats: Cluster['stats'];
}

/** Election timeouts that liveness may take after the last fault heals. */
export const livenessElectionTimeouts = 10;

export function scheduleArbitrary(options: ScheduleOptions = {}): fc.Arbitrary<Schedule> {
  const ticksMin = options.ticksMin ?? 2000;
  const ticksMax = options.ticksMax ?? 2200;
  const sizes = options.nodes ?? [3, 3, 3, 5, 5, 7];
  const eventsMax = options.eventsMax ?? 30;
  return fc.noBias(
    fc.integer({ min: ticksMin, max: ticksMax }).chain((ticks) =>
      fc.record({
        seed: fc.nat({ max: 0xffffffff }),
        nodes: fc.constantFrom(...sizes),
        ticks: fc.constant(ticks),
        network: fc.record({
          dropPermille: fc.integer({ min: 0, max: 80 }),
          duplicatePermille: fc.integer({ min: 0, max: 50 }),
          latencyMin: fc.integer({ min: 1, max: 4 }),
          latencyMax: fc.integer({ min: 4, max: 2 * unitsPerTick }),
          slowPermille: fc.integer({ min: 0, max: 30 }),
          slowLatencyMax: fc.integer({ min: 2 * unitsPerTick, max: 12 * unitsPerTick }),
          reorder: fc.boolean(),
        }),
        disk: fc.record({
          delayMin: fc.integer({ min: 0, max: 3 }),
          delayMax: fc.integer({ min: 3, max: 15 }),
        }),
        clockSkew: fc.boolean(),
        workload: fc.record({
          proposalPermille: fc.integer({ min: 50, max: 600 }),
          readPermille: fc.integer({ min: 0, max: 150 }),
          payloadBytesMax: fc.integer({ min: 8, max: 64 }),
        }),
        snapshots: fc.option(
          fc.record({ every: fc.integer({ min: 4, max: 60 }), keep: fc.integer({ min: 0, max: 8 }) }),
          { freq: 5 },
        ),
        raft: fc.record({
          electionTimeoutTicks: fc.integer({ min: 8, max: 16 }),
          heartbeatIntervalTicks: fc.integer({ min: 1, max: 3 }),
          entriesPerAppendMax: fc.integer({ min: 1, max: 16 }),
          inflightAppendsMax: fc.integer({ min: 1, max: 8 }),
          snapshotChunkBytesMax: fc.integer({ min: 16, max: 256 }),
          uncommittedEntriesMax: fc.integer({ min: 8, max: 128 }),
          deferCommitBroadcast: fc.boolean(),
        }),
        events: fc.array(faultEventArbitrary(ticks, options.without ?? []), {
          maxLength: eventsMax,
          size: 'max',
        }),
      }),
    ),
  );
}

function faultEventArbitrary(ticks: number, without: readonly FaultKind[]): fc.Arbitrary<FaultEvent> {
  const at = fc.integer({ min: 0, max: ticks - 1 });
  const pick = fc.nat({ max: 0xffff });
  const target = fc.constantFrom('leader' as const, 'any' as const);
  const kinds: [FaultKind, number, fc.Arbitrary<FaultEvent>][] = [
    [
      'partition',
      5,
      fc.record({
        at,
        kind: fc.constant('partition' as const),
        shape: fc.constantFrom(...partitionShapes),
        pick,
        duration: fc.integer({ min: 5, max: 300 }),
      }),
    ],
    [
      'lossy',
      2,
      fc.record({
        at,
        kind: fc.constant('lossy' as const),
        dropPermille: fc.integer({ min: 0, max: 400 }),
        duplicatePermille: fc.integer({ min: 0, max: 200 }),
        duration: fc.integer({ min: 5, max: 200 }),
      }),
    ],
    [
      'crash',
      5,
      fc.record({
        at,
        kind: fc.constant('crash' as const),
        target,
        pick,
        downFor: fc.integer({ min: 1, max: 200 }),
      }),
    ],
    [
      'crashAll',
      1,
      fc.record({ at, kind: fc.constant('crashAll' as const), downFor: fc.integer({ min: 1, max: 60 }) }),
    ],
    [
      'pause',
      3,
      fc.record({
        at,
        kind: fc.constant('pause' as const),
        target,
        pick,
        duration: fc.integer({ min: 1, max: 100 }),
        queueMessages: fc.boolean(),
      }),
    ],
    [
      'crashMidWrite',
      2,
      fc.record({
        at,
        kind: fc.constant('crashMidWrite' as const),
        target,
        pick,
        downFor: fc.integer({ min: 1, max: 100 }),
      }),
    ],
    [
      'crashStorm',
      1,
      fc.record({
        at,
        kind: fc.constant('crashStorm' as const),
        pick,
        duration: fc.integer({ min: 20, max: 200 }),
        every: fc.integer({ min: 5, max: 40 }),
        downFor: fc.integer({ min: 1, max: 30 }),
      }),
    ],
    [
      'slowDisk',
      1,
      fc.record({
        at,
        kind: fc.constant('slowDisk' as const),
        delayMax: fc.integer({ min: 5, max: 60 }),
        duration: fc.integer({ min: 10, max: 300 }),
      }),
    ],
    ['addNode', 2, fc.record({ at, kind: fc.constant('addNode' as const) })],
    ['removeNode', 2, fc.record({ at, kind: fc.constant('removeNode' as const), pick })],
    ['transfer', 3, fc.record({ at, kind: fc.constant('transfer' as const), pick })],
  ];
  const kept = kinds.filter(([kind]) => !without.includes(kind));
  return fc.oneof(...kept.map(([, weight, arbitrary]) => ({ weight, arbitrary })));
}

/** The schedule a seed names (fast-check's first unbiased value for that seed). */
export function scheduleForSeed(seed: number, options: ScheduleOptions = {}): Schedule {
  return fc.sample(scheduleArbitrary(options), { seed, numRuns: 1 })[0]!;
}

export function baselineNetwork(schedule: Schedule): NetworkConditions {
  const n = schedule.network;
  return {
    dropRate: n.dropPermille / 1000,
    duplicateRate: n.duplicatePermille / 1000,
    latencyMin: n.latencyMin,
    latencyMax: Math.max(n.latencyMin, n.latencyMax),
    slowRate: n.slowPermille / 1000,
    slowLatencyMax: n.slowLatencyMax,
    reorder: n.reorder,
  };
}

/** `plug` swaps in another state machine and client payloads (test/sim/lock-table-sim.ts). */
export function clusterFor(
  schedule: Schedule,
  options: RunOptions = {},
  plug: Pick<ClusterOptions, 'machine' | 'payload'> = {},
): Cluster {
  return new Cluster({
    seed: schedule.seed,
    nodes: schedule.nodes,
    // A schedule saved by an older version may lack newer knobs: those keep the core's defaults.
    raft: Object.fromEntries(Object.entries(schedule.raft).filter(([, value]) => value !== undefined)),
    network: baselineNetwork(schedule),
    diskDelayMin: schedule.disk.delayMin,
    diskDelayMax: Math.max(schedule.disk.delayMin, schedule.disk.delayMax),
    clockSkew: schedule.clockSkew,
    workload: {
      proposalRate: schedule.workload.proposalPermille / 1000,
      readRate: schedule.workload.readPermille / 1000,
      payloadBytesMax: schedule.workload.payloadBytesMax,
    },
    snapshots: schedule.snapshots,
    checks: options.checks ?? 'all',
    trace: options.trace ?? false,
    ...plug,
  });
}

/** Plays a schedule; throws a `SimViolation` (with the seed) on any broken property. */
export function runSchedule(schedule: Schedule, options: RunOptions = {}): SimReport {
  const cluster = clusterFor(schedule, options);
  const faults = new FaultState(baselineNetwork(schedule), cluster.diskDelay);
  const events = [...schedule.events].sort((a, b) => a.at - b.at);
  for (const event of events) cluster.at(event.at, () => applyFault(cluster, faults, event));
  cluster.runTicks(schedule.ticks);
  const faultTicksEnd = cluster.tick;
  if (options.liveness ?? true) {
    faults.over = true;
    // Clients go quiet: the bound measures recovery, not how long a backlog takes to drain.
    cluster.workload = null;
    healEverything(cluster, faults.baselineDisk);
    checkLiveness(cluster);
  }
  let traceHash = cluster.traceHash;
  for (const id of cluster.ids) {
    const machine = cluster.machine(id);
    traceHash = mix(mix(traceHash, machine.index), machine.chain);
  }
  return {
    seed: schedule.seed,
    nodes: schedule.nodes,
    ticks: cluster.tick,
    livenessTicks: cluster.tick - faultTicksEnd,
    elections: cluster.checker.elections,
    commits: cluster.checker.committedMax,
    faults: faults.count,
    messages: cluster.stats.messagesSent,
    traceHash,
    stats: { ...cluster.stats },
  };
}

/** Network healed and calm, every crashed node restarted, every paused node resumed. */
export function healEverything(cluster: Cluster, baselineDisk?: { min: number; max: number }): void {
  cluster.heal();
  if (baselineDisk !== undefined) cluster.setDiskDelay(baselineDisk.min, baselineDisk.max);
  cluster.setNetwork({ dropRate: 0, duplicateRate: 0, slowRate: 0, reorder: false });
  for (const id of cluster.ids) {
    if (cluster.isRemoved(id)) continue;
    if (cluster.isUp(id)) cluster.resume(id);
    else cluster.restart(id);
  }
}

/**
 * Liveness: a leader is elected and a fresh proposal commits on every live voter within
 * `livenessElectionTimeouts` election timeouts — plus the time the configured pipeline needs, at
 * worst (one append per round trip), to ship the backlog of entries the faults left behind and a
 * snapshot to a node that fell behind compaction. A core that stops making progress never meets it.
 * Returns the ticks it took.
 */
export function checkLiveness(cluster: Cluster): number {
  const start = cluster.tick;
  const live = cluster.liveIds.map((id) => cluster.status(id));
  const backlog = Math.max(...live.map((s) => s.lastIndex)) - Math.min(...live.map((s) => s.commit));
  const { latencyMax } = cluster.network.conditions;
  const raft = cluster.raftConfig;
  const roundTripTicks =
    Math.ceil((2 * latencyMax + cluster.diskDelay.max) / unitsPerTick) + raft.heartbeatIntervalTicks + 1;
  // A node behind compaction gets the leader's snapshot in chunks, one per round trip: count them from
  // the largest snapshot any live node holds (the lock table's run to dozens of small chunks), at least 8.
  const snapshotBytes = Math.max(...cluster.liveIds.map((id) => cluster.core(id).snapshot().data.byteLength));
  const snapshotChunksMax = Math.max(8, Math.ceil(snapshotBytes / raft.snapshotChunkBytesMax) + 1);
  const shipTicks = (Math.ceil(backlog / raft.entriesPerAppendMax) + snapshotChunksMax) * roundTripTicks;
  const bound = livenessElectionTimeouts * cluster.electionTimeoutTicks + shipTicks;
  let pending: { leader: NodeId; index: number; term: number } | null = null;
  let lagging: NodeId[] = [];
  const done = (): boolean => {
    const leader = cluster.leader();
    if (leader === null) {
      pending = null;
      return false;
    }
    if (pending !== null && (pending.leader !== leader || cluster.status(leader).term !== pending.term))
      pending = null;
    if (pending === null) {
      const result = cluster.proposeOn(leader, cluster.payload());
      if (!result.ok) return false;
      pending = { leader, index: result.index, term: result.term };
    }
    const { index, term } = pending;
    const voters = cluster.status(leader).conf.voters.filter((id) => cluster.isUp(id));
    lagging = voters.filter((id) => {
      const status = cluster.status(id);
      const held = cluster.core(id).termAt(index); // undefined once compacted away: the checkers vouch for it
      return status.commit < index || (held !== undefined && held !== term);
    });
    return lagging.length === 0;
  };
  if (cluster.runUntil(done, bound)) return cluster.tick - start;
  const leader = cluster.leader();
  const budget = ` (${livenessElectionTimeouts} election timeouts + ${shipTicks} ticks to ship a backlog of ${backlog} entries and a snapshot of ${snapshotChunksMax} chunks)`;
  const detail =
    leader === null
      ? `no leader within ${bound} ticks after every fault healed${budget} (terms: ${describeNodes(cluster)})`
      : pending === null
        ? `leader ${leader} could not get a proposal accepted within ${bound} ticks after every fault healed${budget}`
        : `entry ${(pending as { index: number }).index} proposed on ${leader} did not commit on [${lagging.join(', ')}] within ${bound} ticks after every fault healed${budget} (${describeNodes(cluster)})`;
  throw new SimViolation('liveness', detail, { seed: cluster.seed, time: cluster.now, tick: cluster.tick });
}

function describeNodes(cluster: Cluster): string {
  return cluster.liveIds
    .map((id) => {
      const s = cluster.status(id);
      return `${id}:${s.role}/t${s.term}/c${s.commit}/last${s.lastIndex}`;
    })
    .join(' ');
}
