// The node: one loop that drives the Raft core (tick timer, Ready handling), persists through
// LevelStorage, talks to peers through PeerTransport, and applies committed entries to the lock table.
//
// Ready contract (src/raft/types.ts), followed to the letter: messagesEarly at once; snapshot + entries +
// hard state in one storage.persist (one fsync, group-committed with whatever else is queued); then the
// messages; then restore/apply; then advance(). One Ready at a time; while it is on disk the core keeps
// being ticked and stepped and proposals pile up in it, so the next Ready carries them all (group commit).
//
// Proposals: client commands submitted in one event-loop turn become one entry `{timeMs, commands}`
// stamped with the leader's clock. Each caller waits for its entry's index to apply: with the same term
// it gets its command's result; with another term the entry was overwritten and it gets NOT_LEADER
// (safe to retry: it never applied).

import { randomInt } from 'node:crypto';
import { AssertionError, assert } from '../assert.ts';
import {
  errorFromCode,
  InternalError,
  LimitExceededError,
  NotLeaderError,
  OutcomeUnknownError,
  type RaftlockError,
  TransferringError,
  UnavailableError,
} from '../errors.ts';
import { commandsPerBatchMax } from '../limits.ts';
import {
  type Command,
  decodeEntry,
  type Effect,
  encodeEntry,
  type Entry as LockEntry,
  LockTable,
  type Result,
  validateCommand,
} from '../locks/index.ts';
import {
  createPrng,
  defaultRaftConfig,
  type Entry,
  EntryType,
  type NodeId,
  type PersistentState,
  RaftNode,
  type Ready,
  type Snapshot,
  type SoftState,
} from '../raft/index.ts';
import type { LevelStorage } from '../storage/level-storage.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import { serverLimits } from './limits.ts';
import { LivenessClock, SessionDirectory } from './liveness.ts';
import type { Logger } from './log.ts';

export interface NodeTiming {
  /** One Raft tick. */
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** C6: a connection silent this long is lost. */
  readonly connectionTimeoutMs: number;
  /** Take a snapshot after this many entries applied since the last one (C4). */
  readonly snapshotEveryEntries: number;
  /** Entries kept behind a snapshot so followers slightly behind need no snapshot transfer. */
  readonly snapshotKeepEntries: number;
}

export const nodeTimingDefaults: NodeTiming = {
  tickMs: 100,
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  connectionTimeoutMs: 2_000,
  snapshotEveryEntries: 10_000,
  snapshotKeepEntries: 1_000,
};

/** What the gateway hears from the node, synchronously, as entries apply. */
export interface NodeListener {
  /** An entry applied; `effects` are the lock table's grants, releases and notices, in order. */
  onApplied(index: number, entry: LockEntry, results: readonly Result[], effects: readonly Effect[]): void;
  onRoleChanged(soft: SoftState): void;
  /** The table was replaced by a snapshot from the leader. */
  onTableReplaced(): void;
}

/**
 * Told the outcome of one submitted command, synchronously while the entry applies, so answers and the
 * notices of later entries reach a client in log order.
 */
export type Outcome =
  | { readonly ok: true; readonly result: Result }
  | { readonly ok: false; readonly error: RaftlockError };
export type OutcomeHandler = (outcome: Outcome) => void;

interface Queued {
  readonly command: Command;
  readonly done: OutcomeHandler;
}

interface Proposed {
  readonly term: number;
  readonly callers: readonly Queued[];
}

interface ReadBatch {
  readonly waiters: { resolve: () => void; reject: (error: RaftlockError) => void }[];
  /** The index the batch may be served at, once confirmed; -1 before. */
  index: number;
}

export interface RaftlockNodeOptions {
  readonly id: NodeId;
  readonly storage: LevelStorage;
  readonly transport: PeerTransport;
  readonly state: PersistentState;
  readonly timing: NodeTiming;
  readonly log: Logger;
  /** A broken invariant or a failed disk write: the process must stop and recover from disk. */
  readonly onFatal: (error: unknown) => void;
}

export class RaftlockNode {
  readonly id: NodeId;
  readonly timing: NodeTiming;
  readonly sessions = new SessionDirectory();
  private readonly core: RaftNode;
  private readonly storage: LevelStorage;
  private readonly transport: PeerTransport;
  private readonly log: Logger;
  private readonly onFatal: (error: unknown) => void;
  private readonly liveness: LivenessClock;
  private table: LockTable;
  private listener: NodeListener | null = null;

