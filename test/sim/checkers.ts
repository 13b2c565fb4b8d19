// The simulator's checkers. They watch every node after every event and throw a `SimViolation`
// naming the seed, the virtual time, the property and what was seen. End-to-end properties (Raft
// paper, figure 3, plus reads and durability) come first; protocol checks, which catch a broken
// rule before it has had a chance to cause visible damage, can be switched off with
// `checks: 'end-to-end'` to show that the end-to-end checks find the same bug on their own.
//
// Everything is incremental: each check looks only at what changed (new entries, a new commit range,
// one message), so checking every step stays cheap.

import type {
  ConfState,
  Entry,
  HardState,
  Message,
  NodeId,
  PersistentState,
  ReadState,
  Ready,
  Snapshot,
} from '../../src/raft/types.ts';
import { EntryType } from '../../src/raft/types.ts';
import type { MemoryStorage } from '../../src/storage/memory-storage.ts';
import type { CoreStatus, SimCore } from './core.ts';
import { hashBytes } from './hash.ts';
import type { SimMachine } from './state-machine.ts';

export type CheckName =
  | 'election safety'
  | 'log matching'
  | 'committed entries stable'
  | 'leader completeness'
  | 'commit monotonic'
  | 'durable state monotonic'
  | 'state machine safety'
  | 'membership agreement'
  | 'read linearizability'
  | 'persist before acknowledge'
  | 'apply only durable entries'
  | 'commit durable on a quorum'
  | 'commit only current-term entries'
  | 'liveness'
  | 'core failure';

/** 'all' adds the protocol checks (acknowledgements, quorum durability, the commit rule). */
export type CheckLevel = 'all' | 'end-to-end';

export interface ViolationContext {
  readonly seed: number;
  readonly time: number;
  readonly tick: number;
}

export class SimViolation extends Error {
  override readonly name = 'SimViolation';

  constructor(
    readonly check: CheckName,
    readonly detail: string,
    readonly context: ViolationContext,
    options?: { cause?: unknown },
  ) {
    super(`${check}: ${detail} [tick ${context.tick}, prng seed ${context.seed}]`, options);
  }
}

/** What the checkers may look at on a node: its core (live) and its disk. */
export interface CheckedNode {
  readonly id: NodeId;
  readonly incarnation: number;
  readonly core: SimCore;
  readonly storage: MemoryStorage;
  readonly machine: SimMachine;
}

interface NodeTrack {
  incarnation: number;
  /** Last commit index seen on the live node (this incarnation). */
  commit: number;
  /** Commit indexes up to here have been compared with the committed log. */
  checkedCommit: number;
  /** The term in which we last saw this node lead (0: not leading at the last observation). */
  leaderTerm: number;
  /** Durable hard state last seen (survives crashes: it is the disk's). */
  durable: HardState;
}

/** Keys (index, term) as one number: terms stay far below 2^21 in any simulated run. */
const termBits = 2 ** 21;

export class Checker {
  private readonly leaderOfTerm = new Map<number, NodeId>();
  // The committed log as first reported, by index.
  private readonly committedTerm: number[] = [0];
  private readonly committedType: number[] = [EntryType.noop];
  private readonly committedPrint: number[] = [0];
  /** The reporter's term when the index was first seen committed: leaders of later terms must hold it. */
  private readonly committedSeenTerm: number[] = [0];
  private readonly committedBy: NodeId[] = [''];
  /** Highest index known committed anywhere. */
  committedMax = 0;
  /** (index, term) → [fingerprint, type, term of the entry before]; the log matching witness. */
  private readonly logEntries = new Map<number, [number, number, number | undefined]>();
  /** State machine chain after applying each index, as first seen. */
  private readonly chainAt: number[] = [];
  /** Membership after applying each index at which it changed, as first seen. */
  private readonly confAt = new Map<number, string>();
  private readonly reads = new Map<string, { commitAtRequest: number; node: NodeId; answered: boolean }>();
  private readonly tracks = new Map<NodeId, NodeTrack>();
  /** Distinct terms in which some node became leader. */
  elections = 0;

