// The Raft core: a pure, deterministic state machine. Inputs are tick(), step(message), propose(data) and a
// few control calls; outputs pile up until the driver takes them with ready() and confirms with advance().
// No I/O, timers, clocks or ambient randomness: one seed and one input sequence give one behaviour.

import { assert, assertNever } from '../assert.ts';
import { confChangeContextValid, decodeConfChange, encodeConfChange } from './conf-change.ts';
import { RaftLog } from './log.ts';
import { Progress } from './progress.ts';
import {
  type AppendRequest,
  type AppendResponse,
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type HeartbeatResponse,
  type Message,
  type NodeId,
  type PersistentState,
  type ProposeResult,
  type RaftConfig,
  type ReadFailure,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SnapshotChunk,
  type SnapshotResponse,
  type SoftState,
  type VoteRequest,
} from './types.ts';

const emptyBytes = new Uint8Array(0);

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly leader: NodeId | null;
  readonly vote: NodeId | null;
  readonly commit: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly stableIndex: number;
  readonly snapshotIndex: number;
  readonly conf: ConfState;
  readonly leadTransferee: NodeId | null;
  readonly progress?: Readonly<Record<NodeId, { match: number; next: number; state: string }>>;
}

interface PendingRead {
  readonly context: string;
  /** Null for a read registered on this node; else the follower that forwarded it. */
  readonly from: NodeId | null;
  readonly index: number;
  readonly round: number;
}

/** What a Ready handed out, so advance() can confirm exactly that even if the core moved on meanwhile. */
interface Handed {
  readonly lastEntryIndex: number;
  readonly lastEntryTerm: number;
  readonly appliedTo: number;
  readonly snapshotIndex: number;
  /** Membership changes among the handed committed entries, applied at advance(). */
  readonly confChanges: readonly Entry[];
  /** `restoreCount` when handed: a snapshot installed meanwhile supersedes the handed entries. */
  readonly restoreCount: number;
}

export class RaftNode {
  readonly id: NodeId;
  private readonly config: RaftConfig;
  private readonly log: RaftLog;

  private term: number;
  private vote: NodeId | null;
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  private conf: ConfState;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  private readonly progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();
  private leadTransferee: NodeId | null = null;
  /** A membership change may not be proposed until everything up to here is applied. */
  private pendingConfIndex = 0;
  /** Leader: appends should go out to followers when the driver next asks for a Ready. */
  private broadcastPending = false;
  /** The commit index moved since the last broadcast, which waits for `broadcastCommit()` (deferCommitBroadcast). */
  private commitUnsent = false;

  private readRound = 0;
  private pendingReads: PendingRead[] = [];
  /** Reads registered before this leader committed an entry of its own term; registered once it does. */
  private readsAwaitingCommit: { context: string; from: NodeId | null }[] = [];
  /** Follower: reads forwarded to the leader, failed if leadership changes before an answer. */
  /** Context → ticks since forwarded; an answer lost on the way is failed after an election timeout. */
  private readonly forwardedReads = new Map<string, number>();

  /** Follower: a snapshot arriving in chunks. */
  private incoming: {
    meta: Snapshot['meta'];
    term: number;
    chunks: Uint8Array[];
    received: number;
    total: number;
  } | null = null;
  /** A snapshot received in full, handed to the driver in the next Ready. */
  private pendingSnapshot: Snapshot | null = null;
  /** Counts snapshot installs, so advance() can tell that one replaced the log under a handed Ready. */
  private restoreCount = 0;

  private messages: Message[] = [];
  private messagesEarly: Message[] = [];
  private readStates: ReadState[] = [];
  private readFailures: ReadFailure[] = [];
  private lastHardState: HardState;
  private lastSoftState: SoftState;
  private handed: Handed | null = null;

  constructor(config: RaftConfig, state: PersistentState) {
    validateConfig(config);
    this.id = config.id;
    this.config = config;
    this.log = new RaftLog(state.snapshot, state.entries, state.hardState.commit);
    this.term = state.hardState.term;
    this.vote = state.hardState.vote;
    this.conf = state.snapshot.meta.conf;
    this.lastHardState = this.hardState();
    this.lastSoftState = this.softState();
    this.becomeFollower(this.term, null);
  }

  // ---------------------------------------------------------------- inputs

  tick(): void {
    if (this.role === 'leader') this.tickLeader();
    else this.tickElection();
  }

  step(m: Message): void {
    assert(m.to === this.id, `raft ${this.id}: message addressed to ${m.to}`);
    if (m.term > this.term) {
      if (!this.stepHigherTerm(m)) return;
    } else if (m.term < this.term) {
      this.stepLowerTerm(m);
      return;
    }
    switch (m.type) {
      case 'preVote':
      case 'vote':
        this.handleVoteRequest(m);
        return;
      default:
        break;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        return;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        return;
      case 'follower':
        this.stepFollower(m);
        return;
      default:
        assertNever(this.role, 'role');
    }
  }

  propose(data: Uint8Array): ProposeResult {
    return this.appendProposal(EntryType.normal, data);
  }