  private role: SoftState = { role: 'follower', leader: null, term: 0 };
  private persisting = false;
  private turnScheduled = false;
  private ticker: NodeJS.Timeout | null = null;
  private stopped = false;
  private failed = false;
  private idleWaiters: (() => void)[] = [];
  private lastSnapshotIndex: number;

  private queued: Queued[] = [];
  private readonly proposed = new Map<number, Proposed>();
  private commandsPending = 0;

  private readNext: ReadBatch | null = null;
  private readonly readsInFlight = new Map<string, ReadBatch>();
  private readonly readsConfirmed: ReadBatch[] = [];
  private readsPending = 0;
  private readCounter = 0;
  private heldHere: (id: number, epoch: number) => boolean = () => false;

  constructor(options: RaftlockNodeOptions) {
    this.id = options.id;
    this.timing = options.timing;
    this.storage = options.storage;
    this.transport = options.transport;
    this.log = options.log;
    this.onFatal = options.onFatal;
    const state = options.state;
    this.table = state.snapshot.data.length === 0 ? new LockTable() : LockTable.restore(state.snapshot.data);
    assert(
      this.table.appliedIndex <= state.snapshot.meta.index,
      `node: snapshot table applied ${this.table.appliedIndex} past its index ${state.snapshot.meta.index}`,
    );
    this.sessions.rebuild(this.table);
    this.lastSnapshotIndex = state.snapshot.meta.index;
    const random = createPrng(randomInt(0, 2 ** 31));
    this.core = new RaftNode(
      defaultRaftConfig(this.id, random, {
        electionTimeoutTicks: this.timing.electionTimeoutTicks,
        heartbeatIntervalTicks: this.timing.heartbeatIntervalTicks,
      }),
      state,
    );
    this.liveness = new LivenessClock({
      connectionTimeoutMs: this.timing.connectionTimeoutMs,
      retryMs: serverLimits.livenessRetryMs,
      proposalsPerCheckMax: serverLimits.livenessProposalsPerCheckMax,
    });
    this.transport.onMessages((messages) => {
      if (this.stopped) return;
      for (const message of messages) this.core.step(message);
      this.scheduleTurn();
    });
    this.transport.onPeerDisconnected((peer) => {
      if (this.stopped) return;
      this.core.reportUnreachable(peer);
      this.scheduleTurn();
    });
  }

  setListener(listener: NodeListener, heldHere: (id: number, epoch: number) => boolean): void {
    this.listener = listener;
    this.heldHere = heldHere;
  }

  start(): void {
    assert(this.ticker === null, 'node: started twice');
    this.log.info(
      { event: 'node_started', snapshotIndex: this.lastSnapshotIndex, ...this.statusFields() },
      'node started',
    );
    this.ticker = setInterval(() => this.onTick(), this.timing.tickMs);
    this.scheduleTurn();
  }

  // ---------------------------------------------------------------- inspection

  get lockTable(): LockTable {
    return this.table;
  }

  get softState(): SoftState {
    return this.role;
  }

  get isLeader(): boolean {
    return this.role.role === 'leader';
  }

  raftStatus() {
    return this.core.status();
  }

  private statusFields() {
    const status = this.core.status();
    return { role: status.role, term: status.term, commit: status.commit, applied: status.applied };
  }

  // ---------------------------------------------------------------- proposals

  /**
   * Replicates `command`; `done` hears its result once the entry applies here, or a typed error. `done`
   * may run synchronously (refusals) or during a later apply, never twice.
   */
  submit(command: Command, done: OutcomeHandler): void {
    const refusal = this.refuseProposal();
    if (refusal !== null) {
      done({ ok: false, error: refusal });
      return;
    }
    try {
      validateCommand(command);
    } catch (error) {
      done({ ok: false, error: error as RaftlockError });
      return;
    }
    this.queued.push({ command, done });
    this.commandsPending++;
    this.scheduleTurn();
  }

  private refuseProposal(): RaftlockError | null {
    if (this.stopped) return new UnavailableError('node is shutting down');
    if (this.role.role !== 'leader') return new NotLeaderError(`node ${this.id} is not the leader`);
    if (this.commandsPending >= serverLimits.proposalCommandsPendingMax) {
      return new LimitExceededError(
        `${serverLimits.proposalCommandsPendingMax} commands are pending on node ${this.id}`,
      );
    }
    return null;
  }