  constructor(
    private readonly context: () => ViolationContext,
    private readonly diskOf: (id: NodeId) => MemoryStorage | undefined,
    private readonly level: CheckLevel = 'all',
  ) {}

  fail(check: CheckName, detail: string, cause?: unknown): never {
    throw new SimViolation(check, detail, this.context(), cause === undefined ? undefined : { cause });
  }

  /** A node (re)starts from its disk: what it loaded must agree with everything committed. */
  onBoot(node: CheckedNode, loaded: PersistentState): void {
    const previous = this.tracks.get(node.id);
    const status = node.core.status();
    this.tracks.set(node.id, {
      incarnation: node.incarnation,
      commit: status.commit,
      checkedCommit: loaded.snapshot.meta.index,
      leaderTerm: 0,
      durable: previous?.durable ?? loaded.hardState,
    });
    const { index, term } = loaded.snapshot.meta;
    if (index > 0) this.compareCommitted(node.id, index, term, undefined, `its durable snapshot`);
    for (const entry of loaded.entries) {
      if (entry.index > loaded.hardState.commit) break;
      this.noteCommitted(node, entry, status, `its durable log (durable commit ${loaded.hardState.commit})`);
    }
    this.tracks.get(node.id)!.checkedCommit = Math.max(
      index,
      Math.min(loaded.hardState.commit, status.lastIndex),
    );
    this.observe(node);
  }

  onReady(node: CheckedNode, ready: Ready): void {
    if (ready.snapshot !== null) {
      const { index, term } = ready.snapshot.meta;
      this.compareCommitted(node.id, index, term, undefined, `a snapshot it received`);
    }
    const entries = ready.entries;
    for (let k = 0; k < entries.length; k++) {
      const entry = entries[k]!;
      const prevTerm = k > 0 ? entries[k - 1]!.term : node.core.termAt(entry.index - 1);
      this.checkLogMatching(node.id, entry, prevTerm);
    }
  }

  private checkLogMatching(id: NodeId, entry: Entry, prevTerm: number | undefined): void {
    if (entry.term >= termBits) this.fail('log matching', `term ${entry.term} too large to track`);
    const key = entry.index * termBits + entry.term;
    const print = hashBytes(entry.data);
    const seen = this.logEntries.get(key);
    if (seen === undefined) {
      this.logEntries.set(key, [print, entry.type, prevTerm]);
      return;
    }
    if (seen[0] !== print || seen[1] !== entry.type) {
      this.fail(
        'log matching',
        `${id} holds entry ${entry.index} of term ${entry.term} with different contents than another node's entry with the same index and term`,
      );
    }
    if (prevTerm !== undefined && seen[2] !== undefined && seen[2] !== prevTerm) {
      this.fail(
        'log matching',
        `${id}'s entry ${entry.index} of term ${entry.term} follows an entry of term ${prevTerm}; another node has it after term ${seen[2]}`,
      );
    }
    if (seen[2] === undefined && prevTerm !== undefined) seen[2] = prevTerm;
  }

