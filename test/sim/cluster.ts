// The simulated cluster: several Raft cores in one process on one virtual clock, each with its own
// driver loop, disk (MemoryStorage) and state machine, joined by a faulty network. One seed drives
// everything: every random choice comes from a PRNG stream derived from it, and events at the same
// virtual time run in the order they were scheduled, so a seed replays bit for bit.
//
// The driver follows the Ready contract of src/raft/types.ts to the letter:
//   ready() → send messagesEarly → apply committedEntries (durable already; the node does this too) →
//   start the disk write → (fsync completes, simulated delay) → send messages → restore the snapshot →
//   advance().
// The core keeps being ticked and stepped while a write is in flight; the next Ready waits for
// advance(). A crash throws away the writes whose fsync had not completed.

import { assert } from '../../src/assert.ts';
import { createPrng } from '../../src/raft/prng.ts';
import type {
  ConfChange,
  Entry,
  Message,
  NodeId,
  PersistentState,
  ProposeResult,
  RaftConfig,
  Ready,
  Snapshot,
} from '../../src/raft/types.ts';
import { EntryType } from '../../src/raft/types.ts';
import { MemoryStorage } from '../../src/storage/memory-storage.ts';
import { type CheckedNode, Checker, type CheckLevel, SimViolation } from './checkers.ts';
import { type CoreStatus, createCore, decodeChange, type SimCore, simRaftConfig } from './core.ts';
import { EventQueue } from './event-queue.ts';
import { deriveSeed, mix, Stream } from './hash.ts';
import { calmNetwork, Network, type NetworkConditions, nodeSlotsMax } from './network.ts';
import { HashChainMachine, type SimMachine } from './state-machine.ts';

/** Virtual time units per tick: messages and fsyncs take fractions of a tick. */
export const unitsPerTick = 10;

/** Named bounds of the simulator. */
export const simLimits = {
  /** Events (mostly messages in flight) on the agenda; beyond it a message is dropped. */
  eventsMax: 50_000,
  /** Messages a paused node's inbox holds before it drops more. */
  pausedInboxMax: 512,
  /** Recent trace lines kept for a failure report. */
  traceLinesMax: 400,
} as const;

export interface WorkloadOptions {
  /** Probability per tick that a client proposes to some node that believes it leads. */
  proposalRate: number;
  /** Probability per tick of a linearizable read on a random node. */
  readRate: number;
  payloadBytesMax: number;
}

/**
 * Makes one client command for a proposal (the workload's and the liveness check's). `random` is the
 * cluster's workload stream; `now` the virtual time in units (the leader stamps its clock from it).
 * Without one, commands are unique random bytes for the hash-chain machine.
 */
export type PayloadFactory = (random: () => number, context: { now: number; tick: number }) => Uint8Array;

export interface SnapshotOptions {
  /** Take an application snapshot every this many applied entries. */
  every: number;
  /** Entries the core keeps behind a snapshot. */
  keep: number;
}

export interface ClusterOptions {
  seed: number;
  /** Initial voters: n1..nN. */
  nodes: number;
  raft?: Partial<RaftConfig>;
  network?: Partial<NetworkConditions>;
  /** Simulated fsync latency, in units, uniform in [min, max]. */
  diskDelayMin?: number;
  diskDelayMax?: number;
  /** Nodes tick at slightly different rates (period unitsPerTick ± 1). */
  clockSkew?: boolean;
  workload?: WorkloadOptions | null;
  snapshots?: SnapshotOptions | null;
  /** Promote caught-up learners to voters (an operator's job). */
  autoPromote?: boolean;
  checks?: CheckLevel;
  /** Keep the last trace lines in memory (slower); printed with a failure. */
  trace?: boolean;
  /** Each node's replicated state machine (one per node, kept across its restarts); default HashChainMachine. */
  machine?: (id: NodeId) => SimMachine;
  /** The client commands proposals carry; default unique random bytes (see `payload`). */
  payload?: PayloadFactory;
}

export interface SimStats {
  ticks: number;
  messagesSent: number;
  messagesDelivered: number;
  messagesDropped: number;
  messagesDuplicated: number;
  proposalsAccepted: number;
  proposalsRejected: number;
  readsConfirmed: number;
  readsFailed: number;
  crashes: number;
  restarts: number;
  unsyncedWritesLost: number;
  pauses: number;
  partitions: number;
  snapshotsTaken: number;
  snapshotsInstalled: number;
  confChangesProposed: number;
  transfers: number;
}

type NodeState = 'up' | 'down' | 'removed';

interface Inflight {
  readonly ready: Ready;
  readonly writeId: number;
}

class NodeSlot implements CheckedNode {
  incarnation = 0;
  state: NodeState = 'down';
  core!: SimCore;
  paused = false;
  pauseQueues = true;
  inbox: Message[] = [];
  /** The Ready's write completed while the node was paused; finish it on resume. */
  finishOnResume = false;
  inflight: Inflight | null = null;
  /** A committed conf change was applied before this Ready's write (reported to the checker after advance()). */
  confChangedEarly = false;
  /** Crash (and restart after this many ticks) halfway through the next disk write, if set. */
  crashMidWriteDownFor: number | null = null;
  lastSnapshotIndex = 0;
  /** Last status the checkers observed. */
  status: CoreStatus | null = null;
  constructor(
    readonly id: NodeId,
    readonly machine: SimMachine,
    readonly slot: number,
    readonly storage: MemoryStorage,
    readonly tickPeriod: number,
    readonly tickPhase: number,
  ) {}
}