  private flushProposals(): void {
    if (this.queued.length === 0) return;
    const queued = this.queued;
    this.queued = [];
    const timeMs = Date.now();
    for (let start = 0; start < queued.length; start += commandsPerBatchMax) {
      const batch = queued.slice(start, start + commandsPerBatchMax);
      this.proposeBatch(timeMs, batch);
    }
  }

  private proposeBatch(timeMs: number, batch: readonly Queued[]): void {
    const fail = (error: RaftlockError) => {
      this.commandsPending -= batch.length;
      for (const caller of batch) caller.done({ ok: false, error });
    };
    if (this.role.role !== 'leader') {
      fail(new NotLeaderError(`node ${this.id} is not the leader`));
      return;
    }
    // Each command passed validateCommand and names are bounded, so the batch fits an entry (limits.ts).
    const data = encodeEntry({ timeMs, commands: batch.map((queued) => queued.command) });
    const result = this.core.propose(data);
    if (!result.ok) {
      switch (result.code) {
        case 'NOT_LEADER':
          fail(new NotLeaderError(`node ${this.id} is not the leader`));
          return;
        case 'TRANSFERRING':
          fail(new TransferringError('leadership is being transferred'));
          return;
        case 'PROPOSALS_FULL':
          fail(new LimitExceededError('too many uncommitted proposals'));
          return;
        default:
          fail(new InternalError(`unexpected proposal refusal ${result.code}`));
          return;
      }
    }
    assert(!this.proposed.has(result.index), `node: index ${result.index} proposed twice`);
    this.proposed.set(result.index, { term: result.term, callers: batch });
  }

  /** Fails every proposal still waiting: it may or may not apply later (the client retries, deduped). */
  private failProposals(queuedError: RaftlockError, proposedError: RaftlockError): void {
    const queued = this.queued;
    this.queued = [];
    for (const caller of queued) caller.done({ ok: false, error: queuedError });
    for (const proposal of this.proposed.values()) {
      for (const caller of proposal.callers) caller.done({ ok: false, error: proposedError });
    }
    this.proposed.clear();
    this.commandsPending = 0;
  }

  // ---------------------------------------------------------------- linearizable reads