  proposeConfChange(change: ConfChange): ProposeResult {
    if (this.role !== 'leader') return { ok: false, code: 'NOT_LEADER', leader: this.leader };
    if (this.pendingConfIndex > this.log.applied)
      return { ok: false, code: 'CONF_CHANGE_PENDING', leader: this.id };
    if (!this.confChangeValid(change) || !confChangeContextValid(change))
      return { ok: false, code: 'INVALID_CONF_CHANGE', leader: this.id };
    const result = this.appendProposal(EntryType.confChange, encodeConfChange(change));
    if (result.ok) this.pendingConfIndex = result.index;
    return result;
  }

  /** Starts an election now, skipping pre-vote (tests, and the node's "campaign" admin command). */
  campaign(): void {
    if (this.role !== 'leader' && this.promotable()) this.becomeCandidate(false);
  }

  /** Hands leadership to `to` once its log is complete. Proposals are refused until the transfer ends. */
  transferLeadership(to: NodeId): boolean {
    if (this.role !== 'leader' || to === this.id || !this.conf.voters.includes(to)) return false;
    const pr = this.progress.get(to);
    if (pr === undefined) return false;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    if (pr.match === this.log.lastIndex())
      this.send({ type: 'timeoutNow', from: this.id, to, term: this.term });
    else this.sendAppend(to, pr, false);
    return true;
  }

  /**
   * The driver saw the leader's link close (a process that died closes its sockets at once). Drop the leader
   * and campaign within a few ticks instead of a whole election timeout. Safe against a false alarm: our
   * pre-vote still needs a quorum, and followers that still hear the leader refuse it (leader lease).
   */
  forgetLeader(): void {
    if (this.role !== 'follower' || this.leader === null) return;
    const gone = this.leader;
    this.leader = null;
    // The followers that saw the same close campaign in turn, not at random: two ticks apart by their
    // rank among the remaining voters (ids in order), so the first usually wins the first round. Drawn at
    // random over a few ticks, two of three followers picked the same tick one failover in five, split
    // the vote and waited a whole election timeout more (W4's 1.7 s outliers, docs/benchmarks.md). A
    // first-ranked node whose log is behind is refused by the others' pre-votes, and the next one tries.
    const rank = this.conf.voters
      .filter((id) => id !== gone)
      .sort()
      .indexOf(this.id);
    const soon = 1 + 2 * Math.max(0, rank);
    this.electionElapsed = Math.max(this.electionElapsed, this.randomizedElectionTimeout - soon);
  }

  /** The driver lost its link to `to`: appends in flight are gone, so go back to probing. */
  reportUnreachable(to: NodeId): void {
    const pr = this.progress.get(to);
    if (this.role === 'leader' && pr !== undefined && pr.state === 'replicate') pr.becomeProbe();
  }

  /** Asks for a linearizable read point; the answer comes in a later Ready's readStates or readFailures. */
  readIndex(context: string): void {
    if (this.role === 'leader') {
      this.registerRead(context, null);
      return;
    }
    if (this.leader === null) {
      this.readFailures.push({ context, code: 'UNAVAILABLE' });
      return;
    }
    if (this.forwardedReads.size >= this.config.pendingReadsMax) {
      this.readFailures.push({ context, code: 'UNAVAILABLE' });
      return;
    }
    this.forwardedReads.set(context, 0);
    this.send({ type: 'readIndex', from: this.id, to: this.leader, term: this.term, context });
  }

  /**
   * The application made a snapshot of its state at `index` (its applied index). The log is compacted up to
   * `index - keepEntries`, keeping a tail so followers slightly behind need no snapshot.
   */
  createSnapshot(index: number, data: Uint8Array, keepEntries: number): void {
    assert(
      index === this.log.applied,
      `raft ${this.id}: snapshot at ${index} but applied is ${this.log.applied}`,
    );
    assert(keepEntries >= 0, 'raft: keepEntries must be ≥ 0');
    if (index <= this.log.snapshot.meta.index) return;
    const term = this.log.term(index);
    assert(term !== undefined, `raft ${this.id}: no term for snapshot index ${index}`);
    this.log.snapshot = { meta: { index, term, conf: this.conf }, data };
    this.log.compact(Math.max(index - keepEntries, this.log.firstIndex() - 1));
  }

  // ---------------------------------------------------------------- outputs

  hasReady(): boolean {
    if (this.handed !== null) return false;
    if (this.broadcastPending) return true;
    return (
      this.messages.length > 0 ||
      this.messagesEarly.length > 0 ||
      this.pendingSnapshot !== null ||
      this.log.stableIndex < this.log.lastIndex() ||
      this.log.committed > this.log.applied ||
      this.readStates.length > 0 ||
      this.readFailures.length > 0 ||
      !hardStateEqual(this.hardState(), this.lastHardState) ||
      !softStateEqual(this.softState(), this.lastSoftState)
    );
  }