const enum Kind {
  tick = 0,
  deliver = 1,
  fsync = 2,
  call = 3,
  clock = 4,
}

interface SimEvent {
  time: number;
  seq: number;
  kind: Kind;
  slot: number;
  incarnation: number;
  message: Message | null;
  call: (() => void) | null;
}

const messageCodes: Record<Message['type'], number> = {
  preVote: 1,
  vote: 2,
  preVoteResp: 3,
  voteResp: 4,
  append: 5,
  appendResp: 6,
  heartbeat: 7,
  heartbeatResp: 8,
  snapshot: 9,
  snapshotResp: 10,
  timeoutNow: 11,
  readIndex: 12,
  readIndexResp: 13,
};

export function bootState(voters: readonly NodeId[]): PersistentState {
  return {
    hardState: { term: 0, vote: null, commit: 0 },
    snapshot: {
      meta: { index: 0, term: 0, conf: { voters: [...voters], learners: [] } },
      data: new Uint8Array(),
    },
    entries: [],
  };
}

export class Cluster {
  readonly seed: number;
  readonly checker: Checker;
  readonly network: Network;
  readonly stats: SimStats = {
    ticks: 0,
    messagesSent: 0,
    messagesDelivered: 0,
    messagesDropped: 0,
    messagesDuplicated: 0,
    proposalsAccepted: 0,
    proposalsRejected: 0,
    readsConfirmed: 0,
    readsFailed: 0,
    crashes: 0,
    restarts: 0,
    unsyncedWritesLost: 0,
    pauses: 0,
    partitions: 0,
    snapshotsTaken: 0,
    snapshotsInstalled: 0,
    confChangesProposed: 0,
    transfers: 0,
  };
  /** Virtual time in units. */
  now = 0;
  /** Running hash over every event: two runs of one seed must end with the same value. */
  traceHash = 0;
  workload: WorkloadOptions | null;
  readonly electionTimeoutTicks: number;
  /** The Raft tuning every node runs with (id and random aside). */
  readonly raftConfig: RaftConfig;

  private readonly queue = new EventQueue<SimEvent>(simLimits.eventsMax);
  private readonly slots: NodeSlot[] = [];
  private readonly byId = new Map<NodeId, NodeSlot>();
  private readonly diskRandom: () => number;
  /** Whether a leader sends its early messages while a write is out, event by event. */
  private readonly earlyRandom: () => number;
  private readonly workloadRandom: () => number;
  private readonly clockRandom: () => number;
  private readonly raftOverrides: Partial<RaftConfig>;
  private diskDelayMin: number;
  private diskDelayMax: number;
  private readonly snapshots: SnapshotOptions | null;
  private readonly clockSkew: boolean;
  private readonly autoPromote: boolean;
  private readonly traceLines: string[] | null;
  private readonly machineFactory: (id: NodeId) => SimMachine;
  private readonly payloadFactory: PayloadFactory | null;
  private proposalCounter = 0;
  private readCounter = 0;
  /** How each read ended: its index once confirmed, or the failure code. */
  readonly readResults = new Map<string, { index: number } | { code: string }>();
  /** Nodes whose removal has been applied somewhere; they shut down. */
  private readonly removed = new Set<NodeId>();
  private nextClockTick = 0;
  /** The event being handled, for failure reports. */
  private current = '';

  constructor(options: ClusterOptions) {
    assert(options.nodes >= 1 && options.nodes <= nodeSlotsMax, `cluster: ${options.nodes} nodes`);
    this.seed = options.seed >>> 0;
    this.raftOverrides = options.raft ?? {};
    this.network = new Network(
      { ...calmNetwork, ...options.network },
      createPrng(deriveSeed(this.seed, Stream.network)),
    );
    this.diskRandom = createPrng(deriveSeed(this.seed, Stream.disk));
    this.earlyRandom = createPrng(deriveSeed(this.seed, Stream.disk, 1));
    this.workloadRandom = createPrng(deriveSeed(this.seed, Stream.workload));
    this.clockRandom = createPrng(deriveSeed(this.seed, Stream.clocks));
    this.diskDelayMin = options.diskDelayMin ?? 1;
    this.diskDelayMax = options.diskDelayMax ?? 6;
    this.workload = options.workload ?? null;
    this.snapshots = options.snapshots ?? null;
    this.clockSkew = options.clockSkew ?? false;
    this.autoPromote = options.autoPromote ?? true;
    this.traceLines = options.trace ? [] : null;
    this.machineFactory = options.machine ?? (() => new HashChainMachine());
    this.payloadFactory = options.payload ?? null;
    this.checker = new Checker(
      () => ({ seed: this.seed, time: this.now, tick: this.tick }),
      (id) => this.byId.get(id)?.storage,
      options.checks ?? 'all',
    );
    this.raftConfig = simRaftConfig('probe', () => 0, this.raftOverrides);
    this.electionTimeoutTicks = this.raftConfig.electionTimeoutTicks;
    const voters = Array.from({ length: options.nodes }, (_, k) => `n${k + 1}`);
    for (const id of voters) this.boot(this.addSlot(id, bootState(voters)));
    this.scheduleClock();
  }