  /**
   * Resolves once this node may serve a linearizable read (S15): leadership confirmed by a quorum
   * after the call, and the state applied up to the read index. Calls in one turn share one round.
   */
  readBarrier(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.stopped) {
        reject(new UnavailableError('node is shutting down'));
        return;
      }
      if (this.readsPending >= serverLimits.readsPendingMax) {
        reject(new LimitExceededError(`${serverLimits.readsPendingMax} reads are pending`));
        return;
      }
      if (this.readNext === null) this.readNext = { waiters: [], index: -1 };
      this.readNext.waiters.push({ resolve, reject });
      this.readsPending++;
      this.scheduleTurn();
    });
  }

  private flushReads(): void {
    const batch = this.readNext;
    if (batch === null) return;
    this.readNext = null;
    const context = `${this.id}:${++this.readCounter}`;
    this.readsInFlight.set(context, batch);
    this.core.readIndex(context);
  }

  private settleReads(ready: Ready): void {
    for (const state of ready.readStates) {
      const batch = this.readsInFlight.get(state.context);
      if (batch === undefined) continue;
      this.readsInFlight.delete(state.context);
      batch.index = state.index;
      this.readsConfirmed.push(batch);
    }
    for (const failure of ready.readFailures) {
      const batch = this.readsInFlight.get(failure.context);
      if (batch === undefined) continue;
      this.readsInFlight.delete(failure.context);
      this.readsPending -= batch.waiters.length;
      const error = errorFromCode(failure.code, `read could not be confirmed: ${failure.code}`);
      for (const waiter of batch.waiters) waiter.reject(error);
    }
  }

  private serveReads(applied: number): void {
    if (this.readsConfirmed.length === 0) return;
    const still: ReadBatch[] = [];
    for (const batch of this.readsConfirmed) {
      if (batch.index > applied) {
        still.push(batch);
        continue;
      }
      this.readsPending -= batch.waiters.length;
      for (const waiter of batch.waiters) waiter.resolve();
    }
    this.readsConfirmed.length = 0;
    this.readsConfirmed.push(...still);
  }

  private failReads(error: RaftlockError): void {
    const batches = [...this.readsInFlight.values(), ...this.readsConfirmed];
    if (this.readNext !== null) batches.push(this.readNext);
    this.readsInFlight.clear();
    this.readsConfirmed.length = 0;
    this.readNext = null;
    for (const batch of batches) for (const waiter of batch.waiters) waiter.reject(error);
    this.readsPending = 0;
  }

  // ---------------------------------------------------------------- liveness

  /** The gateway heard from a session's client. */
  touchSession(id: number): void {
    this.liveness.touch(id, Date.now());
  }

  /** The gateway's connection for (`id`, `epoch`) closed or went silent: report it at once. */
  connectionClosed(id: number, epoch: number): void {
    if (this.role.role !== 'leader' || this.stopped) return;
    const record = this.sessions.get(id);
    if (record === undefined || record.epoch !== epoch || !record.connected) return;
    this.submitLiveness({ type: 'connectionLost', session: id, epoch });
  }

  private checkLiveness(): void {
    if (this.role.role !== 'leader') return;
    const commands = this.liveness.check(Date.now(), this.sessions, this.heldHere);
    for (const command of commands) this.submitLiveness(command);
  }

  private submitLiveness(command: Command): void {
    assert(command.type === 'connectionLost' || command.type === 'expireSession', 'liveness command');
    const session = command.session;
    this.log.info(
      { event: command.type === 'connectionLost' ? 'connection_lost' : 'session_expiring', session },
      'liveness',
    );
    this.submit(command, (outcome) => {
      this.liveness.settled(session);
      if (!outcome.ok) {
        const { code, message } = outcome.error;
        this.log.debug({ event: 'liveness_proposal_failed', session, code }, message);
      }
    });
  }

  // ---------------------------------------------------------------- the loop

  private onTick(): void {
    if (this.stopped) return;
    this.core.tick();
    this.checkLiveness();
    this.scheduleTurn();
  }

  /** Everything that arrived in this event-loop turn becomes one proposal round and one Ready. */
  private scheduleTurn(): void {
    if (this.turnScheduled || this.stopped) return;
    this.turnScheduled = true;
    setImmediate(() => {
      this.turnScheduled = false;
      this.guard(() => {
        if (this.stopped) return;
        this.flushProposals();
        this.flushReads();
        this.drive();
      });
    });
  }

  private guard(work: () => void): void {
    try {
      work();
    } catch (error) {
      this.fatal(error);
    }
  }

  private drive(): void {
    while (!this.persisting && !this.stopped && this.core.hasReady()) {
      const ready = this.core.ready();
      if (ready.softState !== null) this.onSoftState(ready.softState);
      if (ready.messagesEarly.length > 0) this.transport.send(ready.messagesEarly);
      if (ready.snapshot === null && ready.entries.length === 0 && ready.hardState === null) {
        this.finishReady(ready);
        continue;
      }
      this.persisting = true;
      this.storage.persist(ready).then(
        () =>
          this.guard(() => {
            this.persisting = false;
            this.finishReady(ready);
            this.notifyIdle();
            this.scheduleTurn();
          }),
        (error: unknown) => this.fatal(error),
      );
      return;
    }
    this.notifyIdle();
  }

  /** Steps 3–5 of the Ready contract, once step 2 is durable. */
  private finishReady(ready: Ready): void {
    if (ready.messages.length > 0 && !this.stopped) this.transport.send(ready.messages);
    if (ready.snapshot !== null) this.installSnapshot(ready.snapshot);
    for (const entry of ready.committedEntries) this.applyEntry(entry);
    this.settleReads(ready);
    this.core.advance();
    const applied = this.core.status().applied;
    this.serveReads(applied);
    this.maybeSnapshot(applied);
  }

  private onSoftState(soft: SoftState): void {
    const was = this.role;
    this.role = soft;
    if (was.role !== soft.role || was.leader !== soft.leader) {
      this.log.info(
        { event: 'role_changed', role: soft.role, term: soft.term, leader: soft.leader },
        'role changed',
      );
    }
    if (soft.role === 'leader' && was.role !== 'leader') this.liveness.becameLeader(Date.now());
    if (soft.role !== 'leader' && was.role === 'leader') {
      this.liveness.steppedDown();
      this.failProposals(
        new NotLeaderError(`node ${this.id} lost leadership`),
        new OutcomeUnknownError(`node ${this.id} lost leadership; the request may or may not apply`),
      );
      this.failReads(new NotLeaderError(`node ${this.id} lost leadership`));
    }
    this.listener?.onRoleChanged(soft);
  }

  private installSnapshot(snapshot: Snapshot): void {
    this.table = LockTable.restore(snapshot.data);
    this.sessions.rebuild(this.table);
    this.lastSnapshotIndex = snapshot.meta.index;
    for (const [index, proposal] of this.proposed) {
      if (index > snapshot.meta.index) continue;
      this.proposed.delete(index);
      this.commandsPending -= proposal.callers.length;
      const error = new OutcomeUnknownError('a snapshot replaced the log under the request');
      for (const caller of proposal.callers) caller.done({ ok: false, error });
    }
    this.log.info({ event: 'snapshot_installed', index: snapshot.meta.index }, 'snapshot installed');
    this.listener?.onTableReplaced();
  }

  private applyEntry(entry: Entry): void {
    let results: readonly Result[] | null = null;
    if (entry.type === EntryType.normal) {
      let decoded: LockEntry;
      try {
        decoded = decodeEntry(entry.data);
      } catch (error) {
        // Only valid entries are ever proposed and storage checks every record: this is a broken invariant.
        throw new AssertionError(`committed entry ${entry.index} does not decode: ${String(error)}`);
      }
      const output = this.table.apply(entry.index, decoded);
      results = output.results;
      for (let i = 0; i < decoded.commands.length; i++) {
        this.sessions.onCommand(decoded.commands[i]!, output.results[i]!, decoded.timeMs);
      }
      for (const effect of output.effects) {
        this.sessions.onEffect(effect);
        if (effect.kind === 'sessionEnded') this.liveness.forget(effect.session);
      }
      this.listener?.onApplied(entry.index, decoded, output.results, output.effects);
    }
    const proposal = this.proposed.get(entry.index);
    if (proposal === undefined) return;
    this.proposed.delete(entry.index);
    this.commandsPending -= proposal.callers.length;
    if (proposal.term !== entry.term || results === null) {
      const error = new NotLeaderError('the request was overwritten by a new leader before it committed');
      for (const caller of proposal.callers) caller.done({ ok: false, error });
      return;
    }
    assert(
      results.length === proposal.callers.length,
      `node: entry ${entry.index} has ${results.length} results for ${proposal.callers.length} callers`,
    );
    for (let i = 0; i < results.length; i++) proposal.callers[i]!.done({ ok: true, result: results[i]! });
  }

  private maybeSnapshot(applied: number): void {
    if (applied - this.lastSnapshotIndex < this.timing.snapshotEveryEntries) return;
    const term = this.core.termAt(applied);
    assert(term !== undefined, `node: no term for applied index ${applied}`);
    const data = this.table.snapshot();
    const keep = this.timing.snapshotKeepEntries;
    this.core.createSnapshot(applied, data, keep);
    const snapshot: Snapshot = { meta: { index: applied, term, conf: this.core.status().conf }, data };
    this.lastSnapshotIndex = applied;
    const compactTo = Math.max(0, applied - keep);
    this.storage
      .saveSnapshot(snapshot)
      .then(
        () => this.storage.compact(compactTo),
        (error: unknown) => this.fatal(error),
      )
      .catch((error: unknown) => this.fatal(error));
    this.log.info({ event: 'snapshot_taken', index: applied, bytes: data.length }, 'snapshot taken');
  }

  // ---------------------------------------------------------------- shutdown

  private notifyIdle(): void {
    if (this.persisting) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
  }

  private idle(): Promise<void> {
    if (!this.persisting) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Hands leadership to the most caught-up voter, waiting at most `timeoutMs`. Returns whether this node
   * is no longer the leader.
   */
  async transferLeadership(timeoutMs: number): Promise<boolean> {
    if (this.role.role !== 'leader') return true;
    const status = this.core.status();
    let best: NodeId | null = null;
    let bestMatch = -1;
    for (const [peer, progress] of Object.entries(status.progress ?? {})) {
      if (peer === this.id || !status.conf.voters.includes(peer)) continue;
      if (!this.transport.peerConnected(peer)) continue;
      if (progress.match > bestMatch) {
        best = peer;
        bestMatch = progress.match;
      }
    }
    if (best === null || !this.core.transferLeadership(best)) return false;
    this.log.info({ event: 'leadership_transfer', to: best }, 'transferring leadership');
    this.scheduleTurn();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, this.timing.tickMs / 4));
      if (this.role.role !== 'leader') return true;
    }
    return false;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    const error = new UnavailableError('node is shutting down');
    this.failProposals(error, new OutcomeUnknownError('node shut down; the request may or may not apply'));
    this.failReads(error);
    await this.idle();
  }

  private fatal(error: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.stopped = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.log.fatal({ event: 'node_failed', err: error }, 'node failed; stopping');
    this.onFatal(error);
  }
}