  /** A message is about to leave `node`: an acknowledgement must only promise what is on its disk. */
  beforeSend(node: CheckedNode, message: Message): void {
    if (this.level !== 'all') return;
    const disk = node.storage;
    switch (message.type) {
      case 'voteResp': {
        if (message.reject) return;
        const durable = disk.durableHardState();
        if (durable.term > message.term || (durable.term === message.term && durable.vote === message.to))
          return;
        this.fail(
          'persist before acknowledge',
          `${node.id} grants its term-${message.term} vote to ${message.to} while its disk says term ${durable.term}, vote ${durable.vote}`,
        );
        break;
      }
      case 'appendResp': {
        if (message.reject || message.index === 0) return;
        if (message.index <= disk.durableSnapshotIndex()) return;
        const status = node.core.status();
        // Within the same term nobody rewrites the acknowledged prefix, so the live log shows what was acked.
        const liveTerm = status.term === message.term ? node.core.termAt(message.index) : undefined;
        const durableTerm = disk.durableTermAt(message.index);
        if (durableTerm !== undefined && (liveTerm === undefined || liveTerm === durableTerm)) return;
        this.fail(
          'persist before acknowledge',
          `${node.id} acknowledges entries up to ${message.index} (term ${liveTerm ?? '?'}) to ${message.to}, but its disk holds ${durableTerm === undefined ? `only up to ${disk.durableLastIndex()}` : `term ${durableTerm} there`}`,
        );
        break;
      }
      case 'snapshotResp': {
        if (!message.done || message.reject) return;
        // Installed, or already held in the durable log (a stale snapshot the follower did not need).
        if (
          disk.durableSnapshotIndex() >= message.snapshotIndex ||
          disk.durableLastIndex() >= message.snapshotIndex
        )
          return;
        this.fail(
          'persist before acknowledge',
          `${node.id} reports snapshot ${message.snapshotIndex} installed while its disk holds snapshot ${disk.durableSnapshotIndex()}`,
        );
        break;
      }
      default:
        return;
    }
  }

  /** Writes completed on `node`'s disk: the durable hard state only moves forward. */
  onDurable(node: { id: NodeId; storage: MemoryStorage }): void {
    const track = this.tracks.get(node.id);
    if (track === undefined) return;
    const before = track.durable;
    const after = node.storage.durableHardState();
    if (after.term < before.term) {
      this.fail(
        'durable state monotonic',
        `${node.id}'s durable term went from ${before.term} back to ${after.term}`,
      );
    }
    if (after.term === before.term && before.vote !== null && after.vote !== before.vote) {
      this.fail(
        'durable state monotonic',
        `${node.id} changed its durable vote in term ${after.term} from ${before.vote} to ${after.vote}`,
      );
    }
    if (after.commit < before.commit) {
      this.fail(
        'durable state monotonic',
        `${node.id}'s durable commit went from ${before.commit} back to ${after.commit}`,
      );
    }
    track.durable = after;
  }

  /** Called after every event that touched a live node. */
  observe(node: CheckedNode): CoreStatus {
    const status = node.core.status();
    const track = this.tracks.get(node.id)!;
    if (status.role === 'leader') {
      const leader = this.leaderOfTerm.get(status.term);
      if (leader === undefined) {
        this.leaderOfTerm.set(status.term, node.id);
        this.elections++;
      } else if (leader !== node.id) {
        this.fail('election safety', `${node.id} and ${leader} are both leaders of term ${status.term}`);
      }
      if (track.leaderTerm !== status.term) {
        this.checkLeaderCompleteness(node, status);
      } else if (this.level === 'all' && status.commit > track.commit) {
        // §5.4.2: a leader advances its commit index only to an entry of its own term.
        const term = node.core.termAt(status.commit);
        if (term !== status.term) {
          this.fail(
            'commit only current-term entries',
            `leader ${node.id} of term ${status.term} advanced its commit from ${track.commit} to ${status.commit}, an entry of term ${term}`,
          );
        }
      }
      track.leaderTerm = status.term;
    } else {
      track.leaderTerm = 0;
    }
    if (status.commit < track.commit) {
      this.fail(
        'commit monotonic',
        `${node.id}'s commit index went from ${track.commit} back to ${status.commit}`,
      );
    }
    track.commit = status.commit;
    if (status.commit > track.checkedCommit) this.checkCommitRange(node, status, track);
    return status;
  }

  private checkCommitRange(node: CheckedNode, status: CoreStatus, track: NodeTrack): void {
    let lo = track.checkedCommit + 1;
    if (lo < status.firstIndex) {
      // Jumped over compacted entries (a snapshot): they are covered by the snapshot's index and term.
      const term = node.core.termAt(status.snapshotIndex);
      if (term !== undefined)
        this.compareCommitted(node.id, status.snapshotIndex, term, undefined, 'its snapshot');
      lo = status.firstIndex;
    }
    if (lo <= status.commit) {
      for (const entry of node.core.entries(lo, status.commit + 1)) {
        this.noteCommitted(node, entry, status, `its log (commit ${status.commit})`);
      }
    }
    track.checkedCommit = status.commit;
  }