  get tick(): number {
    return Math.floor(this.now / unitsPerTick);
  }

  /** Every node ever created, in creation order. */
  get ids(): NodeId[] {
    return this.slots.map((s) => s.id);
  }

  /** Nodes running now (not crashed, not removed); paused ones included. */
  get liveIds(): NodeId[] {
    return this.slots.filter((s) => s.state === 'up').map((s) => s.id);
  }

  isUp(id: NodeId): boolean {
    return this.slotOf(id).state === 'up';
  }

  isPaused(id: NodeId): boolean {
    return this.slotOf(id).paused;
  }

  isRemoved(id: NodeId): boolean {
    return this.slotOf(id).state === 'removed';
  }

  /** Raw access for scenario tests (read-only use). */
  core(id: NodeId): SimCore {
    const slot = this.slotOf(id);
    assert(slot.state === 'up', `cluster: ${id} is not running`);
    return slot.core;
  }

  status(id: NodeId): CoreStatus {
    return this.core(id).status();
  }

  storage(id: NodeId): MemoryStorage {
    return this.slotOf(id).storage;
  }

  machine(id: NodeId): SimMachine {
    return this.slotOf(id).machine;
  }

  /** The running, unpaused node that believes it leads at the highest term, if any. */
  leader(): NodeId | null {
    let best: NodeSlot | null = null;
    for (const slot of this.slots) {
      if (slot.state !== 'up' || slot.paused || slot.status === null || slot.status.role !== 'leader')
        continue;
      if (best === null || slot.status.term > best.status!.term) best = slot;
    }
    return best?.id ?? null;
  }

  // ---------------------------------------------------------------- running

  /** Runs the simulation for `ticks` ticks of virtual time. */
  runTicks(ticks: number): void {
    this.runUntilTime((this.tick + ticks) * unitsPerTick);
  }

  /** Runs until `done()` holds (checked once per tick) or `ticksMax` pass; returns whether it held. */
  runUntil(done: () => boolean, ticksMax: number): boolean {
    const end = this.tick + ticksMax;
    while (this.tick < end) {
      if (done()) return true;
      this.runUntilTime((this.tick + 1) * unitsPerTick);
    }
    return done();
  }

  /** Like `runUntil`, but checks `done()` after every single event: for scenarios that need to stop mid-flight. */
  runEventsUntil(done: () => boolean, ticksMax: number): boolean {
    const end = (this.tick + ticksMax) * unitsPerTick;
    while (!done()) {
      if (this.queue.peekTime() >= end) {
        this.now = end;
        return false;
      }
      this.runUntilTime(this.queue.peekTime() + 1, 1);
    }
    return true;
  }

  private runUntilTime(time: number, eventsMax = Number.POSITIVE_INFINITY): void {
    let handled = 0;
    while (this.queue.peekTime() < time && handled < eventsMax) {
      handled++;
      const event = this.queue.pop();
      this.now = event.time;
      try {
        this.dispatch(event);
      } catch (error) {
        throw this.asViolation(error);
      }
    }
    if (handled < eventsMax) this.now = Math.max(this.now, time);
  }

  private asViolation(error: unknown): SimViolation {
    if (error instanceof SimViolation) {
      if (this.traceLines !== null) error.message += `\n${this.recentTrace()}`;
      return error;
    }
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const violation = new SimViolation(
      'core failure',
      `${text} (while ${this.current})`,
      { seed: this.seed, time: this.now, tick: this.tick },
      { cause: error },
    );
    if (this.traceLines !== null) violation.message += `\n${this.recentTrace()}`;
    return violation;
  }

  /** The last events, for a failure report (only with `trace: true`). */
  recentTrace(): string {
    return this.traceLines === null ? '' : `last events:\n  ${this.traceLines.join('\n  ')}`;
  }

  private dispatch(event: SimEvent): void {
    switch (event.kind) {
      case Kind.clock:
        this.traceHash = mix(this.traceHash, event.time);
        this.onClock();
        return;
      case Kind.call:
        this.current = 'running a scheduled action';
        event.call!();
        return;
      case Kind.tick: {
        const slot = this.slots[event.slot]!;
        if (slot.state !== 'up' || slot.incarnation !== event.incarnation) return;
        this.pushEvent(event.time + slot.tickPeriod, Kind.tick, slot, null, null);
        if (slot.paused) return;
        this.current = `ticking ${slot.id}`;
        this.traceHash = mix(mix(this.traceHash, 1), slot.slot);
        slot.core.tick();
        this.settle(slot);
        return;
      }
      case Kind.deliver:
        this.deliver(event.message!);
        return;
      case Kind.fsync: {
        const slot = this.slots[event.slot]!;
        if (slot.state !== 'up' || slot.incarnation !== event.incarnation) return;
        this.current = `completing an fsync on ${slot.id}`;
        this.flushDisk(slot);
        if (slot.inflight === null || slot.storage.isPending(slot.inflight.writeId)) return;
        if (slot.paused) {
          slot.finishOnResume = true;
          return;
        }
        this.traceHash = mix(mix(this.traceHash, 3), slot.slot);
        this.finishReady(slot);
        this.settle(slot);
        return;
      }
    }
  }