  ready(): Ready {
    assert(this.handed === null, `raft ${this.id}: ready() called before advance()`);
    if (this.broadcastPending) {
      this.broadcastPending = false;
      this.broadcastAppend();
    }
    const snapshot = this.pendingSnapshot;
    const entries =
      this.log.stableIndex < this.log.lastIndex()
        ? this.log.slice(this.log.stableIndex + 1, this.log.lastIndex() + 1)
        : [];
    // Apply only entries that are durable here: committed elsewhere is not enough to survive our own crash.
    const appliedTo =
      snapshot === null ? Math.min(this.log.committed, this.log.stableIndex) : this.log.applied;
    const committedEntries =
      appliedTo > this.log.applied ? this.log.slice(this.log.applied + 1, appliedTo + 1) : [];
    // The Ready contract lets a driver apply these before it writes this Ready: they must be durable already.
    assert(
      committedEntries.length === 0 || (snapshot === null && appliedTo <= this.log.stableIndex),
      `raft ${this.id}: handing out committed entries up to ${appliedTo} that are not durable`,
    );

    const hardState = this.hardState();
    const softState = this.softState();
    const ready: Ready = {
      softState: softStateEqual(softState, this.lastSoftState) ? null : softState,
      hardState: hardStateEqual(hardState, this.lastHardState) ? null : hardState,
      snapshot,
      entries,
      messagesEarly: this.messagesEarly,
      messages: this.messages,
      committedEntries,
      readStates: this.readStates,
      readFailures: this.readFailures,
    };
    const last = entries.length > 0 ? entries[entries.length - 1]! : null;
    this.handed = {
      lastEntryIndex: last?.index ?? 0,
      lastEntryTerm: last?.term ?? 0,
      appliedTo: snapshot === null ? appliedTo : snapshot.meta.index,
      snapshotIndex: snapshot?.meta.index ?? 0,
      confChanges: committedEntries.filter((e) => e.type === EntryType.confChange),
      restoreCount: this.restoreCount,
    };
    this.lastHardState = hardState;
    this.lastSoftState = softState;
    this.pendingSnapshot = null;
    this.messages = [];
    this.messagesEarly = [];
    this.readStates = [];
    this.readFailures = [];
    return ready;
  }

  /**
   * With `deferCommitBroadcast`: sends the commit index to every follower now (in the next Ready, or at once
   * through `takeEarlyMessages()`) instead of with the next append or heartbeat. No-op when nothing waits.
   */
  broadcastCommit(): void {
    if (this.role !== 'leader' || !this.commitUnsent) return;
    this.commitUnsent = false;
    this.broadcastPending = true;
  }

  /**
   * A leader's own messages since the last Ready (appends, heartbeats, snapshot chunks, TimeoutNow, ReadIndex
   * answers), with a pending broadcast of new proposals built first, for sending now — allowed while a Ready
   * is out. They promise nothing about this node's disk (see `send`), so a leader writing one Ready can
   * already replicate the entries proposed after it; its own copy of them goes into the next Ready. Only
   * what promises durability (`messages`) must wait for the write.
   */
  takeEarlyMessages(): readonly Message[] {
    if (this.role === 'leader' && this.broadcastPending) {
      this.broadcastPending = false;
      this.broadcastAppend();
    }
    if (this.messagesEarly.length === 0) return [];
    const early = this.messagesEarly;
    this.messagesEarly = [];
    return early;
  }

  advance(): void {
    const handed = this.handed;
    assert(handed !== null, `raft ${this.id}: advance() without ready()`);
    this.handed = null;
    if (handed.lastEntryIndex > 0) this.log.stableTo(handed.lastEntryIndex, handed.lastEntryTerm);
    // A snapshot installed while the driver worked supersedes what it applied; the next Ready hands it out.
    if (handed.appliedTo > this.log.applied && handed.restoreCount === this.restoreCount) {
      // A snapshot handed out moves applied without entries to apply; its conf came with it.
      for (const entry of handed.confChanges) this.applyConfChange(decodeConfChange(entry.data));
      this.log.applied = handed.appliedTo;
    }
    if (this.role === 'leader' && this.maybeCommit()) this.commitAdvanced();
  }

  // ---------------------------------------------------------------- inspection

  status(): RaftStatus {
    let progress: Record<NodeId, { match: number; next: number; state: string }> | undefined;
    if (this.role === 'leader') {
      progress = {};
      for (const [id, pr] of this.progress)
        progress[id] = { match: pr.match, next: pr.next, state: pr.state };
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      stableIndex: this.log.stableIndex,
      snapshotIndex: this.log.snapshot.meta.index,
      conf: this.conf,
      leadTransferee: this.leadTransferee,
      ...(progress === undefined ? {} : { progress }),
    };
  }

  entries(lo: number, hi: number): Entry[] {
    return this.log.slice(lo, hi);
  }

  termAt(index: number): number | undefined {
    return this.log.term(index);
  }

  snapshot(): Snapshot {
    return this.log.snapshot;
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, leader: NodeId | null): void {
    const leaderChanged = term !== this.term || leader !== this.leader;
    this.failPendingReads();
    if (leaderChanged) this.failForwardedReads();
    this.reset(term);
    this.role = 'follower';
    this.leader = leader;
  }

  private becomePreCandidate(): void {
    assert(this.role !== 'leader', 'raft: leader cannot become pre-candidate');
    this.failPendingReads();
    this.failForwardedReads();
    // Pre-vote changes neither term nor vote: a node that cannot win disturbs nobody.
    this.votes.clear();
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.role = 'preCandidate';
    this.leader = null;
    this.requestVotes('preVote', false);
  }

  private becomeCandidate(transfer: boolean): void {
    assert(this.role !== 'leader', 'raft: leader cannot become candidate');
    this.failPendingReads();
    this.failForwardedReads();
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
    this.requestVotes('vote', transfer);
  }

