// Fault events: what a schedule can do to a running cluster, and how each one is carried out.
// Events name their victims indirectly (`pick`, `target`), resolved against the cluster as it is
// when the event fires, so a schedule stays meaningful when shrinking removes the events before it.

import { createPrng } from '../../src/raft/prng.ts';
import type { NodeId } from '../../src/raft/types.ts';
import type { Cluster } from './cluster.ts';
import { deriveSeed, Stream } from './hash.ts';
import type { NetworkConditions } from './network.ts';

export const partitionShapes = [
  /** A random minority against the rest, both directions. */
  'split',
  /** One random node cut off both ways. */
  'isolate',
  /** The leader cut off both ways. */
  'isolateLeader',
  /** The leader still sends but hears nothing back: only check-quorum unseats it. */
  'leaderDeaf',
  /** One node hears everyone but nobody hears it. */
  'mute',
  /** Each node sees a majority, but no two nodes the same one (Jepsen's majorities ring). */
  'ring',
  /** Two minorities that only a bridge node connects. */
  'bridge',
] as const;
export type PartitionShape = (typeof partitionShapes)[number];

export type FaultTarget = 'leader' | 'any';

export type FaultEvent =
  | { at: number; kind: 'partition'; shape: PartitionShape; pick: number; duration: number }
  /** For a duration: heavy loss and duplication, and copies overtake each other on every link. */
  | { at: number; kind: 'lossy'; dropPermille: number; duplicatePermille: number; duration: number }
  | { at: number; kind: 'crash'; target: FaultTarget; pick: number; downFor: number }
  | { at: number; kind: 'crashAll'; downFor: number }
  /** The target dies halfway through its next disk write (between persist-start and persist-end). */
  | { at: number; kind: 'crashMidWrite'; target: FaultTarget; pick: number; downFor: number }
  /** Rapid crashes and restarts of random nodes (with slow fsyncs, they land between persist-start and -end). */
  | { at: number; kind: 'crashStorm'; pick: number; duration: number; every: number; downFor: number }
  /** Fsyncs take this long (units) for a while: more writes in flight when crashes hit. */
  | { at: number; kind: 'slowDisk'; delayMax: number; duration: number }
  | { at: number; kind: 'pause'; target: FaultTarget; pick: number; duration: number; queueMessages: boolean }
  | { at: number; kind: 'addNode' }
  | { at: number; kind: 'removeNode'; pick: number }
  | { at: number; kind: 'transfer'; pick: number };

export type FaultKind = FaultEvent['kind'];

export const faultKinds: readonly FaultKind[] = [
  'partition',
  'lossy',
  'crash',
  'crashAll',
  'crashMidWrite',
  'crashStorm',
  'slowDisk',
  'pause',
  'addNode',
  'removeNode',
  'transfer',
];

/** Keeps overlapping faults of one kind from undoing each other: only the newest one heals. */
export class FaultState {
  partitionToken = 0;
  lossToken = 0;
  diskToken = 0;
  /** Set when the liveness phase begins: late heals and restores then do nothing. */
  over = false;
  count = 0;

  constructor(
    readonly baseline: NetworkConditions,
    readonly baselineDisk: { min: number; max: number },
  ) {}
}