  /** Once per tick: the workload, learner promotion. */
  private onClock(): void {
    this.stats.ticks = this.tick;
    this.scheduleClock();
    if (this.workload !== null) this.runWorkload(this.workload);
    if (this.autoPromote && this.tick % 5 === 0) this.promoteLearners();
  }

  private scheduleClock(): void {
    this.nextClockTick++;
    this.queue.push({
      time: this.nextClockTick * unitsPerTick,
      seq: 0,
      kind: Kind.clock,
      slot: 0,
      incarnation: 0,
      message: null,
      call: null,
    });
  }

  /** Runs `action` at the start of tick `tick` (before the nodes tick). */
  at(tick: number, action: () => void): void {
    assert(tick * unitsPerTick >= this.now, `cluster: scheduling in the past (tick ${tick} < ${this.tick})`);
    this.queue.push({
      time: tick * unitsPerTick,
      seq: 0,
      kind: Kind.call,
      slot: 0,
      incarnation: 0,
      message: null,
      call: action,
    });
  }

  private pushEvent(
    time: number,
    kind: Kind,
    slot: NodeSlot,
    message: Message | null,
    call: (() => void) | null,
  ) {
    return this.queue.push({
      time,
      seq: 0,
      kind,
      slot: slot.slot,
      incarnation: slot.incarnation,
      message,
      call,
    });
  }

  // ---------------------------------------------------------------- the driver

  /** Handles Readys until the node waits on its disk, then runs the checkers on it. */
  private settle(slot: NodeSlot): void {
    this.drive(slot);
    // While a write is out, a leader may already send what it produced since (the node does, every turn).
    if (slot.state === 'up' && !slot.paused && slot.inflight !== null && this.earlyRandom() < 0.5) {
      for (const message of slot.core.takeEarlyMessages()) this.send(slot, message);
    }
    if (slot.state === 'up') slot.status = this.checker.observe(slot);
  }

  private drive(slot: NodeSlot): void {
    while (slot.state === 'up' && !slot.paused && slot.inflight === null && slot.core.hasReady()) {
      const ready = slot.core.ready();
      this.trace(() => `${slot.id} ready: ${describeReady(ready)}`);
      this.checker.onReady(slot, ready);
      for (const message of ready.messagesEarly) this.send(slot, message);
      // The contract lets committed entries be applied before the write: they are durable already.
      slot.confChangedEarly = ready.snapshot === null && this.applyCommitted(slot, ready);
      // With deferCommitBroadcast the node spreads a commit at once only when another node waits for it.
      if (ready.committedEntries.length > 0 && this.earlyRandom() < 0.5) slot.core.broadcastCommit();
      const needsWrite = ready.snapshot !== null || ready.entries.length > 0 || ready.hardState !== null;
      if (!needsWrite) {
        slot.inflight = { ready, writeId: 0 };
        this.finishReady(slot);
        continue;
      }
      const write = slot.storage.persist(
        { snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState },
        { now: this.now, delay: this.drawDiskDelay() },
      );
      slot.inflight = { ready, writeId: write.id };
      if (write.completeAt > this.now) {
        this.pushEvent(write.completeAt, Kind.fsync, slot, null, null);
        if (slot.crashMidWriteDownFor !== null) this.crashMidWrite(slot, write.completeAt);
        return;
      }
      this.flushDisk(slot);
      this.finishReady(slot);
    }
  }

  /** Applies the Ready's committed entries; true when one of them changed the membership. */
  private applyCommitted(slot: NodeSlot, ready: Ready): boolean {
    if (ready.committedEntries.length === 0) return false;
    const status = slot.core.status();
    let confChanged = false;
    for (const entry of ready.committedEntries) {
      this.checker.onApply(slot, entry, status);
      slot.machine.apply(entry);
      this.checker.afterApply(slot);
      if (entry.type === EntryType.confChange) {
        confChanged = true;
        this.onConfChangeApplied(entry);
      }
    }
    return confChanged;
  }

  private flushDisk(slot: NodeSlot): void {
    if (slot.storage.flushUntil(this.now).length > 0) this.checker.onDurable(slot);
  }

