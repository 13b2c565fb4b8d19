// The data that crosses the Raft core's boundary: entries, hard state, snapshots, messages and the Ready.
// Everything here is plain data, so msgpackr encodes it as it is and the simulator can copy it freely.
// Values handed to or from the core are never mutated afterwards by either side.

export type NodeId = string;

export const EntryType = {
  /** Application data (a lock-table command). */
  normal: 0,
  /** Empty entry a new leader appends so it can commit an entry of its own term at once. */
  noop: 1,
  /** A membership change; `data` is a `ConfChange` as JSON bytes (see conf-change.ts). */
  confChange: 2,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** What must be durable before any vote or append acknowledgement that depends on it is sent. */
export interface HardState {
  readonly term: number;
  readonly vote: NodeId | null;
  readonly commit: number;
}

/** Membership, sorted. A learner receives the log but neither votes nor counts towards a quorum. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/**
 * `context` is the application's, carried through the log untouched and never read by the core (the
 * server puts the new member's addresses there). At most `confChangeContextBytesMax` bytes.
 */
export type ConfChange =
  | { readonly type: 'addLearner'; readonly node: NodeId; readonly context?: string | undefined }
  /** Promotes a learner that has caught up; a node must join as a learner first. */
  | { readonly type: 'addVoter'; readonly node: NodeId; readonly context?: string | undefined }
  | { readonly type: 'remove'; readonly node: NodeId; readonly context?: string | undefined };

/** The largest `ConfChange.context`, in UTF-8 bytes. */
export const confChangeContextBytesMax = 1024;

export interface SnapshotMeta {
  /** The last log index the snapshot covers. */
  readonly index: number;
  readonly term: number;
  /** Membership as of `index`. */
  readonly conf: ConfState;
}

export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array;
}

/** Everything a node needs to restart from its disk. */
export interface PersistentState {
  readonly hardState: HardState;
  /** The latest snapshot; at first boot, `{ index: 0, term: 0, conf: <initial members> }` and empty data. */
  readonly snapshot: Snapshot;
  /** Durable entries after `snapshot.meta.index`, contiguous. */
  readonly entries: readonly Entry[];
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
}

export interface VoteRequest extends MessageBase {
  readonly type: 'preVote' | 'vote';
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /** Set when the campaign comes from a leadership transfer: voters skip the leader-lease check. */
  readonly transfer: boolean;
}

export interface VoteResponse extends MessageBase {
  readonly type: 'preVoteResp' | 'voteResp';
  readonly reject: boolean;
}

export interface AppendRequest extends MessageBase {
  readonly type: 'append';
  readonly prevIndex: number;
  readonly prevTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
}

export interface AppendResponse extends MessageBase {
  readonly type: 'appendResp';
  readonly reject: boolean;
  /** Accepted: the follower's log matches the leader's up to here. Rejected: the `prevIndex` refused. */
  readonly index: number;
  /** Rejected only: a guess at the last index where the logs may match (fast back-tracking). */
  readonly hintIndex: number;
  /** Rejected only: the follower's term at `hintIndex`. */
  readonly hintTerm: number;
}

export interface HeartbeatRequest extends MessageBase {
  readonly type: 'heartbeat';
  readonly commit: number;
  /** ReadIndex round: the follower echoes it; a quorum of echoes confirms reads registered up to it. */
  readonly readRound: number;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: 'heartbeatResp';
  readonly readRound: number;
}

export interface SnapshotChunk extends MessageBase {
  readonly type: 'snapshot';
  readonly meta: SnapshotMeta;
  /** Byte offset of `data` within the whole snapshot. */
  readonly offset: number;
  readonly totalBytes: number;
  readonly data: Uint8Array;
}

export interface SnapshotResponse extends MessageBase {
  readonly type: 'snapshotResp';
  readonly snapshotIndex: number;
  /** Bytes received so far; the next chunk starts here. */
  readonly offset: number;
  /** The follower dropped the transfer (for example an offset it did not expect); restart it. */
  readonly reject: boolean;
  /** True once the follower installed the whole snapshot. */
  readonly done: boolean;
}

export interface TimeoutNow extends MessageBase {
  readonly type: 'timeoutNow';
}