  /** Records a committed entry, or compares it with the one committed before at that index. */
  private noteCommitted(node: CheckedNode, entry: Entry, status: CoreStatus, where: string): void {
    const print = hashBytes(entry.data);
    if (entry.index <= this.committedMax) {
      this.compareCommitted(node.id, entry.index, entry.term, print, where, entry.type);
      return;
    }
    if (entry.index !== this.committedMax + 1) {
      // Indexes between were committed too; fill them from this node's log when it has them.
      for (let i = this.committedMax + 1; i < entry.index; i++) {
        const term = node.core.termAt(i);
        if (term === undefined) {
          this.recordCommitted(i, -1, -1, -1, status.term, node.id);
          continue;
        }
        const [filler] = node.core.entries(i, i + 1);
        this.recordCommitted(i, term, filler!.type, hashBytes(filler!.data), status.term, node.id);
      }
    }
    this.recordCommitted(entry.index, entry.term, entry.type, print, status.term, node.id);
    if (this.level === 'all' && status.role === 'leader') this.checkQuorumDurable(node, entry, status);
  }

  private recordCommitted(
    index: number,
    term: number,
    type: number,
    print: number,
    seenTerm: number,
    by: NodeId,
  ) {
    this.committedTerm[index] = term;
    this.committedType[index] = type;
    this.committedPrint[index] = print;
    this.committedSeenTerm[index] = seenTerm;
    this.committedBy[index] = by;
    this.committedMax = Math.max(this.committedMax, index);
  }

  private compareCommitted(
    id: NodeId,
    index: number,
    term: number,
    print: number | undefined,
    where: string,
    type?: number,
  ): void {
    if (index > this.committedMax || index === 0) return;
    const knownTerm = this.committedTerm[index]!;
    if (knownTerm === -1) {
      // First seen through a snapshot that covered it; learn it now.
      if (print !== undefined && type !== undefined) {
        this.committedTerm[index] = term;
        this.committedType[index] = type;
        this.committedPrint[index] = print;
      }
      return;
    }
    if (
      knownTerm !== term ||
      (print !== undefined && this.committedPrint[index] !== -1 && this.committedPrint[index] !== print)
    ) {
      this.fail(
        'committed entries stable',
        `${id} has entry ${index} of term ${term} in ${where}, but entry ${index} was committed with term ${knownTerm}${knownTerm === term ? ' and other contents' : ''} (first reported by ${this.committedBy[index]})`,
      );
    }
  }

  /** A leader just counted `entry` as committed: a majority of its voters must hold it on disk. */
  private checkQuorumDurable(node: CheckedNode, entry: Entry, status: CoreStatus): void {
    const voters = status.conf.voters;
    let holders = 0;
    const missing: NodeId[] = [];
    for (const voter of voters) {
      const disk = this.diskOf(voter);
      if (
        disk !== undefined &&
        (entry.index < disk.durableSnapshotIndex() || disk.durableTermAt(entry.index) === entry.term)
      ) {
        holders++;
      } else {
        missing.push(voter);
      }
    }
    if (2 * holders > voters.length) return;
    this.fail(
      'commit durable on a quorum',
      `leader ${node.id} committed entry ${entry.index} (term ${entry.term}), but only ${holders} of voters [${voters.join(', ')}] hold it on disk (missing: ${missing.join(', ')})`,
    );
  }

  private checkLeaderCompleteness(node: CheckedNode, status: CoreStatus): void {
    const from = Math.max(status.snapshotIndex + 1, 1);
    for (let i = from; i <= this.committedMax; i++) {
      if (this.committedSeenTerm[i]! >= status.term) continue;
      const known = this.committedTerm[i]!;
      if (known === -1) continue;
      const term = node.core.termAt(i);
      if (term !== known) {
        this.fail(
          'leader completeness',
          `${node.id} became leader of term ${status.term} without committed entry ${i} (term ${known}, committed by term ${this.committedSeenTerm[i]}); its log has ${term === undefined ? 'nothing' : `term ${term}`} there (last index ${status.lastIndex})`,
        );
      }
    }
  }