  /** Steps 3–5 of the Ready contract, once the write is durable. */
  private finishReady(slot: NodeSlot): void {
    const { ready } = slot.inflight!;
    for (const message of ready.messages) this.send(slot, message);
    const confChanged = ready.snapshot !== null || slot.confChangedEarly;
    slot.confChangedEarly = false;
    if (ready.snapshot !== null) {
      assert(ready.committedEntries.length === 0, `${slot.id}: a Ready with a snapshot and entries to apply`);
      slot.machine.restore(ready.snapshot);
      this.checker.onRestore(slot, ready.snapshot);
      slot.lastSnapshotIndex = ready.snapshot.meta.index;
      this.stats.snapshotsInstalled++;
    }
    for (const read of ready.readStates) {
      this.checker.onReadState(slot.id, read);
      this.readResults.set(read.context, { index: read.index });
      this.stats.readsConfirmed++;
    }
    for (const failure of ready.readFailures) {
      this.checker.onReadFailure(slot.id, failure.context);
      this.readResults.set(failure.context, { code: failure.code });
      this.stats.readsFailed++;
    }
    slot.inflight = null;
    slot.core.advance();
    if (confChanged) {
      const after = slot.core.status();
      // A snapshot received while this Ready was out supersedes the entries it applied: the core already
      // runs on the snapshot's membership, but `applied` moves only when the next Ready hands it out.
      if (after.snapshotIndex <= after.applied) this.checker.onConfApplied(slot, after.applied, after.conf);
    }
    this.maybeSnapshot(slot);
  }

  private maybeSnapshot(slot: NodeSlot): void {
    const options = this.snapshots;
    const index = slot.machine.index;
    if (options === null || index - slot.lastSnapshotIndex < options.every) return;
    const status = slot.core.status();
    if (status.applied !== index) return;
    const term = slot.core.termAt(index);
    assert(term !== undefined, `cluster: ${slot.id} has no term for applied index ${index}`);
    const data = slot.machine.serialize();
    slot.core.createSnapshot(index, data, options.keep);
    const snapshot: Snapshot = { meta: { index, term, conf: status.conf }, data };
    const write = slot.storage.persist(
      { compactTo: snapshot },
      { now: this.now, delay: this.drawDiskDelay() },
    );
    this.pushEvent(write.completeAt, Kind.fsync, slot, null, null);
    slot.lastSnapshotIndex = index;
    this.stats.snapshotsTaken++;
  }

  private onConfChangeApplied(entry: Entry): void {
    const change = decodeChange(entry.data);
    if (change.type !== 'remove' || this.removed.has(change.node)) return;
    // The removal is committed: the operator shuts the node down a little later.
    this.removed.add(change.node);
    const target = this.byId.get(change.node);
    if (target === undefined) return;
    this.at(this.tick + 1, () => this.shutDown(change.node));
  }

  private drawDiskDelay(): number {
    const lo = this.diskDelayMin;
    return lo + Math.floor(this.diskRandom() * (this.diskDelayMax - lo + 1));
  }

  // ---------------------------------------------------------------- the network

  private send(from: NodeSlot, message: Message): void {
    this.checker.beforeSend(from, message);
    this.stats.messagesSent++;
    const to = this.byId.get(message.to);
    if (to === undefined) {
      this.stats.messagesDropped++;
      return;
    }
    const delays = this.network.route(from.slot, to.slot, this.now);
    if (delays.length === 0) this.stats.messagesDropped++;
    if (delays.length > 1) this.stats.messagesDuplicated++;
    for (const delay of delays) {
      // Each copy is its own frozen object: nodes never share what they received.
      const copy = freezeMessage(cloneMessage(message));
      const queued = this.queue.push({
        time: this.now + delay,
        seq: 0,
        kind: Kind.deliver,
        slot: to.slot,
        incarnation: 0,
        message: copy,
        call: null,
      });
      if (!queued) this.stats.messagesDropped++;
    }
  }

  private deliver(message: Message): void {
    const to = this.byId.get(message.to);
    const from = this.byId.get(message.from);
    if (
      to === undefined ||
      from === undefined ||
      to.state !== 'up' ||
      this.network.isBlocked(from.slot, to.slot)
    ) {
      this.stats.messagesDropped++;
      return;
    }
    if (to.paused) {
      if (to.pauseQueues && to.inbox.length < simLimits.pausedInboxMax) to.inbox.push(message);
      else this.stats.messagesDropped++;
      return;
    }
    this.step(to, message);
  }

  private step(to: NodeSlot, message: Message): void {
    this.current = `delivering ${message.type} ${message.from}→${message.to} (term ${message.term})`;
    this.traceHash = mix(mix(mix(this.traceHash, messageCodes[message.type]), to.slot), message.term);
    this.trace(() => `deliver ${describeMessage(message)}`);
    this.stats.messagesDelivered++;
    to.core.step(message);
    this.settle(to);
  }

  // ---------------------------------------------------------------- the workload

  private runWorkload(workload: WorkloadOptions): void {
    const random = this.workloadRandom;
    if (random() < workload.proposalRate) {
      const leaders = this.slots.filter((s) => s.state === 'up' && !s.paused && s.status?.role === 'leader');
      if (leaders.length > 0) {
        const slot = leaders[Math.floor(random() * leaders.length)]!;
        const count = 1 + Math.floor(random() * 3);
        for (let k = 0; k < count; k++) this.proposeOn(slot.id, this.payload(workload.payloadBytesMax));
      }
    }
    if (random() < workload.readRate) {
      const live = this.slots.filter((s) => s.state === 'up' && !s.paused);
      if (live.length > 0) this.readIndex(live[Math.floor(random() * live.length)]!.id);
    }
  }