/** A follower forwards a linearizable read to its leader. */
export interface ReadIndexRequest extends MessageBase {
  readonly type: 'readIndex';
  readonly context: string;
}

export interface ReadIndexResponse extends MessageBase {
  readonly type: 'readIndexResp';
  readonly context: string;
  /** The index the read must wait for locally; -1 when the leader refused (then the read fails). */
  readonly index: number;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | HeartbeatRequest
  | HeartbeatResponse
  | SnapshotChunk
  | SnapshotResponse
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse;

export type MessageType = Message['type'];

/** A confirmed linearizable read: it may be served once the local applied index reaches `index`. */
export interface ReadState {
  readonly context: string;
  readonly index: number;
}

/** A read that could not be confirmed (no leader, leadership lost, queue full). */
export interface ReadFailure {
  readonly context: string;
  readonly code: 'NOT_LEADER' | 'UNAVAILABLE';
}

export interface SoftState {
  readonly role: Role;
  readonly leader: NodeId | null;
  readonly term: number;
}

/**
 * What the core asks its driver to do. The driver handles one Ready at a time, in this order:
 * 1. send `messagesEarly` whenever it likes (the leader's own appends: they never depend on its disk);
 * 2. persist `snapshot` (if any), then `entries` (truncating anything at or after the first one's index),
 *    then `hardState` — durably, one fsync for the lot;
 * 3. send `messages` (votes and acknowledgements that promise what step 2 made durable);
 * 4. restore `snapshot` into the state machine, then apply `committedEntries` in order;
 * 5. call `advance()`.
 * `committedEntries` are always durable here before this Ready (at or below the index earlier Readys made
 * stable, never among this Ready's `entries`), and a Ready with a `snapshot` has none. So a driver may apply
 * them before step 2 instead, while the new entries are written (Raft thesis §10.2.1): committed and
 * durable, they survive its crash either way.
 * The core may be stepped and ticked while the driver works on a Ready; the next Ready comes after `advance()`.
 */
export interface Ready {
  readonly softState: SoftState | null;
  readonly hardState: HardState | null;
  readonly snapshot: Snapshot | null;
  readonly entries: readonly Entry[];
  readonly messagesEarly: readonly Message[];
  readonly messages: readonly Message[];
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly readFailures: readonly ReadFailure[];
}

export type ProposeResult =
  | { readonly ok: true; readonly index: number; readonly term: number }
  | {
      readonly ok: false;
      readonly code:
        | 'NOT_LEADER'
        | 'TRANSFERRING'
        | 'PROPOSALS_FULL'
        | 'CONF_CHANGE_PENDING'
        | 'INVALID_CONF_CHANGE';
      readonly leader: NodeId | null;
    };

export interface RaftConfig {
  readonly id: NodeId;
  /** A follower that hears no leader for this long (randomised up to twice as long) starts a pre-vote. */
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** Uniform in [0, 1); seeded by the driver. The core has no other source of randomness. */
  readonly random: () => number;
  /** Upper bound on the payload bytes of one append (at least one entry is always sent). */
  readonly appendBytesMax: number;
  readonly entriesPerAppendMax: number;
  /** Appends in flight per follower in the replicate state (pipelining). */
  readonly inflightAppendsMax: number;
  readonly snapshotChunkBytesMax: number;
  /** A follower refuses an incoming snapshot larger than this (it buffers the chunks in memory). */
  readonly snapshotBytesMax: number;
  /** Proposals not yet committed that the leader accepts before it answers PROPOSALS_FULL. */
  readonly uncommittedEntriesMax: number;
  readonly pendingReadsMax: number;
  /** A learner within this many entries of the leader's last index may be promoted to voter. */
  readonly learnerCatchUpLagMax: number;
  readonly checkQuorum: boolean;
  readonly preVote: boolean;
  /**
   * When the commit index moves and there is nothing new to replicate, a leader normally sends every follower
   * an empty append at once to carry it. With this set it waits: the commit index travels with the next
   * append or heartbeat, or at once when the driver calls `broadcastCommit()` (when another node is waiting
   * for it). Saves a message and its acknowledgement per follower per commit when nobody else is waiting.
   */
  readonly deferCommitBroadcast: boolean;
}