/** Carries out one fault event on the cluster (and schedules its end). */
export function applyFault(cluster: Cluster, state: FaultState, event: FaultEvent): void {
  if (state.over) return;
  state.count++;
  const now = cluster.tick;
  switch (event.kind) {
    case 'partition': {
      const token = ++state.partitionToken;
      cluster.heal();
      applyPartition(cluster, event.shape, event.pick);
      cluster.at(now + event.duration, () => {
        if (!state.over && state.partitionToken === token) cluster.heal();
      });
      return;
    }
    case 'lossy': {
      const token = ++state.lossToken;
      cluster.setNetwork({
        dropRate: event.dropPermille / 1000,
        duplicateRate: event.duplicatePermille / 1000,
      });
      cluster.at(now + event.duration, () => {
        if (!state.over && state.lossToken === token) cluster.setNetwork(state.baseline);
      });
      return;
    }
    case 'crash': {
      const victim = pickTarget(cluster, event.target, event.pick);
      if (victim === null) return;
      cluster.crash(victim);
      cluster.at(now + event.downFor, () => cluster.restart(victim));
      return;
    }
    case 'crashAll': {
      const victims = cluster.liveIds;
      victims.forEach((id, k) => {
        cluster.crash(id);
        cluster.at(now + event.downFor + k, () => cluster.restart(id));
      });
      return;
    }
    case 'crashMidWrite': {
      const victim = pickTarget(cluster, event.target, event.pick);
      if (victim !== null) cluster.crashDuringNextWrite(victim, event.downFor);
      return;
    }
    case 'crashStorm': {
      const random = createPrng(deriveSeed(event.pick, Stream.faults, now));
      for (let t = now; t < now + event.duration; t += event.every) {
        const draw = random();
        cluster.at(t, () => {
          if (state.over) return;
          const live = cluster.liveIds;
          if (live.length === 0) return;
          const victim = live[Math.floor(draw * live.length)]!;
          cluster.crash(victim);
          cluster.at(cluster.tick + event.downFor, () => cluster.restart(victim));
        });
      }
      return;
    }
    case 'slowDisk': {
      const token = ++state.diskToken;
      cluster.setDiskDelay(state.baselineDisk.min, Math.max(state.baselineDisk.min, event.delayMax));
      cluster.at(now + event.duration, () => {
        if (state.diskToken === token) cluster.setDiskDelay(state.baselineDisk.min, state.baselineDisk.max);
      });
      return;
    }
    case 'pause': {
      const victim = pickTarget(cluster, event.target, event.pick);
      if (victim === null || cluster.isPaused(victim)) return;
      cluster.pause(victim, { queueMessages: event.queueMessages });
      cluster.at(now + event.duration, () => cluster.resume(victim));
      return;
    }
    case 'addNode':
      cluster.addNode();
      return;
    case 'removeNode': {
      const leader = cluster.leader();
      if (leader === null) return;
      const conf = cluster.status(leader).conf;
      // Keep three voters, and keep the leader (removing itself is a transfer plus a removal).
      if (conf.voters.length <= 3) return;
      const candidates = conf.voters.filter((id) => id !== leader);
      cluster.removeNode(candidates[event.pick % candidates.length]!);
      return;
    }
    case 'transfer': {
      const leader = cluster.leader();
      if (leader === null) return;
      const candidates = cluster.status(leader).conf.voters.filter((id) => id !== leader);
      if (candidates.length === 0) return;
      cluster.transferLeadership(candidates[event.pick % candidates.length]!);
      return;
    }
  }
}

function pickTarget(cluster: Cluster, target: FaultTarget, pick: number): NodeId | null {
  if (target === 'leader') {
    const leader = cluster.leader();
    if (leader !== null) return leader;
  }
  const live = cluster.liveIds.filter((id) => !cluster.isPaused(id));
  return live.length === 0 ? null : live[pick % live.length]!;
}

/** Cuts links between the nodes now in the cluster (removed ones included: they are gone anyway). */
function applyPartition(cluster: Cluster, shape: PartitionShape, pick: number): void {
  const ids = cluster.ids.filter((id) => !cluster.isRemoved(id));
  const n = ids.length;
  if (n < 2) return;
  const order = shuffled(ids, pick);
  const leader = cluster.leader();
  switch (shape) {
    case 'split': {
      const minority = 1 + (pick % Math.max(1, Math.floor(n / 2)));
      cluster.partition([order.slice(0, minority), order.slice(minority)]);
      return;
    }
    case 'isolate':
      cluster.isolate(order[0]!);
      return;
    case 'isolateLeader':
      cluster.isolate(leader ?? order[0]!);
      return;
    case 'leaderDeaf': {
      const deaf = leader ?? order[0]!;
      cluster.connectOnly((_from, to) => to !== deaf);
      return;
    }
    case 'mute': {
      const mute = order[0]!;
      cluster.connectOnly((from) => from !== mute);
      return;
    }
    case 'ring': {
      const position = new Map(order.map((id, k) => [id, k]));
      const reach = Math.ceil(Math.floor(n / 2) / 2);
      if (n === 3) {
        // Three nodes cannot form a symmetric majorities ring: each hears only its predecessor.
        cluster.connectOnly((from, to) => (position.get(from)! + 1) % n === position.get(to)!);
        return;
      }
      cluster.connectOnly((a, b) => {
        const d = Math.abs(position.get(a)! - position.get(b)!);
        return Math.min(d, n - d) <= reach;
      });
      return;
    }
    case 'bridge': {
      const bridge = order[0]!;
      const half = Math.floor((n - 1) / 2);
      const left = new Set(order.slice(1, 1 + half));
      cluster.connectOnly((a, b) => a === bridge || b === bridge || left.has(a) === left.has(b));
      return;
    }
  }
}

/** A deterministic permutation chosen by `pick`. */
function shuffled<T>(items: readonly T[], pick: number): T[] {
  const random = createPrng(deriveSeed(pick, Stream.faults));
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