  /** A client command: the payload factory's, or a unique one (a counter, then seeded filler bytes). */
  payload(bytesMax = 32): Uint8Array {
    const random = this.workloadRandom;
    if (this.payloadFactory !== null) return this.payloadFactory(random, { now: this.now, tick: this.tick });
    const length = 8 + Math.floor(random() * Math.max(1, bytesMax - 7));
    const data = new Uint8Array(length);
    new DataView(data.buffer).setUint32(0, ++this.proposalCounter);
    for (let i = 4; i < length; i++) data[i] = Math.floor(random() * 256);
    return data;
  }

  /** Proposes on `id` (which should be the leader); returns the core's answer. */
  proposeOn(id: NodeId, data: Uint8Array = this.payload()): ProposeResult {
    const slot = this.slotOf(id);
    assert(slot.state === 'up', `cluster: proposing on ${id}, which is not running`);
    this.current = `proposing on ${id}`;
    const result = slot.core.propose(data);
    if (result.ok) this.stats.proposalsAccepted++;
    else this.stats.proposalsRejected++;
    this.traceHash = mix(this.traceHash, result.ok ? result.index : -1);
    this.settle(slot);
    return result;
  }

  /** Proposes to the current leader, if there is one. */
  propose(data: Uint8Array = this.payload()): ProposeResult | null {
    const leader = this.leader();
    return leader === null ? null : this.proposeOn(leader, data);
  }

  /** Starts a linearizable read on `id`; returns its context. */
  readIndex(id: NodeId, context = `r${++this.readCounter}`): string {
    const slot = this.slotOf(id);
    assert(slot.state === 'up', `cluster: reading on ${id}, which is not running`);
    this.current = `starting read ${context} on ${id}`;
    this.checker.onReadRequest(id, context);
    slot.core.readIndex(context);
    this.settle(slot);
    return context;
  }

  // ---------------------------------------------------------------- node faults

  /** Kills the process: volatile state and writes not yet fsynced are lost, the disk stays. */
  crash(id: NodeId): void {
    const slot = this.slotOf(id);
    if (slot.state !== 'up') return;
    this.current = `crashing ${id}`;
    this.flushDisk(slot); // writes whose fsync completed by now survive
    this.stats.unsyncedWritesLost += slot.storage.crash();
    this.goDown(slot, 'down');
    this.stats.crashes++;
    this.trace(() => `crash ${id}`);
  }

  /**
   * Arms a crash for `id`'s next disk write that takes time: the node dies halfway between
   * persist-start and persist-end (after `messagesEarly` went out, before the fsync), and restarts
   * `downFor` ticks later.
   */
  crashDuringNextWrite(id: NodeId, downFor: number): void {
    const slot = this.slotOf(id);
    if (slot.state === 'up') slot.crashMidWriteDownFor = downFor;
  }

  private crashMidWrite(slot: NodeSlot, completeAt: number): void {
    const downFor = slot.crashMidWriteDownFor!;
    slot.crashMidWriteDownFor = null;
    const incarnation = slot.incarnation;
    const at = this.now + Math.max(0, Math.floor((completeAt - this.now) / 2));
    this.queue.push({
      time: at,
      seq: 0,
      kind: Kind.call,
      slot: slot.slot,
      incarnation,
      message: null,
      call: () => {
        if (slot.incarnation !== incarnation || slot.state !== 'up') return;
        this.crash(slot.id);
        this.at(this.tick + downFor, () => this.restart(slot.id));
      },
    });
  }

  /** Restarts a crashed node from its disk. */
  restart(id: NodeId): void {
    const slot = this.slotOf(id);
    if (slot.state !== 'down') return;
    this.current = `restarting ${id}`;
    this.stats.restarts++;
    this.trace(() => `restart ${id}`);
    this.boot(slot);
  }

  /** Stops the process (a GC pause, SIGSTOP): it neither ticks nor receives; messages queue or drop. */
  pause(id: NodeId, { queueMessages }: { queueMessages: boolean }): void {
    const slot = this.slotOf(id);
    if (slot.state !== 'up' || slot.paused) return;
    slot.paused = true;
    slot.pauseQueues = queueMessages;
    this.stats.pauses++;
    this.trace(() => `pause ${id}`);
  }

  resume(id: NodeId): void {
    const slot = this.slotOf(id);
    if (slot.state !== 'up' || !slot.paused) return;
    this.current = `resuming ${id}`;
    this.trace(() => `resume ${id}`);
    slot.paused = false;
    if (slot.finishOnResume) {
      slot.finishOnResume = false;
      this.finishReady(slot);
    }
    this.settle(slot);
    const inbox = slot.inbox;
    slot.inbox = [];
    for (const message of inbox) {
      if (slot.state !== 'up' || slot.paused) break;
      this.step(slot, message);
    }
  }

  /** A removed node's operator stops it for good. */
  private shutDown(id: NodeId): void {
    const slot = this.slotOf(id);
    if (slot.state === 'removed') return;
    if (slot.state === 'up') {
      this.flushDisk(slot);
      slot.storage.crash();
    }
    this.goDown(slot, 'removed');
    this.trace(() => `shut down removed ${id}`);
  }

