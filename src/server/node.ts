// The node: one loop that drives the Raft core (tick timer, Ready handling), persists through
// LevelStorage, talks to peers through PeerTransport, and applies committed entries to the lock table.
//
// Ready contract (src/raft/types.ts), followed to the letter: messagesEarly at once; snapshot + entries +
// hard state in one storage.persist (one fsync, group-committed with whatever else is queued); then the
// messages; then restore/apply; then advance(). One Ready at a time; while it is on disk the core keeps
// being ticked and stepped, and client commands wait in the node, so the next Ready carries them all
// (group commit). Each turn first takes the Ready that only commits and applies — a commit-only hard state
// needs no fsync (storage's MustSync rule), so answers go out at once — and only then proposes the waiting
// commands, whose entries get the next fsync.
//
// Proposals: client commands submitted in one event-loop turn become one entry `{timeMs, commands}`
// stamped with the leader's clock. Commands without a natural key (openSession, the leader's liveness
// commands) wait for their entry's index to apply: with the same term they get their result; with another
// term the entry was overwritten and they get NOT_LEADER (safe to retry: it never applied).
//
// Client commands with a key — (session, requestNo) for acquire/release, and apart from those for cancel
// (it names the acquire it withdraws), (session, epoch) for
// reconnect, (session) for closeSession — work on every node alike (DESIGN.md "Sessions across a
// cluster"): the node keeps them in `pending`, hands them to the leader (proposes them itself when it is
// the leader, forwards them in one batched app message per turn otherwise), and answers them when the
// first entry holding that key applies *here* — the node that holds the client's connection learns the
// result and the notices from its own apply, after commit (S9), and no reply has to travel back. A leader
// change, a refusal or a lost forward only sends the command again, to whoever leads now: the lock
// table's dedupe makes the retry apply once (C2). A forwarded openSession has no key: the leader answers
// it with the index it applied at, and the follower welcomes the client once it has applied that far.
//
// Liveness (DESIGN.md): a node that is not the leader sends the leader, every tick, one report of the
// session connections its gateway holds — once the leader takes them, only the changes since its last
// report (liveness.ts); the leader counts every connection on that list as seen, confirms its
// leadership with a ReadIndex round, then acks. A keepalive is confirmed to its client once a report
// built after it arrived is acked (the leader's own gateway confirms by a ReadIndex round instead).