  /** The state machine applies `entry` next. */
  onApply(node: CheckedNode, entry: Entry, status: CoreStatus): void {
    if (entry.index !== node.machine.index + 1) {
      this.fail(
        'state machine safety',
        `${node.id} applies entry ${entry.index} right after ${node.machine.index}`,
      );
    }
    // Drivers apply committed entries before the Ready's own write (src/raft/types.ts): that is safe only
    // because the core hands out nothing that is not on this node's disk already.
    const durableTerm = node.storage.durableTermAt(entry.index);
    if (durableTerm !== entry.term && entry.index > node.storage.durableSnapshotIndex()) {
      this.fail(
        'apply only durable entries',
        `${node.id} applies entry ${entry.index} (term ${entry.term}) but its disk holds ${durableTerm === undefined ? 'no entry' : `term ${durableTerm}`} there`,
      );
    }
    this.noteCommitted(node, entry, status, 'its committed entries');
  }

  afterApply(node: CheckedNode): void {
    const machine = node.machine;
    const known = this.chainAt[machine.index];
    if (known === undefined) {
      this.chainAt[machine.index] = machine.chain;
    } else if (known !== machine.chain) {
      this.fail(
        'state machine safety',
        `${node.id}'s state machine after index ${machine.index} differs from another replica's at the same index`,
      );
    }
  }

  onRestore(node: CheckedNode, snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    this.compareCommitted(node.id, index, term, undefined, 'a snapshot it restored');
    const known = this.chainAt[index];
    if (known !== undefined && known !== node.machine.chain) {
      this.fail(
        'state machine safety',
        `${node.id} restored a snapshot at ${index} whose state differs from the replicas'`,
      );
    }
  }

  /**
   * Membership is a function of the applied log: two nodes that applied the same prefix must agree on it.
   * Called after a Ready that applied a membership change or restored a snapshot.
   */
  onConfApplied(node: CheckedNode, applied: number, conf: ConfState): void {
    const text = `voters [${conf.voters.join(', ')}], learners [${conf.learners.join(', ')}]`;
    const known = this.confAt.get(applied);
    if (known === undefined) this.confAt.set(applied, text);
    else if (known !== text) {
      this.fail(
        'membership agreement',
        `after applying up to ${applied}, ${node.id} has ${text}; another node had ${known}`,
      );
    }
  }

  onReadRequest(node: NodeId, context: string): void {
    this.reads.set(context, { commitAtRequest: this.committedMax, node, answered: false });
  }

  onReadState(node: NodeId, read: ReadState): void {
    const request = this.reads.get(read.context);
    if (request === undefined)
      this.fail('read linearizability', `${node} confirmed read ${read.context} nobody asked for`);
    if (request.node !== node) {
      this.fail(
        'read linearizability',
        `read ${read.context} asked on ${request.node} was confirmed on ${node}`,
      );
    }
    if (request.answered) this.fail('read linearizability', `read ${read.context} was answered twice`);
    request.answered = true;
    if (read.index < request.commitAtRequest) {
      this.fail(
        'read linearizability',
        `read ${read.context} on ${node} got index ${read.index}, below ${request.commitAtRequest}, which was committed before the read was asked`,
      );
    }
  }

  onReadFailure(node: NodeId, context: string): void {
    const request = this.reads.get(context);
    if (request === undefined)
      this.fail('read linearizability', `${node} failed read ${context} nobody asked for`);
    if (request.answered) this.fail('read linearizability', `read ${context} was answered twice`);
    request.answered = true;
  }

  leaderOf(term: number): NodeId | undefined {
    return this.leaderOfTerm.get(term);
  }

  /** The committed entry at `index` as first reported: term and fingerprint. */
  committedAt(index: number): { term: number; print: number } | undefined {
    if (index > this.committedMax) return undefined;
    return { term: this.committedTerm[index]!, print: this.committedPrint[index]! };
  }
}