  private goDown(slot: NodeSlot, state: NodeState): void {
    slot.state = state;
    slot.incarnation++;
    slot.paused = false;
    slot.finishOnResume = false;
    slot.crashMidWriteDownFor = null;
    slot.inbox = [];
    slot.inflight = null;
    slot.status = null;
  }

  private addSlot(id: NodeId, initial: PersistentState): NodeSlot {
    assert(this.slots.length < nodeSlotsMax, `cluster: more than ${nodeSlotsMax} nodes`);
    const period = this.clockSkew ? unitsPerTick - 1 + Math.floor(this.clockRandom() * 3) : unitsPerTick;
    const phase = Math.floor(this.clockRandom() * unitsPerTick);
    const storage = new MemoryStorage(initial);
    const slot = new NodeSlot(id, this.machineFactory(id), this.slots.length, storage, period, phase);
    this.slots.push(slot);
    this.byId.set(id, slot);
    return slot;
  }

  private boot(slot: NodeSlot): void {
    slot.incarnation++;
    const loaded = slot.storage.load();
    const random = createPrng(deriveSeed(this.seed, Stream.node, slot.slot, slot.incarnation));
    slot.core = createCore(simRaftConfig(slot.id, random, this.raftOverrides), loaded);
    slot.state = 'up';
    slot.machine.restore(loaded.snapshot);
    slot.lastSnapshotIndex = loaded.snapshot.meta.index;
    this.checker.onBoot(slot, loaded);
    slot.status = slot.core.status();
    const next = (this.tick + 1) * unitsPerTick + slot.tickPhase;
    this.pushEvent(next, Kind.tick, slot, null, null);
    this.settle(slot);
  }

  private slotOf(id: NodeId): NodeSlot {
    const slot = this.byId.get(id);
    assert(slot !== undefined, `cluster: no node ${id}`);
    return slot;
  }

  // ---------------------------------------------------------------- network faults

  /** Nodes in different groups cannot reach each other (both directions). */
  partition(groups: readonly (readonly NodeId[])[]): void {
    this.network.partition(groups.map((g) => g.map((id) => this.slotOf(id).slot)));
    this.stats.partitions++;
    this.trace(() => `partition ${groups.map((g) => `{${g.join(',')}}`).join(' ')}`);
  }

  /** Cuts `id` off from everyone, both ways. */
  isolate(id: NodeId): void {
    const others = this.ids.filter((o) => o !== id);
    this.partition([[id], others]);
  }

  /** Messages from `from` to `to` are lost (one direction only). */
  blockLink(from: NodeId, to: NodeId): void {
    this.network.setBlocked(this.slotOf(from).slot, this.slotOf(to).slot, true);
    this.trace(() => `block ${from}→${to}`);
  }

  /** Only links for which `connected(a, b)` holds stay up (a→b direction). */
  connectOnly(connected: (from: NodeId, to: NodeId) => boolean): void {
    const ids = this.ids;
    for (const a of ids) {
      for (const b of ids) {
        if (a !== b) this.network.setBlocked(this.slotOf(a).slot, this.slotOf(b).slot, !connected(a, b));
      }
    }
    this.stats.partitions++;
  }

  heal(): void {
    this.network.healPartitions();
    this.trace(() => 'heal');
  }

  /** Simulated fsync latency from now on, in units, uniform in [min, max]. */
  setDiskDelay(min: number, max: number): void {
    assert(min >= 0 && max >= min, `cluster: bad disk delay [${min}, ${max}]`);
    this.diskDelayMin = min;
    this.diskDelayMax = max;
  }

  get diskDelay(): { min: number; max: number } {
    return { min: this.diskDelayMin, max: this.diskDelayMax };
  }

  setNetwork(conditions: Partial<NetworkConditions>): void {
    this.network.conditions = { ...this.network.conditions, ...conditions };
  }

  // ---------------------------------------------------------------- membership and leadership

  /** Asks the leader to add a new node as a learner and starts it empty; returns its id, or null. */
  addNode(): NodeId | null {
    const leader = this.leader();
    if (leader === null || this.slots.length >= nodeSlotsMax) return null;
    const conf = this.slotOf(leader).status!.conf;
    if (conf.voters.length + conf.learners.length >= 7) return null;
    const id = `n${this.slots.length + 1}`;
    const result = this.proposeConfChangeOn(leader, { type: 'addLearner', node: id });
    if (!result.ok) return null;
    this.boot(this.addSlot(id, bootState([])));
    return id;
  }

  /** Asks the leader to remove `id`; the node shuts down once the removal is applied. */
  removeNode(id: NodeId): ProposeResult | null {
    const leader = this.leader();
    if (leader === null) return null;
    return this.proposeConfChangeOn(leader, { type: 'remove', node: id });
  }