import { randomInt } from 'node:crypto';
import { AssertionError, assert } from '../assert.ts';
import {
  type ErrorCode,
  errorFromCode,
  InternalError,
  LimitExceededError,
  NotLeaderError,
  OutcomeUnknownError,
  type RaftlockError,
  SessionNotFoundError,
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
  decodeConfChange,
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
import type { AppMessage } from '../transport/validate-message.ts';
import { nodeClock } from './clock.ts';
import { type DiskWrites, diskWritesDefault } from './config.ts';
import { serverLimits } from './limits.ts';
import { HeldReporter, LivenessClock, SessionDirectory } from './liveness.ts';
import type { Logger } from './log.ts';
import { MemberDirectory, Membership } from './members.ts';
import {
  decodePeerBody,
  encodePeerBody,
  type LivenessAckBody,
  type LivenessReportBody,
  type PeerBody,
} from './peer-messages.ts';

export interface NodeTiming {
  /** One Raft tick. */
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** C6: a connection silent this long is lost. */
  readonly connectionTimeoutMs: number;
  /** Take a snapshot after this many entries applied since the last one (C4). */
  readonly snapshotEveryEntries: number;
  /**
   * …or after this many bytes of entries applied since the last one: under load entries carry up to
   * `commandsPerBatchMax` commands each, and the core keeps the log since the last snapshot in memory.
   */
  readonly snapshotEveryBytes: number;
  /** Entries kept behind a snapshot so followers slightly behind need no snapshot transfer. */
  readonly snapshotKeepEntries: number;
}

export const nodeTimingDefaults: NodeTiming = {
  tickMs: 100,
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  connectionTimeoutMs: 2_000,
  snapshotEveryEntries: 10_000,
  snapshotEveryBytes: 32 * 1024 * 1024,
  snapshotKeepEntries: 1_000,
};

/** What the gateway hears from the node, synchronously, as entries apply. */
export interface NodeListener {
  /** An entry applied; `effects` are the lock table's grants, releases and notices, in order. */
  onApplied(index: number, entry: LockEntry, results: readonly Result[], effects: readonly Effect[]): void;
  /** Every answer to the commands of entry `index` has been given: after `onApplied`, before the next entry. */
  onAnswered(index: number): void;
  onRoleChanged(soft: SoftState): void;
  /** The table was replaced by a snapshot from the leader. */
  onTableReplaced(): void;
}

/** Metrics hear what the gateway hears, and how long each Ready took to become durable. */
export interface NodeObserver extends Omit<NodeListener, 'onAnswered'> {
  onPersisted(seconds: number): void;
}

/** What the node asks the gateway for its liveness reports. */
export interface HeldConnections {
  /** Whether the gateway holds the session's connection with `epoch` open. */
  holds(id: number, epoch: number): boolean;
  /** (session, epoch) of every open session connection on the gateway. */
  list(): [number, number][];
}

/**
 * Told the outcome of one submitted command, synchronously while the entry applies, so answers and the
 * notices of later entries reach a client in log order.
 */
export type Outcome =
  | { readonly ok: true; readonly result: Result; readonly index?: number }
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

/** A client command this node holds until it applies here (see the header). */
interface Pending {
  /** `commandKey`, or '' for a forwarded openSession. */
  readonly key: string;
  readonly command: Command;
  readonly dones: OutcomeHandler[];
  /** The leader it was last handed to; null while it waits to be (re)sent. */
  sentTo: NodeId | null;
  sentAtMs: number;
  /** Its last forward's id (0 when proposed here or not yet sent): refusals and replies name it. */
  forwardId: number;
  readonly createdAtMs: number;
  /** openSession: where the leader applied it, once told; -1 before. */
  openedIndex: number;
  openedSession: number;
}

interface KeepaliveWaiter {
  /** The first liveness report built after the keepalive arrived. */
  readonly coverNo: number;
  readonly atMs: number;
  readonly resolve: (confirmed: boolean) => void;
}

/** The key under which a retried command is the same request (C2); null for commands without one. */
export function commandKey(command: Command): string | null {
  switch (command.type) {
    case 'acquire':
    case 'release':
      return `q${command.session}:${command.requestNo}`;
    case 'cancel':
      // Not the key of the acquire it withdraws: sent while that acquire is still pending here, a cancel
      // under the same key passed for its retry — never proposed, answered `waiting`, the wait left queued.
      return `x${command.session}:${command.requestNo}`;
    case 'reconnect':
      return `r${command.session}:${command.epoch}`;
    case 'closeSession':
      return `c${command.session}`;
    default:
      return null;
  }
}

function shiftDeadline(item: Queued, byMs: number): Queued {
  const command = item.command;
  if (command.type !== 'acquire' || command.deadlineMs === undefined) return item;
  return { command: { ...command, deadlineMs: command.deadlineMs + byMs }, done: item.done };
}

/** Refusals after which a command may go to the (next) leader again: it did not, or may not, apply. */
function isTransient(code: ErrorCode): boolean {
  return (
    code === 'NOT_LEADER' || code === 'TRANSFERRING' || code === 'OUTCOME_UNKNOWN' || code === 'UNAVAILABLE'
  );
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
  /** Where synced writes run (see writeInline); default `inline`. */
  readonly diskWrites?: DiskWrites | undefined;
  readonly log: Logger;
  /** A broken invariant or a failed disk write: the process must stop and recover from disk. */
  readonly onFatal: (error: unknown) => void;
  /** Members' addresses (C5, src/server/members.ts); default: an empty one that is not saved. */
  readonly directory?: MemberDirectory | undefined;
  /** This node was removed from the cluster (C5): the server stops it. */
  readonly onRemoved?: (() => void) | undefined;
}

export class RaftlockNode {
  readonly id: NodeId;
  readonly timing: NodeTiming;
  readonly sessions = new SessionDirectory();
  /** Membership (C5): addresses, admin requests, learner promotion — src/server/members.ts. */
  readonly membership: Membership;
  private readonly core: RaftNode;
  private readonly storage: LevelStorage;
  private readonly diskWrites: DiskWrites;
  /** Synced writes go to the thread pool until then, after a slow one (see writeInline). */
  private inlineResumeAtMs = 0;
  private readonly transport: PeerTransport;
  private readonly log: Logger;
  private readonly onFatal: (error: unknown) => void;
  private readonly liveness: LivenessClock;
  private table: LockTable;
  private listener: NodeListener | null = null;
  /** Metrics, the dashboard's event feed: each hears what the listener hears. */
  private readonly observers: NodeObserver[] = [];

  private role: SoftState = { role: 'follower', leader: null, term: 0 };
  private persisting = false;
  private turnScheduled = false;
  private ticker: NodeJS.Timeout | null = null;
  private stopped = false;
  private failed = false;
  private idleWaiters: (() => void)[] = [];
  private lastSnapshotIndex: number;
  private bytesSinceSnapshot = 0;

  private queued: Queued[] = [];
  /** Since when every queued command has been deferrable (see `flushProposals`); null when not deferring. */
  private deferringSinceMs: number | null = null;
  private deferTimer: NodeJS.Timeout | null = null;
  private readonly proposed = new Map<number, Proposed>();
  private commandsPending = 0;

  private readNext: ReadBatch | null = null;
  private readonly readsInFlight = new Map<string, ReadBatch>();
  private readonly readsConfirmed: ReadBatch[] = [];
  private readsPending = 0;
  private readCounter = 0;
  private held: HeldConnections = { holds: () => false, list: () => [] };
  /** The last log position the table reflects (entries of every type; a restored snapshot's). */
  private appliedHere: { index: number; term: number };
  /** Leader: an entry applied in this Ready may have another node waiting for it (noteWaiters). */
  private commitWanted = false;

  private readonly pending = new Map<string, Pending>();
  private readonly openings = new Set<Pending>();
  private readonly byForwardId = new Map<number, Pending>();
  private nextForwardId = 1;
  private forwardOut = new Map<NodeId, Pending[]>();
  private refusalsOut = new Map<NodeId, { id: number; code: ErrorCode }[]>();

  private reportNo = 0;
  private readonly reportLeaders = new Map<number, NodeId>();
  private lostOut: [number, number][] = [];
  /** This node's held connections as the leader has them; each run of the node is its own stream. */
  private readonly reporter = new HeldReporter(randomInt(1, 2 ** 31));
  private keepaliveWaiters: KeepaliveWaiter[] = [];

  constructor(options: RaftlockNodeOptions) {
    this.id = options.id;
    this.timing = options.timing;
    this.storage = options.storage;
    this.diskWrites = options.diskWrites ?? diskWritesDefault;
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
    this.appliedHere = { index: state.snapshot.meta.index, term: state.snapshot.meta.term };
    const random = createPrng(randomInt(0, 2 ** 31));
    this.core = new RaftNode(
      defaultRaftConfig(this.id, random, {
        electionTimeoutTicks: this.timing.electionTimeoutTicks,
        heartbeatIntervalTicks: this.timing.heartbeatIntervalTicks,
        // A commit goes to the followers at once only when one may wait for it (commitWanted); otherwise
        // with the next append or heartbeat — no empty append and acknowledgement per follower per commit.
        deferCommitBroadcast: true,
      }),
      state,
    );
    const raftConfig = defaultRaftConfig(this.id, random);
    this.membership = new Membership({
      host: {
        id: this.id,
        status: () => this.core.status(),
        proposeConfChange: (change) => this.core.proposeConfChange(change),
        transferLeadership: (to) => this.core.transferLeadership(to),
        wake: () => this.scheduleTurn(),
        peerConnected: (id) => this.transport.peerConnected(id),
        setPeers: (peers) => {
          if (!this.stopped) this.transport.setPeers(peers);
        },
        setTableMember: (id, context) => this.table.setMember(id, context),
        onRemoved: () => options.onRemoved?.(),
        sendPeer: (to, message) => !this.stopped && this.sendPeer(to, message),
      },
      directory: options.directory ?? new MemberDirectory(null),
      log: this.log,
      learnerCatchUpLagMax: raftConfig.learnerCatchUpLagMax,
      electionTimeoutTicks: this.timing.electionTimeoutTicks,
    });
    this.membership.onSnapshotInstalled(this.table.members);
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
    this.transport.onAppMessages((messages) => {
      if (this.stopped) return;
      this.guard(() => {
        for (const message of messages) this.onAppMessage(message);
      });
      this.scheduleTurn();
    });
    this.transport.onPeerVerdict((peer, member) => {
      if (!this.stopped) this.membership.onPeerVerdict(peer, member);
    });
    this.transport.onPeerDisconnected((peer) => {
      if (this.stopped) return;
      this.core.reportUnreachable(peer);
      // A leader that died closed its sockets: campaign within a few ticks, not a whole election timeout.
      if (this.core.status().leader === peer) this.core.forgetLeader();
      this.scheduleTurn();
    });
  }

  setListener(listener: NodeListener, held: HeldConnections): void {
    this.listener = listener;
    this.held = held;
  }

  addObserver(observer: NodeObserver): void {
    this.observers.push(observer);
  }

  start(): void {
    assert(this.ticker === null, 'node: started twice');
    this.log.info(
      { event: 'node_started', snapshotIndex: this.lastSnapshotIndex, ...this.statusFields() },
      'node started',
    );
    this.ticker = setInterval(() => this.onTick(), this.timing.tickMs);
    this.membership.start();
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

  /**
   * The lock table, the index it has applied and that index's term (`GET /backup`). Not the core's
   * `applied`: committed entries are applied before their Ready is written, and the core's index moves at
   * `advance()`, one fsync later — the table may be ahead of it between turns.
   */
  appliedTable(): { readonly index: number; readonly term: number; readonly table: LockTable } {
    return { index: this.appliedHere.index, term: this.appliedHere.term, table: this.table };
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
    if (this.stopped) {
      done({ ok: false, error: new UnavailableError('node is shutting down') });
      return;
    }
    try {
      validateCommand(command);
    } catch (error) {
      done({ ok: false, error: error as RaftlockError });
      return;
    }
    const key = commandKey(command);
    if (key !== null) {
      // Keyed commands wait here for a leader, however long the election takes (up to forwardGiveUpMs):
      // refusing them would leave the client unsure whether an unlock will still apply (C2).
      this.submitPending(key, command, done);
      return;
    }
    if (this.role.role !== 'leader' && this.role.leader === null) {
      done({ ok: false, error: new NotLeaderError(`node ${this.id} knows no leader`) });
      return;
    }
    if (this.role.role !== 'leader' && command.type === 'openSession') {
      this.submitPending('', command, done);
      return;
    }
    const refusal = this.refuseProposal();
    if (refusal !== null) {
      done({ ok: false, error: refusal });
      return;
    }
    this.queued.push({ command, done });
    this.commandsPending++;
    this.scheduleTurn();
  }

  // ---------------------------------------------------------------- pending client commands (any role)

  private submitPending(key: string, command: Command, done: OutcomeHandler): void {
    const same = key === '' ? undefined : this.pending.get(key);
    if (same !== undefined) {
      // The client retried a request still in flight (after a reconnect): both wait for the one answer.
      same.dones.push(done);
      return;
    }
    if (this.pending.size + this.openings.size >= serverLimits.forwardCommandsPendingMax) {
      done({
        ok: false,
        error: new UnavailableError(
          `${serverLimits.forwardCommandsPendingMax} commands are waiting for the leader on node ${this.id}`,
        ),
      });
      return;
    }
    const nowMs = nodeClock.now();
    const entry: Pending = {
      key,
      command,
      dones: [done],
      sentTo: null,
      sentAtMs: nowMs,
      forwardId: 0,
      createdAtMs: nowMs,
      openedIndex: -1,
      openedSession: 0,
    };
    if (key === '') this.openings.add(entry);
    else this.pending.set(key, entry);
    this.dispatch(entry);
  }

  /** Hands a pending command to the current leader: proposes it here, or queues it for forwarding. */
  private dispatch(entry: Pending): void {
    if (entry.forwardId !== 0) this.byForwardId.delete(entry.forwardId);
    entry.forwardId = 0;
    entry.sentAtMs = nodeClock.now();
    if (this.role.role === 'leader') {
      assert(entry.key !== '', 'node: a forwarded openSession is never proposed by its own node');
      entry.sentTo = this.id;
      if (this.commandsPending >= serverLimits.proposalCommandsPendingMax) {
        this.finishPending(entry, {
          ok: false,
          error: new LimitExceededError(`${serverLimits.proposalCommandsPendingMax} commands are pending`),
        });
        return;
      }
      this.queued.push({ command: entry.command, done: (outcome) => this.onLocalOutcome(entry, outcome) });
      this.commandsPending++;
      this.scheduleTurn();
      return;
    }
    const leader = this.role.leader;
    entry.sentTo = leader;
    if (leader === null) return;
    entry.forwardId = this.nextForwardId++;
    this.byForwardId.set(entry.forwardId, entry);
    let batch = this.forwardOut.get(leader);
    if (batch === undefined) {
      batch = [];
      this.forwardOut.set(leader, batch);
    }
    batch.push(entry);
    this.scheduleTurn();
  }

  private isWaiting(entry: Pending): boolean {
    return entry.key === '' ? this.openings.has(entry) : this.pending.get(entry.key) === entry;
  }

  /** The leader's own proposal of a pending command failed or applied. */
  private onLocalOutcome(entry: Pending, outcome: Outcome): void {
    if (!this.isWaiting(entry)) return;
    if (!outcome.ok && isTransient(outcome.error.code) && !this.stopped) {
      entry.sentTo = null; // sent again by redispatch, to whoever leads next
      return;
    }
    this.finishPending(entry, outcome);
  }

  private finishPending(entry: Pending, outcome: Outcome): void {
    if (!this.isWaiting(entry)) return;
    if (entry.key === '') this.openings.delete(entry);
    else this.pending.delete(entry.key);
    if (entry.forwardId !== 0) this.byForwardId.delete(entry.forwardId);
    entry.forwardId = 0;
    for (const done of entry.dones) done(outcome);
  }

  /**
   * Sends again what has not reached the current leader: unsent, sent to another node, or forwarded
   * `forwardRetryMs` ago without applying here (the forward or its entry may have been lost; the table
   * dedupes a second copy). Forwarded openSessions are not retried (a copy would open a second session):
   * they fail UNAVAILABLE when their leader changes or they time out, and the client connects again.
   */
  private redispatch(nowMs: number): void {
    if (this.pending.size === 0 && this.openings.size === 0) return;
    const leader = this.role.role === 'leader' ? this.id : this.role.leader;
    for (const entry of [...this.pending.values()]) {
      if (nowMs - entry.createdAtMs >= serverLimits.forwardGiveUpMs && entry.sentTo !== this.id) {
        // No leader took it in all that time: the caller hears the truth (it may or may not apply).
        this.finishPending(entry, {
          ok: false,
          error: new OutcomeUnknownError(
            `no leader applied the request within ${serverLimits.forwardGiveUpMs} ms`,
          ),
        });
        continue;
      }
      if (entry.sentTo === leader && leader !== null) {
        if (leader === this.id || nowMs - entry.sentAtMs < serverLimits.forwardRetryMs) continue;
      }
      this.dispatch(entry);
    }
    for (const entry of [...this.openings]) {
      if (entry.openedIndex >= 0) continue;
      const moved = (entry.sentTo !== leader && entry.sentTo !== null) || leader === this.id;
      if (!moved && nowMs - entry.createdAtMs < serverLimits.openSessionForwardTimeoutMs) {
        if (entry.sentTo === null && leader !== null && leader !== this.id) this.dispatch(entry);
        continue;
      }
      this.finishPending(entry, {
        ok: false,
        error: new UnavailableError('the leader changed or did not answer while the session was opening'),
      });
    }
  }

  /** After an entry applied here: answers pending commands whose key it holds (the first copy wins). */
  private settlePending(index: number, commands: readonly Command[], results: readonly Result[]): void {
    if (this.pending.size > 0) {
      for (let i = 0; i < commands.length; i++) {
        const key = commandKey(commands[i]!);
        if (key === null) continue;
        const entry = this.pending.get(key);
        if (entry !== undefined) this.finishPending(entry, { ok: true, result: results[i]!, index });
      }
    }
    this.settleOpenings();
  }

  /** Welcomes forwarded openSessions whose entry has applied here. */
  private settleOpenings(): void {
    if (this.openings.size === 0) return;
    const applied = this.table.appliedIndex;
    for (const entry of [...this.openings]) {
      if (entry.openedIndex < 0 || entry.openedIndex > applied) continue;
      const session = entry.openedSession;
      if (this.table.getSession(session) === null) {
        this.finishPending(entry, {
          ok: false,
          error: new SessionNotFoundError(`session ${session} ended before this node applied its opening`),
        });
      } else {
        this.finishPending(entry, {
          ok: true,
          result: { kind: 'opened', session },
          index: entry.openedIndex,
        });
      }
    }
  }

  private flushForwards(): void {
    if (this.forwardOut.size > 0) {
      const out = this.forwardOut;
      this.forwardOut = new Map();
      for (const [leader, entries] of out) {
        // Only what is still waiting on this very forward (a refusal or a redispatch may have moved it).
        const live = [...new Set(entries)].filter(
          (entry) => entry.sentTo === leader && entry.forwardId !== 0 && this.isWaiting(entry),
        );
        for (let start = 0; start < live.length; start += serverLimits.forwardBatchCommandsMax) {
          const batch = live.slice(start, start + serverLimits.forwardBatchCommandsMax);
          const items = batch.map((entry) => ({ id: entry.forwardId, command: entry.command }));
          if (!this.sendPeer(leader, { kind: 'forward', body: { items, sentAtMs: nodeClock.now() } })) {
            for (const entry of batch) entry.sentTo = null; // no link: try again next tick
          }
        }
      }
    }
    if (this.refusalsOut.size > 0) {
      const out = this.refusalsOut;
      this.refusalsOut = new Map();
      for (const [peer, items] of out) {
        for (let start = 0; start < items.length; start += serverLimits.forwardBatchCommandsMax) {
          this.sendPeer(peer, {
            kind: 'refused',
            body: { items: items.slice(start, start + serverLimits.forwardBatchCommandsMax) },
          });
        }
      }
    }
  }

  private sendPeer(to: NodeId, message: PeerBody): boolean {
    return this.transport.sendApp(to, message.kind, encodePeerBody(message));
  }

  private refuse(peer: NodeId, id: number, code: ErrorCode): void {
    let list = this.refusalsOut.get(peer);
    if (list === undefined) {
      list = [];
      this.refusalsOut.set(peer, list);
    }
    list.push({ id, code });
    this.scheduleTurn();
  }

  // ---------------------------------------------------------------- peer app messages

  private onAppMessage(message: AppMessage): void {
    const decoded = decodePeerBody(message.kind, message.body);
    if (!decoded.ok) {
      this.log.warn(
        { event: 'peer_app_invalid', peer: message.from, kind: message.kind.slice(0, 32) },
        decoded.reason,
      );
      return;
    }
    const from = message.from;
    const peerMessage = decoded.message;
    switch (peerMessage.kind) {
      case 'forward':
        this.onForward(from, peerMessage.body.items, peerMessage.body.sentAtMs);
        return;
      case 'refused':
        for (const { id, code } of peerMessage.body.items) {
          const entry = this.byForwardId.get(id);
          if (entry === undefined || entry.sentTo !== from) continue;
          if (isTransient(code) && entry.key !== '') entry.sentTo = null;
          else
            this.finishPending(entry, {
              ok: false,
              error: errorFromCode(code, `the leader refused: ${code}`),
            });
        }
        return;
      case 'opened': {
        const { id, session, index } = peerMessage.body;
        const entry = this.byForwardId.get(id);
        if (entry === undefined || entry.key !== '' || entry.sentTo !== from) return;
        entry.openedIndex = index;
        entry.openedSession = session;
        this.settleOpenings();
        return;
      }
      case 'liveness':
        this.onLivenessReport(from, peerMessage.body);
        return;
      case 'livenessAck':
        this.onLivenessAck(from, peerMessage.body);
        return;
      case 'admin':
        this.membership.onAdminRequest(from, peerMessage.body);
        return;
      case 'adminResult':
        this.membership.onAdminResult(from, peerMessage.body);
        return;
      default:
        peerMessage satisfies never;
    }
  }

  /** The leader's side of forwarding: propose each command; refusals travel back, results never do. */
  private onForward(
    from: NodeId,
    items: readonly { id: number; command: Command }[],
    sentAtMs: number,
  ): void {
    const nowMs = nodeClock.now();
    for (const item of items) {
      const id = item.id;
      let command = item.command;
      if (command.type === 'acquire' && command.deadlineMs !== undefined) {
        // The deadline is on the follower's clock: keep the time it had left, counted on ours (S14).
        command = { ...command, deadlineMs: nowMs + Math.max(0, command.deadlineMs - sentAtMs) };
      }
      if (this.role.role !== 'leader') {
        this.refuse(from, id, 'NOT_LEADER');
        continue;
      }
      // A request proves its client alive when it left the follower: refresh its clock.
      if (command.type !== 'openSession') this.liveness.touch(command.session, nowMs);
      const refusal = this.refuseProposal();
      if (refusal !== null) {
        this.refuse(from, id, refusal.code);
        continue;
      }
      const openSession = command.type === 'openSession';
      this.queued.push({
        command,
        done: (outcome) => {
          if (!outcome.ok) {
            this.refuse(from, id, outcome.error.code);
            return;
          }
          if (!openSession) return;
          if (outcome.result.kind !== 'opened' || outcome.index === undefined) {
            this.refuse(from, id, outcome.result.kind === 'error' ? outcome.result.code : 'INTERNAL');
            return;
          }
          this.sendPeer(from, {
            kind: 'opened',
            body: { id, session: outcome.result.session, index: outcome.index },
          });
        },
      });
      this.commandsPending++;
    }
    this.scheduleTurn();
  }

  // ---------------------------------------------------------------- liveness reports

  /**
   * Resolves true once this client keepalive counts as seen by the leader: on the leader, after a
   * ReadIndex round; elsewhere, once the leader acked a liveness report built after it arrived.
   */
  confirmKeepalive(): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    if (this.role.role === 'leader')
      return this.readBarrier().then(
        () => true,
        () => false,
      );
    if (this.keepaliveWaiters.length >= serverLimits.keepaliveWaitersMax) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.keepaliveWaiters.push({ coverNo: this.reportNo + 1, atMs: nodeClock.now(), resolve });
    });
  }

  private sendLivenessReport(nowMs: number): void {
    const waiters = this.keepaliveWaiters;
    if (this.role.role === 'leader') {
      // Became leader with keepalives waiting for a report: confirm them the leader's way.
      this.keepaliveWaiters = [];
      for (const waiter of waiters)
        this.readBarrier().then(
          () => waiter.resolve(true),
          () => waiter.resolve(false),
        );
      return;
    }
    let expired = 0;
    while (
      expired < waiters.length &&
      nowMs - waiters[expired]!.atMs >= serverLimits.keepaliveConfirmTimeoutMs
    ) {
      waiters[expired]!.resolve(false);
      expired++;
    }
    if (expired > 0) this.keepaliveWaiters = waiters.slice(expired);
    const leader = this.role.leader;
    if (leader === null) return;
    const held = this.held.list();
    if (
      !this.reporter.hasSomething(held.length) &&
      this.lostOut.length === 0 &&
      this.keepaliveWaiters.length === 0
    )
      return;
    const lost = this.lostOut.splice(0, serverLimits.livenessLostPerReportMax);
    const reportNo = ++this.reportNo;
    this.reportLeaders.set(reportNo, leader);
    this.reportLeaders.delete(reportNo - 64);
    // Only what changed since the last report, once the leader takes deltas (liveness.ts).
    const report = this.reporter.next(leader, reportNo, held);
    if (!this.sendPeer(leader, { kind: 'liveness', body: { reportNo, lost, ...report } }))
      this.reporter.notSent();
  }

  /**
   * The leader's side: update the follower's list of held connections (all of them count as seen now),
   * confirm leadership, then ack. A delta that does not build on our copy of the list is refused at once.
   */
  private onLivenessReport(from: NodeId, report: LivenessReportBody): void {
    if (this.role.role !== 'leader') return;
    const reportNo = report.reportNo;
    const applied = this.liveness.report(from, report, nodeClock.now());
    for (const [id, epoch] of report.lost) this.connectionClosed(id, epoch);
    if (!applied) {
      this.sendPeer(from, { kind: 'livenessAck', body: { reportNo, resync: true } });
      return;
    }
    // The ack must come from a leader still confirmed after the report arrived: a deposed leader's ack
    // would let a client count from a keepalive the real leader never saw (S10).
    this.readBarrier().then(
      () => this.sendPeer(from, { kind: 'livenessAck', body: { reportNo, deltas: true } }),
      () => undefined,
    );
  }

  private onLivenessAck(from: NodeId, ack: LivenessAckBody): void {
    const reportNo = ack.reportNo;
    if (this.role.role === 'leader' || this.role.leader !== from || this.reportLeaders.get(reportNo) !== from)
      return;
    if (ack.resync === true) {
      // The leader did not apply that report: it confirms no keepalive; the next report is a full list.
      this.reporter.resync(from, reportNo);
      return;
    }
    this.reporter.acked(from, ack.deltas === true);
    const waiters = this.keepaliveWaiters;
    let covered = 0;
    while (covered < waiters.length && waiters[covered]!.coverNo <= reportNo) {
      waiters[covered]!.resolve(true);
      covered++;
    }
    if (covered > 0) this.keepaliveWaiters = waiters.slice(covered);
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
    const nowMs = nodeClock.now();
    if (this.deferProposals(nowMs)) return;
    let queued = this.queued;
    this.queued = [];
    // The table's time never goes back, and a former leader's clock may have run ahead of ours: stamp the
    // entry no earlier than the table's time, and move deadlines (set on our clock) by as much, so a lock
    // timeout still counts from when it was asked (S14) instead of having passed already.
    const timeMs = Math.max(nowMs, this.table.nowMs);
    if (timeMs > nowMs) queued = queued.map((item) => shiftDeadline(item, timeMs - nowMs));
    for (let start = 0; start < queued.length; start += commandsPerBatchMax) {
      const batch = queued.slice(start, start + commandsPerBatchMax);
      this.proposeBatch(timeMs, batch);
    }
  }

  /**
   * Whether to hold this turn's proposals back: only while every queued command is `deferrable`, for at
   * most `waitProposalDeferMs`. Any other command flushes the whole queue, in arrival order, so no
   * command ever overtakes another (a session's cancel never precedes its own acquire).
   */
  private deferProposals(nowMs: number): boolean {
    if (this.role.role !== 'leader' || !this.queued.every((item) => this.deferrable(item.command, nowMs))) {
      this.stopDeferring();
      return false;
    }
    this.deferringSinceMs ??= nowMs;
    const leftMs = this.deferringSinceMs + serverLimits.waitProposalDeferMs - nowMs;
    if (leftMs <= 0) {
      this.stopDeferring();
      return false;
    }
    this.deferTimer ??= setTimeout(() => {
      this.deferTimer = null;
      if (this.stopped) return;
      this.deferringSinceMs = Number.NEGATIVE_INFINITY; // due: the next turn proposes
      this.scheduleTurn();
    }, Math.ceil(leftMs));
    return true;
  }

  private stopDeferring(): void {
    this.deferringSinceMs = null;
    if (this.deferTimer !== null) clearTimeout(this.deferTimer);
    this.deferTimer = null;
  }

  /**
   * A request to wait: an acquire of a lock another session holds now, without a near deadline. Nobody
   * hears of it before a grant, and the grant needs the holder's release, which is proposed at once.
   */
  private deferrable(command: Command, nowMs: number): boolean {
    if (command.type !== 'acquire') return false;
    if (
      command.deadlineMs !== undefined &&
      command.deadlineMs - nowMs < serverLimits.waitProposalDeferDeadlineMinMs
    )
      return false;
    const owner = this.table.ownerOf(command.name);
    return owner !== null && owner !== command.session;
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
    this.stopDeferring();
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
    this.liveness.touch(id, nodeClock.now());
  }

  /** The gateway's connection for (`id`, `epoch`) closed or went silent: report it at once. */
  connectionClosed(id: number, epoch: number): void {
    if (this.stopped) return;
    if (this.role.role !== 'leader') {
      // Goes to the leader in the next liveness report; past the bound, the leader's clock catches it.
      if (this.lostOut.length < serverLimits.livenessLostPerReportMax) this.lostOut.push([id, epoch]);
      return;
    }
    const record = this.sessions.get(id);
    if (record === undefined || record.epoch !== epoch || !record.connected) return;
    this.submitLiveness({ type: 'connectionLost', session: id, epoch });
  }

  private checkLiveness(): void {
    if (this.role.role !== 'leader') return;
    const commands = this.liveness.check(nodeClock.now(), this.sessions, (id, epoch) =>
      this.held.holds(id, epoch),
    );
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
    this.membership.tick();
    this.checkLiveness();
    const nowMs = nodeClock.now();
    this.redispatch(nowMs);
    this.sendLivenessReport(nowMs);
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
        this.flushForwards();
        // Proposals first, then one Ready: its committed entries are applied and answered before the new
        // entries' fsync (they are durable here already, see drive), and one append per follower carries
        // both the new entries and the new commit index. While a Ready is on disk the leader still proposes
        // and replicates at once (takeEarlyMessages): followers write the new entries while it writes the
        // last ones, and its own copy goes into the next Ready.
        this.flushProposals();
        this.flushReads();
        this.drive();
        if (this.persisting) {
          const early = this.core.takeEarlyMessages();
          if (early.length > 0) this.transport.send(early);
        }
        this.transport.flushQueued();
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
      const nothingToWrite =
        ready.snapshot === null && ready.entries.length === 0 && ready.hardState === null;
      // Only the commit index moved and the disk is idle: recorded, nothing to wait for (step 2 done).
      if (nothingToWrite || this.storage.persistWithoutWaiting(ready)) {
        this.applyAndTell(ready);
        this.finishReady(ready);
        continue;
      }
      // Committed entries are durable here already (the core hands out only entries at or below what
      // earlier Readys made durable), so they never wait for this Ready's write. Written on this thread
      // (writeInline), it is durable on return and the acknowledgements leave before the apply; written in
      // the pool, it starts first and the entries are applied and answered while it is on disk. Either way a
      // follower's ack never waits for the last round's commands to be applied.
      const persistStartMs = performance.now();
      if (this.writeInline()) {
        // The appends leave before this thread blocks on the disk.
        if (ready.messagesEarly.length > 0) this.transport.flushQueued();
        const written = this.storage.persistInline(ready);
        if (written === null) {
          // Durable on return: the acknowledgements leave before the committed entries are applied.
          this.wroteInline(persistStartMs);
          if (ready.messages.length > 0 && !this.stopped) {
            this.transport.send(ready.messages);
            this.transport.flushQueued();
          }
          this.applyAndTell(ready);
          this.finishReady(ready, false);
          continue;
        }
        this.afterWrite(ready, written, persistStartMs);
        return;
      }
      this.afterWrite(ready, this.storage.persist(ready), persistStartMs);
      return;
    }
    this.notifyIdle();
  }

  /**
   * Whether this Ready's write runs on this thread (`LevelStorage.persistInline`). A synchronous O_DSYNC
   * write saves the hand-off to libuv's pool and back — two thread wake-ups per write, a sizeable share of
   * a commit on two cores (docs/benchmarks.md) — but the event loop waits while the disk works. So after
   * a write slower than `inlineWriteSlowMs` the writes go to the pool for `inlineWritePauseMs`: a stalling
   * disk then delays commits, not heartbeats, keepalives and answers to reads.
   */
  private writeInline(): boolean {
    return this.diskWrites === 'inline' && performance.now() >= this.inlineResumeAtMs;
  }

  /** A Ready's write that began at `startMs` is durable: observers hear how long it took, in ms. */
  private persisted(startMs: number): number {
    const tookMs = performance.now() - startMs;
    for (const observer of this.observers) observer.onPersisted(tookMs / 1000);
    return tookMs;
  }

  private wroteInline(startMs: number): void {
    const tookMs = this.persisted(startMs);
    if (tookMs <= serverLimits.inlineWriteSlowMs) return;
    this.inlineResumeAtMs = performance.now() + serverLimits.inlineWritePauseMs;
    this.log.warn(
      { event: 'disk_write_slow', ms: Math.round(tookMs), poolForMs: serverLimits.inlineWritePauseMs },
      'a synced write blocked the event loop; writes go to the thread pool for a while',
    );
  }

  /** The committed entries are applied while `written` is on disk; the rest of the Ready waits for it. */
  private afterWrite(ready: Ready, written: Promise<void>, persistStartMs: number): void {
    this.persisting = true;
    this.applyAndTell(ready);
    written.then(
      () =>
        this.guard(() => {
          this.persisting = false;
          this.persisted(persistStartMs);
          this.finishReady(ready);
          this.transport.flushQueued();
          this.notifyIdle();
          this.scheduleTurn();
        }),
      (error: unknown) => this.fatal(error),
    );
  }

  /** Applies a Ready's committed entries (none with a snapshot: they follow the restore); see noteWaiters. */
  private applyAndTell(ready: Ready): void {
    if (ready.snapshot === null) this.applyCommitted(ready);
    if (this.commitWanted) {
      // Another node waits for what just committed (see noteWaiters): tell the followers now.
      this.commitWanted = false;
      this.core.broadcastCommit();
      const early = this.core.takeEarlyMessages();
      if (early.length > 0) this.transport.send(early);
    }
  }

  /**
   * Leader: whether another node may wait for this entry — its gateway answers a forwarded command, or
   * sends a notice, only once it applies the entry itself. Then the commit is broadcast at once (see drive);
   * when every session involved is connected here, it travels with the next append or heartbeat instead.
   */
  private noteWaiters(entry: LockEntry, effects: readonly Effect[]): void {
    for (const command of entry.commands) {
      if (command.type === 'openSession' || !this.sessionHeldHere(command.session)) {
        this.commitWanted = true;
        return;
      }
    }
    for (const effect of effects) {
      if (!this.sessionHeldHere(effect.session)) {
        this.commitWanted = true;
        return;
      }
    }
  }

  private sessionHeldHere(session: number): boolean {
    const record = this.sessions.get(session);
    return record !== undefined && this.held.holds(session, record.epoch);
  }

  private applyCommitted(ready: Ready): void {
    for (const entry of ready.committedEntries) this.applyEntry(entry);
  }

  /** Steps 3–5 of the Ready contract, once step 2 is durable (committed entries were applied before it). */
  private finishReady(ready: Ready, sendMessages = true): void {
    if (sendMessages && ready.messages.length > 0 && !this.stopped) this.transport.send(ready.messages);
    if (ready.snapshot !== null) {
      assert(ready.committedEntries.length === 0, 'node: a Ready with a snapshot also has entries to apply');
      this.installSnapshot(ready.snapshot);
    }
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
    if (soft.role === 'leader' && was.role !== 'leader') this.liveness.becameLeader(nodeClock.now());
    if (soft.role !== 'leader' && was.role === 'leader') {
      this.liveness.steppedDown();
      this.failProposals(
        new NotLeaderError(`node ${this.id} lost leadership`),
        new OutcomeUnknownError(`node ${this.id} lost leadership; the request may or may not apply`),
      );
      this.failReads(new NotLeaderError(`node ${this.id} lost leadership`));
    }
    this.membership.onRoleChanged(soft.role === 'leader', soft.leader);
    // Whatever waited for a leader, or went to the previous one, goes to this one.
    if (was.role !== soft.role || was.leader !== soft.leader) this.redispatch(nodeClock.now());
    this.listener?.onRoleChanged(soft);
    for (const observer of this.observers) observer.onRoleChanged(soft);
  }

  private installSnapshot(snapshot: Snapshot): void {
    this.appliedHere = { index: snapshot.meta.index, term: snapshot.meta.term };
    // A joining node's first snapshot may be the cluster's bootstrap one (index 0), with no table in it.
    this.table = snapshot.data.length === 0 ? new LockTable() : LockTable.restore(snapshot.data);
    this.membership.onSnapshotInstalled(this.table.members);
    this.sessions.rebuild(this.table);
    this.lastSnapshotIndex = snapshot.meta.index;
    this.bytesSinceSnapshot = 0;
    for (const [index, proposal] of this.proposed) {
      if (index > snapshot.meta.index) continue;
      this.proposed.delete(index);
      this.commandsPending -= proposal.callers.length;
      const error = new OutcomeUnknownError('a snapshot replaced the log under the request');
      for (const caller of proposal.callers) caller.done({ ok: false, error });
    }
    this.log.info({ event: 'snapshot_installed', index: snapshot.meta.index }, 'snapshot installed');
    this.listener?.onTableReplaced();
    for (const observer of this.observers) observer.onTableReplaced();
    // Keyed commands inside the snapshot were never applied here: their forward retry gets the table's
    // deduped answer. Openings inside it are checked against the new table.
    this.settleOpenings();
  }

  private applyEntry(entry: Entry): void {
    this.applyAndAnswer(entry);
    if (entry.type === EntryType.normal) this.listener?.onAnswered(entry.index);
  }

  private applyAndAnswer(entry: Entry): void {
    this.appliedHere = { index: entry.index, term: entry.term };
    this.bytesSinceSnapshot += entry.data.byteLength;
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
      const nowMs = nodeClock.now();
      for (let i = 0; i < decoded.commands.length; i++) {
        const command = decoded.commands[i]!;
        const result = output.results[i]!;
        this.sessions.onCommand(command, result, decoded.timeMs);
        // A connection starts its clock when it opens: on a follower's gateway it is not held here, and
        // the leader must not count its silence from before it existed.
        if (command.type === 'openSession' && result.kind === 'opened')
          this.liveness.touch(result.session, nowMs);
        if (command.type === 'reconnect' && result.kind === 'done')
          this.liveness.touch(command.session, nowMs);
      }
      for (const effect of output.effects) {
        this.sessions.onEffect(effect);
        if (effect.kind === 'sessionEnded') this.liveness.forget(effect.session);
      }
      if (this.role.role === 'leader' && !this.commitWanted) this.noteWaiters(decoded, output.effects);
      this.listener?.onApplied(entry.index, decoded, output.results, output.effects);
      for (const observer of this.observers)
        observer.onApplied(entry.index, decoded, output.results, output.effects);
      this.settlePending(entry.index, decoded.commands, output.results);
    } else if (this.role.role === 'leader') {
      this.commitWanted = true; // a no-op or a membership change: rare, and followers act on both
    }
    if (entry.type === EntryType.confChange) {
      this.membership.onConfChangeApplied(entry.index, entry.term, decodeConfChange(entry.data));
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
    for (let i = 0; i < results.length; i++) {
      proposal.callers[i]!.done({ ok: true, result: results[i]!, index: entry.index });
    }
  }

  private maybeSnapshot(applied: number): void {
    if (
      applied - this.lastSnapshotIndex < this.timing.snapshotEveryEntries &&
      this.bytesSinceSnapshot < this.timing.snapshotEveryBytes
    )
      return;
    if (applied <= this.lastSnapshotIndex) return;
    this.bytesSinceSnapshot = 0;
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
    const deadline = nodeClock.now() + timeoutMs;
    while (nodeClock.now() < deadline) {
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
    for (const entry of [...this.pending.values(), ...this.openings])
      this.finishPending(entry, { ok: false, error });
    for (const waiter of this.keepaliveWaiters) waiter.resolve(false);
    this.keepaliveWaiters = [];
    this.membership.stop(error);
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