  private becomeLeader(): void {
    assert(this.role === 'candidate', `raft ${this.id}: only a candidate becomes leader`);
    this.reset(this.term);
    this.role = 'leader';
    this.leader = this.id;
    const next = this.log.lastIndex() + 1;
    for (const id of this.members()) {
      if (id === this.id) continue;
      this.progress.set(id, new Progress(next, this.config.inflightAppendsMax));
    }
    // Until the no-op below is applied we cannot know that earlier membership changes are, so none may start.
    this.appendEntry(EntryType.noop, emptyBytes);
    this.pendingConfIndex = this.log.lastIndex();
    this.broadcastPending = true;
  }

  private reset(term: number): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = null;
    }
    this.leader = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.votes.clear();
    this.progress.clear();
    this.leadTransferee = null;
    this.broadcastPending = false;
    this.commitUnsent = false;
    this.readsAwaitingCommit = [];
  }

  private resetRandomizedElectionTimeout(): void {
    const base = this.config.electionTimeoutTicks;
    this.randomizedElectionTimeout = base + Math.floor(this.config.random() * base);
  }

  // ---------------------------------------------------------------- ticks

  private tickElection(): void {
    this.expireForwardedReads();
    this.electionElapsed++;
    if (this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      if (this.promotable()) {
        if (this.config.preVote) this.becomePreCandidate();
        else this.becomeCandidate(false);
      } else {
        this.resetRandomizedElectionTimeout();
      }
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.config.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, null);
          return;
        }
        for (const pr of this.progress.values()) pr.recentActive = false;
      }
      // A transfer that has not finished within an election timeout is abandoned.
      this.leadTransferee = null;
    }
    if (this.heartbeatElapsed >= this.config.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
    }
  }

  /** Only a voter with no snapshot in flight and no committed-but-unapplied membership change may campaign. */
  private promotable(): boolean {
    if (!this.conf.voters.includes(this.id)) return false;
    if (this.pendingSnapshot !== null || this.handed?.snapshotIndex) return false;
    return !this.log.hasTypeBetween(this.log.applied, this.log.committed, EntryType.confChange);
  }

  // ---------------------------------------------------------------- elections

  private requestVotes(type: 'preVote' | 'vote', transfer: boolean): void {
    const term = type === 'preVote' ? this.term + 1 : this.term;
    this.recordVote(this.id, true);
    if (this.checkElection(type)) return;
    const lastLogIndex = this.log.lastIndex();
    const lastLogTerm = this.log.lastTerm();
    for (const id of this.conf.voters) {
      if (id === this.id) continue;
      this.send({ type, from: this.id, to: id, term, lastLogIndex, lastLogTerm, transfer });
    }
  }

  private recordVote(from: NodeId, granted: boolean): void {
    if (!this.votes.has(from)) this.votes.set(from, granted);
  }

  /** Returns true when the election was decided (won or lost). */
  private checkElection(type: 'preVote' | 'vote'): boolean {
    let granted = 0;
    let rejected = 0;
    for (const id of this.conf.voters) {
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    const quorum = this.quorum();
    if (granted >= quorum) {
      if (type === 'preVote') this.becomeCandidate(false);
      else this.becomeLeader();
      return true;
    }
    if (rejected >= quorum) {
      this.becomeFollower(this.term, null);
      return true;
    }
    return false;
  }

  private handleVoteRequest(m: VoteRequest): void {
    // We vote again for the node we already voted for (a retry), freely when we have neither vote nor leader,
    // and always in a pre-vote for a later term, which changes nothing here.
    const canVote =
      this.vote === m.from ||
      (this.vote === null && this.leader === null) ||
      (m.type === 'preVote' && m.term > this.term);
    const granted = canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    const respType = m.type === 'preVote' ? 'preVoteResp' : 'voteResp';
    if (granted) {
      if (m.type === 'vote') {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
      this.send({ type: respType, from: this.id, to: m.from, term: m.term, reject: false });
    } else {
      this.send({ type: respType, from: this.id, to: m.from, term: this.term, reject: true });
    }
  }

  /** Returns false when the message must be dropped without further handling. */
  private stepHigherTerm(m: Message): boolean {
    if (m.type === 'preVote' || m.type === 'vote') {
      // Leader lease: while we hear from a live leader, a node that merely lost touch cannot depose it.
      const inLease =
        this.config.checkQuorum &&
        this.leader !== null &&
        this.electionElapsed < this.config.electionTimeoutTicks &&
        !m.transfer;
      if (inLease) return false;
      if (m.type === 'preVote') return true;
      this.becomeFollower(m.term, null);
      return true;
    }
    if (m.type === 'preVoteResp' && !m.reject) return true;
    const fromLeader = m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot';
    this.becomeFollower(m.term, fromLeader ? m.from : null);
    return true;
  }

  private stepLowerTerm(m: Message): void {
    if ((this.config.checkQuorum || this.config.preVote) && (m.type === 'append' || m.type === 'heartbeat')) {
      // A stale leader, perhaps cut off while we elected another: tell it our term so it steps down.
      this.send({
        type: 'appendResp',
        from: this.id,
        to: m.from,
        term: this.term,
        reject: true,
        index: 0,
        hintIndex: 0,
        hintTerm: 0,
      });
    } else if (m.type === 'preVote') {
      this.send({ type: 'preVoteResp', from: this.id, to: m.from, term: this.term, reject: true });
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'preVoteResp':
        if (this.role !== 'preCandidate') return;
        this.recordVote(m.from, !m.reject);
        this.checkElection('preVote');
        return;
      case 'voteResp':
        if (this.role !== 'candidate') return;
        this.recordVote(m.from, !m.reject);
        this.checkElection('vote');
        return;
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // A leader exists in our term: we lost.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'readIndexResp':
        this.handleReadIndexResp(m);
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- follower

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'append':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
        this.send({
          type: 'heartbeatResp',
          from: this.id,
          to: m.from,
          term: this.term,
          readRound: m.readRound,
        });
        return;
      case 'snapshot':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshotChunk(m);
        return;
      case 'timeoutNow':
        if (this.promotable()) this.becomeCandidate(true);
        return;
      case 'readIndexResp':
        this.handleReadIndexResp(m);
        return;
      case 'readIndex':
        // Forwarded to us by mistake (we are not the leader): refuse so the reader retries elsewhere.
        this.send({
          type: 'readIndexResp',
          from: this.id,
          to: m.from,
          term: this.term,
          context: m.context,
          index: -1,
        });
        return;
      default:
        return;
    }
  }

  private handleAppend(m: AppendRequest): void {
    const reply = (fields: Pick<AppendResponse, 'reject' | 'index' | 'hintIndex' | 'hintTerm'>): void => {
      this.send({ type: 'appendResp', from: this.id, to: m.from, term: this.term, ...fields });
    };
    if (m.prevIndex === 0 && this.unconfigured()) {
      // A joining node knows no membership yet. Replaying the log from index 1 would not teach it the
      // initial one (that lives in the bootstrap snapshot), so refuse even index 0: the leader sends a snapshot.
      reply({ reject: true, index: 0, hintIndex: 0, hintTerm: 0 });
      return;
    }
    if (m.prevIndex < this.log.committed) {
      // Everything up to our commit matches the leader's log already; skip what we have.
      const skip = this.log.committed - m.prevIndex;
      if (skip < m.entries.length) {
        const rest = m.entries.slice(skip);
        this.handleAppend({
          ...m,
          prevIndex: this.log.committed,
          prevTerm: this.log.term(this.log.committed)!,
          entries: rest,
        });
        return;
      }
      reply({ reject: false, index: this.log.committed, hintIndex: 0, hintTerm: 0 });
      return;
    }
    if (this.log.matchTerm(m.prevIndex, m.prevTerm)) {
      const { lastNew, truncatedFrom } = this.log.appendAfter(m.prevIndex, m.entries);
      if (truncatedFrom > 0) this.withdrawAcks(truncatedFrom);
      this.log.commitTo(Math.min(m.commit, lastNew));
      reply({ reject: false, index: lastNew, hintIndex: 0, hintTerm: 0 });
      return;
    }
    const hintIndex = this.log.findConflictByTerm(Math.min(m.prevIndex, this.log.lastIndex()), m.prevTerm);
    reply({ reject: true, index: m.prevIndex, hintIndex, hintTerm: this.log.term(hintIndex) ?? 0 });
  }

  private handleSnapshotChunk(m: SnapshotChunk): void {
    const respond = (fields: Pick<SnapshotResponse, 'offset' | 'reject' | 'done'>): void => {
      this.send({
        type: 'snapshotResp',
        from: this.id,
        to: m.from,
        term: this.term,
        snapshotIndex: m.meta.index,
        ...fields,
      });
    };
    if (m.meta.index <= this.log.committed && !this.unconfigured()) {
      // We already have all of it; tell the leader where we are so it resumes with appends.
      respond({ offset: m.totalBytes, reject: false, done: true });
      return;
    }
    if (m.totalBytes > this.config.snapshotBytesMax) {
      respond({ offset: 0, reject: true, done: false });
      return;
    }
    const same =
      this.incoming !== null && this.incoming.meta.index === m.meta.index && this.incoming.term === m.term;
    if (m.offset === 0 && !same) {
      this.incoming = { meta: m.meta, term: m.term, chunks: [], received: 0, total: m.totalBytes };
    }
    const incoming = this.incoming;
    if (
      incoming === null ||
      incoming.meta.index !== m.meta.index ||
      incoming.term !== m.term ||
      incoming.total !== m.totalBytes
    ) {
      respond({ offset: 0, reject: true, done: false });
      return;
    }
    if (m.offset !== incoming.received) {
      // Duplicate or out of order: say what we have; the leader continues from there.
      respond({ offset: incoming.received, reject: false, done: false });
      return;
    }
    if (incoming.received + m.data.byteLength > incoming.total) {
      this.incoming = null;
      respond({ offset: 0, reject: true, done: false });
      return;
    }
    incoming.chunks.push(m.data);
    incoming.received += m.data.byteLength;
    if (incoming.received < incoming.total) {
      respond({ offset: incoming.received, reject: false, done: false });
      return;
    }
    this.incoming = null;
    const data = concatBytes(incoming.chunks, incoming.total);
    this.installSnapshot({ meta: incoming.meta, data });
    respond({ offset: incoming.total, reject: false, done: true });
  }

  private installSnapshot(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    if (index === 0) {
      // A joining node adopts the bootstrap membership; the log after it carries every later change.
      assert(
        this.unconfigured() && this.log.lastIndex() === 0,
        `raft ${this.id}: index-0 snapshot on a configured node`,
      );
      this.log.snapshot = snapshot;
      this.conf = snapshot.meta.conf;
      this.pendingSnapshot = snapshot;
      this.restoreCount++;
      return;
    }
    if (this.log.matchTerm(index, term) && index <= this.log.lastIndex()) {
      // Our log already holds that point: fast-forward commit rather than dropping entries we have.
      this.log.commitTo(index);
      return;
    }
    this.withdrawAcks(this.log.committed + 1);
    this.log.restore(snapshot);
    this.restoreCount++;
    this.conf = snapshot.meta.conf;
    this.pendingSnapshot = snapshot;
  }

  // ---------------------------------------------------------------- leader

  private stepLeader(m: Message): void {
    switch (m.type) {
      case 'appendResp':
        this.handleAppendResp(m);
        return;
      case 'heartbeatResp':
        this.handleHeartbeatResp(m);
        return;
      case 'snapshotResp':
        this.handleSnapshotResp(m);
        return;
      case 'readIndex':
        this.registerRead(m.context, m.from);
        return;
      default:
        return;
    }
  }

  private handleAppendResp(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (m.reject && m.index === 0) {
      // Only a node without any membership refuses index 0: it must start from a snapshot.
      if (pr.state !== 'snapshot') this.startSnapshot(m.from, pr);
      return;
    }
    if (m.reject) {
      const matchHint =
        this.log.term(m.hintIndex) === undefined
          ? m.hintIndex
          : this.log.findConflictByTerm(m.hintIndex, m.hintTerm);
      if (pr.maybeDecrTo(m.index, matchHint)) this.sendAppend(m.from, pr, false);
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      if (wasPaused && !pr.isPaused()) this.sendAppend(m.from, pr, false);
      return;
    }
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && pr.match >= (pr.snapshot?.meta.index ?? 0)) pr.becomeProbe();
    if (this.maybeCommit()) this.commitAdvanced();
    else this.sendAppend(m.from, pr, false);
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send({ type: 'timeoutNow', from: this.id, to: m.from, term: this.term });
    }
  }

  private handleHeartbeatResp(m: HeartbeatResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (pr.state === 'probe') pr.probeSent = false;
    if (pr.state === 'snapshot') this.sendSnapshotChunk(m.from, pr);
    // Empty if need be: an append lost in the replicate window is found only when the follower refuses one.
    else if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, pr, true);
    if (m.readRound > pr.readRound) {
      pr.readRound = m.readRound;
      this.confirmReads();
    }
  }

  private handleSnapshotResp(m: SnapshotResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (pr.state !== 'snapshot' || pr.snapshot === null || pr.snapshot.meta.index !== m.snapshotIndex) {
      if (m.done && pr.match < m.snapshotIndex) {
        pr.maybeUpdate(m.snapshotIndex);
        pr.becomeProbe();
        this.sendAppend(m.from, pr, false);
      }
      return;
    }
    if (m.reject) {
      pr.becomeProbe();
      this.sendAppend(m.from, pr, false);
      return;
    }
    if (m.done) {
      pr.maybeUpdate(m.snapshotIndex);
      pr.becomeProbe();
      if (this.maybeCommit()) this.commitAdvanced();
      this.sendAppend(m.from, pr, false);
      return;
    }
    // The follower's count is the truth: ahead means progress, behind means it lost its buffer.
    if (m.offset !== pr.snapshotOffset) {
      pr.snapshotOffset = m.offset;
      this.sendSnapshotChunk(m.from, pr);
    }
  }

  private appendProposal(type: EntryType, data: Uint8Array): ProposeResult {
    if (this.role !== 'leader') return { ok: false, code: 'NOT_LEADER', leader: this.leader };
    if (this.leadTransferee !== null) return { ok: false, code: 'TRANSFERRING', leader: this.id };
    if (this.log.lastIndex() - this.log.committed >= this.config.uncommittedEntriesMax) {
      return { ok: false, code: 'PROPOSALS_FULL', leader: this.id };
    }
    const entry = this.appendEntry(type, data);
    this.broadcastPending = true;
    return { ok: true, index: entry.index, term: entry.term };
  }

  private appendEntry(type: EntryType, data: Uint8Array): Entry {
    const entry: Entry = { index: this.log.lastIndex() + 1, term: this.term, type, data };
    this.log.append(entry);
    return entry;
  }

  private broadcastAppend(): void {
    this.commitUnsent = false;
    for (const [id, pr] of this.progress) this.sendAppend(id, pr, true);
  }

  private commitAdvanced(): void {
    if (this.config.deferCommitBroadcast) this.commitUnsent = true;
    else this.broadcastPending = true;
  }

  /**
   * Sends what `to` is missing: as many appends as flow control allows (pipelining in replicate state), each
   * bounded in bytes and entries. With `sendIfEmpty`, an empty append still goes out to carry the commit index.
   */
  private sendAppend(to: NodeId, pr: Progress, sendIfEmpty: boolean): void {
    const last = this.log.lastIndex();
    let sent = false;
    while (!pr.isPaused()) {
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined) {
        this.startSnapshot(to, pr);
        return;
      }
      const hasEntries = pr.next <= last;
      if (!hasEntries && (sent || !sendIfEmpty)) return;
      const entries = hasEntries
        ? this.log.slice(pr.next, last + 1, this.config.appendBytesMax, this.config.entriesPerAppendMax)
        : [];
      const commit = Math.min(this.log.committed, prevIndex + entries.length);
      this.send({ type: 'append', from: this.id, to, term: this.term, prevIndex, prevTerm, entries, commit });
      pr.sentEntries(prevIndex + entries.length, entries.length);
      sent = true;
      if (pr.state !== 'replicate' || !hasEntries) return;
    }
    if (!sent && sendIfEmpty && pr.state === 'replicate') {
      // Window full: the commit index still has to travel so followers can apply; an empty append is cheap.
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined) {
        // What we sent last is compacted away: probe again from the match, which may lead to a snapshot.
        pr.becomeProbe();
        this.sendAppend(to, pr, sendIfEmpty);
        return;
      }
      const commit = Math.min(this.log.committed, prevIndex);
      this.send({
        type: 'append',
        from: this.id,
        to,
        term: this.term,
        prevIndex,
        prevTerm,
        entries: [],
        commit,
      });
    }
  }

  private startSnapshot(to: NodeId, pr: Progress): void {
    if (!pr.recentActive) return;
    pr.becomeSnapshot(this.log.snapshot);
    this.sendSnapshotChunk(to, pr);
  }

  private sendSnapshotChunk(to: NodeId, pr: Progress): void {
    const snapshot = pr.snapshot;
    assert(snapshot !== null, 'raft: snapshot state without a snapshot');
    const total = snapshot.data.byteLength;
    const offset = pr.snapshotOffset;
    const end = Math.min(total, offset + this.config.snapshotChunkBytesMax);
    this.send({
      type: 'snapshot',
      from: this.id,
      to,
      term: this.term,
      meta: snapshot.meta,
      offset,
      totalBytes: total,
      data: snapshot.data.subarray(offset, end),
    });
  }

  private broadcastHeartbeat(): void {
    for (const [id, pr] of this.progress) {
      this.send({
        type: 'heartbeat',
        from: this.id,
        to: id,
        term: this.term,
        // Never more than the follower is known to hold: its tail may still diverge from ours.
        commit: Math.min(pr.match, this.log.committed),
        readRound: this.readRound,
      });
    }
  }

  /** Advances the commit index to the highest index a quorum of voters holds — if it is of our term (§5.4.2). */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const id of this.conf.voters) {
      if (id === this.id) matches.push(this.log.stableIndex);
      else matches.push(this.progress.get(id)?.match ?? 0);
    }
    if (matches.length === 0) return false;
    matches.sort((a, b) => b - a);
    const index = matches[this.quorum() - 1]!;
    if (index <= this.log.committed || this.log.term(index) !== this.term) return false;
    this.log.commitTo(index);
    if (this.readsAwaitingCommit.length > 0) {
      const waiting = this.readsAwaitingCommit;
      this.readsAwaitingCommit = [];
      for (const read of waiting) this.registerRead(read.context, read.from);
    }
    return true;
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.conf.voters) {
      if (id === this.id || this.progress.get(id)?.recentActive) active++;
    }
    return active >= this.quorum();
  }

  /** A node that joined and has not yet received any membership from a leader. */
  private unconfigured(): boolean {
    return this.conf.voters.length === 0 && this.conf.learners.length === 0;
  }

  private quorum(): number {
    return Math.floor(this.conf.voters.length / 2) + 1;
  }

  private members(): NodeId[] {
    return [...this.conf.voters, ...this.conf.learners];
  }

  // ---------------------------------------------------------------- ReadIndex

  private registerRead(context: string, from: NodeId | null): void {
    if (this.pendingReads.length + this.readsAwaitingCommit.length >= this.config.pendingReadsMax) {
      this.answerRead(context, from, -1);
      return;
    }
    if (this.log.term(this.log.committed) !== this.term) {
      // Our commit index may lag the true one until an entry of our own term commits.
      this.readsAwaitingCommit.push({ context, from });
      return;
    }
    if (this.conf.voters.length === 1) {
      this.answerRead(context, from, this.log.committed);
      return;
    }
    this.readRound++;
    this.pendingReads.push({ context, from, index: this.log.committed, round: this.readRound });
    this.heartbeatElapsed = this.config.heartbeatIntervalTicks;
    this.broadcastHeartbeat();
    this.heartbeatElapsed = 0;
  }

  /** Reads whose round a quorum has echoed are confirmed: nobody else was leader when they were registered. */
  private confirmReads(): void {
    const rounds: number[] = [];
    for (const id of this.conf.voters) {
      rounds.push(id === this.id ? this.readRound : (this.progress.get(id)?.readRound ?? 0));
    }
    rounds.sort((a, b) => b - a);
    const confirmed = rounds[this.quorum() - 1]!;
    let n = 0;
    while (n < this.pendingReads.length && this.pendingReads[n]!.round <= confirmed) {
      const read = this.pendingReads[n]!;
      this.answerRead(read.context, read.from, read.index);
      n++;
    }
    if (n > 0) this.pendingReads = this.pendingReads.slice(n);
  }

  private answerRead(context: string, from: NodeId | null, index: number): void {
    if (from === null) {
      if (index >= 0) this.readStates.push({ context, index });
      else this.readFailures.push({ context, code: 'UNAVAILABLE' });
      return;
    }
    this.send({ type: 'readIndexResp', from: this.id, to: from, term: this.term, context, index });
  }

  private handleReadIndexResp(m: Message & { type: 'readIndexResp' }): void {
    if (!this.forwardedReads.delete(m.context)) return;
    if (m.index >= 0) this.readStates.push({ context: m.context, index: m.index });
    else this.readFailures.push({ context: m.context, code: 'NOT_LEADER' });
  }

  private failPendingReads(): void {
    for (const read of this.pendingReads) this.failRead(read.context, read.from);
    for (const read of this.readsAwaitingCommit) this.failRead(read.context, read.from);
    this.pendingReads = [];
    this.readsAwaitingCommit = [];
  }

  private failRead(context: string, from: NodeId | null): void {
    if (from === null) this.readFailures.push({ context, code: 'NOT_LEADER' });
    else this.send({ type: 'readIndexResp', from: this.id, to: from, term: this.term, context, index: -1 });
  }

  private expireForwardedReads(): void {
    if (this.forwardedReads.size === 0) return;
    for (const [context, ticks] of this.forwardedReads) {
      if (ticks + 1 >= this.config.electionTimeoutTicks) {
        this.forwardedReads.delete(context);
        this.readFailures.push({ context, code: 'UNAVAILABLE' });
      } else {
        this.forwardedReads.set(context, ticks + 1);
      }
    }
  }

  private failForwardedReads(): void {
    for (const context of this.forwardedReads.keys()) this.readFailures.push({ context, code: 'NOT_LEADER' });
    this.forwardedReads.clear();
  }

  // ---------------------------------------------------------------- membership

  private confChangeValid(change: ConfChange): boolean {
    const isVoter = this.conf.voters.includes(change.node);
    const isLearner = this.conf.learners.includes(change.node);
    switch (change.type) {
      case 'addLearner':
        return !isVoter && !isLearner;
      case 'addVoter': {
        if (!isLearner) return false;
        const pr = this.progress.get(change.node);
        return pr !== undefined && pr.match >= this.log.lastIndex() - this.config.learnerCatchUpLagMax;
      }
      case 'remove':
        return (isVoter && this.conf.voters.length > 1) || isLearner;
      default:
        return assertNever(change, 'conf change');
    }
  }

  private applyConfChange(change: ConfChange): void {
    const voters = this.conf.voters.filter((id) => id !== change.node);
    const learners = this.conf.learners.filter((id) => id !== change.node);
    if (change.type === 'addVoter') voters.push(change.node);
    else if (change.type === 'addLearner') learners.push(change.node);
    this.conf = { voters: voters.sort(), learners: learners.sort() };
    if (this.role !== 'leader') return;
    if (change.type === 'remove') {
      this.progress.delete(change.node);
      if (this.leadTransferee === change.node) this.leadTransferee = null;
      if (change.node === this.id) {
        // We are out: stop leading; the rest elect a leader among themselves.
        this.becomeFollower(this.term, null);
        return;
      }
    } else if (change.node !== this.id && !this.progress.has(change.node)) {
      this.progress.set(change.node, new Progress(this.log.lastIndex() + 1, this.config.inflightAppendsMax));
      this.broadcastPending = true;
    }
  }

  // ---------------------------------------------------------------- helpers

  /**
   * Takes back append acknowledgements not yet handed out that cover index `from` or later: the entries they
   * promise were just replaced before reaching the disk, so after the next write they would be false (§5.3:
   * a leader may count an ack towards commit). The leader retries; its next append gets a true answer.
   * Acks already handed out in a Ready are sent only once that Ready's entries are durable, so they stay true.
   */
  private withdrawAcks(from: number): void {
    if (this.messages.length === 0) return;
    this.messages = this.messages.filter((m) => m.type !== 'appendResp' || m.reject || m.index < from);
  }

  private send(m: Message): void {
    switch (m.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
      case 'timeoutNow':
      case 'readIndexResp':
        // A leader's own messages promise nothing about its disk (it counts itself only once durable).
        if (this.role === 'leader') {
          this.messagesEarly.push(m);
          return;
        }
        this.messages.push(m);
        return;
      default:
        this.messages.push(m);
    }
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private softState(): SoftState {
    return { role: this.role, leader: this.leader, term: this.term };
  }
}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function softStateEqual(a: SoftState, b: SoftState): boolean {
  return a.role === b.role && a.leader === b.leader && a.term === b.term;
}

function concatBytes(chunks: readonly Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

function validateConfig(config: RaftConfig): void {
  assert(config.id.length > 0, 'raft config: id must not be empty');
  assert(
    config.electionTimeoutTicks > config.heartbeatIntervalTicks,
    'raft config: election timeout must exceed heartbeat',
  );
  assert(config.heartbeatIntervalTicks >= 1, 'raft config: heartbeat interval ≥ 1 tick');
  assert(config.inflightAppendsMax >= 1, 'raft config: inflightAppendsMax ≥ 1');
  assert(config.entriesPerAppendMax >= 1, 'raft config: entriesPerAppendMax ≥ 1');
  assert(config.snapshotChunkBytesMax >= 1, 'raft config: snapshotChunkBytesMax ≥ 1');
  assert(
    config.snapshotBytesMax >= config.snapshotChunkBytesMax,
    'raft config: snapshotBytesMax ≥ chunk size',
  );
  assert(config.uncommittedEntriesMax >= 1, 'raft config: uncommittedEntriesMax ≥ 1');
  assert(config.pendingReadsMax >= 1, 'raft config: pendingReadsMax ≥ 1');
}