  proposeConfChangeOn(id: NodeId, change: ConfChange): ProposeResult {
    const slot = this.slotOf(id);
    this.current = `proposing ${change.type} ${change.node} on ${id}`;
    const result = slot.core.proposeConfChange(change);
    if (result.ok) this.stats.confChangesProposed++;
    this.traceHash = mix(this.traceHash, result.ok ? result.index : -2);
    this.trace(
      () =>
        `${id} proposeConfChange ${change.type} ${change.node}: ${result.ok ? `ok @${result.index}` : result.code}`,
    );
    this.settle(slot);
    return result;
  }

  /** Promotes caught-up learners (the core refuses one that is not). */
  private promoteLearners(): void {
    const leader = this.leader();
    if (leader === null) return;
    const status = this.slotOf(leader).status!;
    for (const learner of status.conf.learners) {
      if (this.removed.has(learner)) continue;
      const progress = status.progress?.[learner];
      if (progress === undefined || progress.match < status.commit) continue;
      this.proposeConfChangeOn(leader, { type: 'addVoter', node: learner });
      return;
    }
  }

  transferLeadership(to: NodeId): boolean {
    const leader = this.leader();
    if (leader === null || leader === to) return false;
    const slot = this.slotOf(leader);
    this.current = `transferring leadership ${leader}→${to}`;
    const started = slot.core.transferLeadership(to);
    if (started) this.stats.transfers++;
    this.trace(() => `transfer ${leader}→${to}: ${started}`);
    this.settle(slot);
    return started;
  }

  campaign(id: NodeId): void {
    const slot = this.slotOf(id);
    this.current = `campaign on ${id}`;
    slot.core.campaign();
    this.settle(slot);
  }

  // ---------------------------------------------------------------- tracing

  private trace(line: () => string): void {
    if (this.traceLines === null) return;
    this.traceLines.push(`t${this.tick}.${this.now % unitsPerTick} ${line()}`);
    if (this.traceLines.length > simLimits.traceLinesMax) this.traceLines.shift();
  }
}

function cloneMessage(message: Message): Message {
  switch (message.type) {
    case 'append':
      return { ...message, entries: message.entries.map(cloneEntry) };
    case 'snapshot': {
      const { index, term, conf } = message.meta;
      return {
        ...message,
        meta: { index, term, conf: { voters: [...conf.voters], learners: [...conf.learners] } },
        data: message.data.slice(),
      };
    }
    default:
      return { ...message };
  }
}

function cloneEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, type: entry.type, data: entry.data.slice() };
}

/** Received messages are read-only: a core that writes into one throws at once. */
function freezeMessage(message: Message): Message {
  if (message.type === 'append') {
    for (const entry of message.entries) Object.freeze(entry);
    Object.freeze(message.entries);
  } else if (message.type === 'snapshot') {
    Object.freeze(message.meta.conf.voters);
    Object.freeze(message.meta.conf.learners);
    Object.freeze(message.meta.conf);
    Object.freeze(message.meta);
  }
  return Object.freeze(message);
}

export function describeMessage(m: Message): string {
  const head = `${m.type} ${m.from}→${m.to} t${m.term}`;
  switch (m.type) {
    case 'append':
      return `${head} prev=${m.prevIndex}/${m.prevTerm} n=${m.entries.length} commit=${m.commit}`;
    case 'appendResp':
      return `${head} ${m.reject ? `reject ${m.index} hint=${m.hintIndex}/${m.hintTerm}` : `ok ${m.index}`}`;
    case 'preVote':
    case 'vote':
      return `${head} last=${m.lastLogIndex}/${m.lastLogTerm}${m.transfer ? ' transfer' : ''}`;
    case 'preVoteResp':
    case 'voteResp':
      return `${head} ${m.reject ? 'reject' : 'grant'}`;
    case 'heartbeat':
      return `${head} commit=${m.commit} round=${m.readRound}`;
    case 'heartbeatResp':
      return `${head} round=${m.readRound}`;
    case 'snapshot':
      return `${head} snap=${m.meta.index}/${m.meta.term} off=${m.offset}/${m.totalBytes}`;
    case 'snapshotResp':
      return `${head} snap=${m.snapshotIndex} off=${m.offset}${m.reject ? ' reject' : ''}${m.done ? ' done' : ''}`;
    case 'readIndex':
    case 'readIndexResp':
    case 'timeoutNow':
      return head;
  }
}

function describeReady(r: Ready): string {
  const parts: string[] = [];
  if (r.softState) parts.push(`${r.softState.role} t${r.softState.term} leader=${r.softState.leader}`);
  if (r.hardState) parts.push(`hs t${r.hardState.term} v=${r.hardState.vote} c=${r.hardState.commit}`);
  if (r.snapshot) parts.push(`snap ${r.snapshot.meta.index}/${r.snapshot.meta.term}`);
  if (r.entries.length)
    parts.push(`entries ${r.entries[0]!.index}..${r.entries[r.entries.length - 1]!.index}`);
  if (r.committedEntries.length)
    parts.push(
      `apply ${r.committedEntries[0]!.index}..${r.committedEntries[r.committedEntries.length - 1]!.index}`,
    );
  if (r.messagesEarly.length) parts.push(`early ${r.messagesEarly.length}`);
  if (r.messages.length) parts.push(`msgs ${r.messages.length}`);
  return parts.join(', ');
}
