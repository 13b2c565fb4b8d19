// Cluster membership at the node level (C5): where every member can be reached, and the operator's
// membership requests.
//
// Addresses. A conf change that adds a member carries its peer address and client URL as the change's
// `context` (opaque to the Raft core), so every node learns them from the log as it applies the change.
// The node also records every member's context in the lock table, which snapshots carry (format
// version 3), so a node that installs a snapshot learns the addresses of members added before it. The
// members of the initial configuration have no conf change in the log: their addresses come from the
// node's configuration, and a node that joined later learns them from the cluster when it joins. All of
// it is also written to `<data-dir>/members.json` whenever it changes, so a restart with the same data
// directory needs neither flags nor a second join.
//
// Changes. `Membership` answers the admin requests on the leader (add as learner, remove, transfer
// leadership), promotes a caught-up learner to voter — one change at a time, as the core demands —
// and, after every applied change, hands the transport the new peer set and the gateway the client URLs.

import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { assert } from '../assert.ts';
import {
  type ErrorCode,
  errorFromCode,
  InvalidArgumentError,
  LimitExceededError,
  NotLeaderError,
  OutcomeUnknownError,
  type RaftlockError,
  TimeoutError,
  TransferringError,
  UnavailableError,
} from '../errors.ts';
import type { MemberView } from '../protocol.ts';
import type { ConfChange, ConfState, NodeId, ProposeResult, RaftStatus } from '../raft/index.ts';
import type { PeerAddress } from '../transport/peer-transport.ts';
import type { Logger } from './log.ts';
import type { AdminBody, AdminResultBody, PeerBody } from './peer-messages.ts';

export interface MemberAddresses {
  readonly peer: PeerAddress;
  /** ws:// or wss:// URL of its client port; null when unknown. */
  readonly clientUrl: string | null;
}

export const membershipLimits = {
  /** Members (voters and learners) the directory and the members file hold. */
  membersMax: 64,
  /** Voters the leader promotes learners up to; more learners stay learners. */
  votersMax: 7,
  /** Longest member id. */
  memberIdLengthMax: 64,
  /** Admin requests waiting for their conf change to apply, or for a transfer to finish. */
  adminWaitersMax: 16,
  /** A conf change not applied within this many ticks is answered OUTCOME_UNKNOWN. */
  confChangeWaitTicks: 100,
  /** Ticks between two promotion checks on the leader. */
  promotionCheckTicks: 5,
  /**
   * Election timeouts for which a majority of the other voters must have refused this node's links as
   * "not a member" (and accepted none since) before it concludes it was removed while it was down.
   */
  removedAwayElectionTimeouts: 10,
} as const;

const memberIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** A member id as the operator may give it: letters, digits, `_ . -`, at most 64 characters. */
export function checkMemberId(id: string): string {
  if (id.length === 0 || id.length > membershipLimits.memberIdLengthMax || !memberIdPattern.test(id))
    throw new InvalidArgumentError(
      `member id must be 1..${membershipLimits.memberIdLengthMax} letters, digits, '_', '.' or '-', got ${JSON.stringify(id.slice(0, 80))}`,
    );
  return id;
}

/** HOST:PORT (IPv6 in brackets), port 1..65535. */
export function parsePeerAddress(text: string): PeerAddress {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match === null ? 0 : Number(match[2]);
  if (match === null || port < 1 || port > 65_535)
    throw new InvalidArgumentError(
      `peer address must be HOST:PORT, got ${JSON.stringify(text.slice(0, 80))}`,
    );
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

export function formatPeerAddress(address: PeerAddress): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** A ws:// or wss:// URL with a host and nothing but an optional path. */
export function checkClientUrl(text: string): string {
  let url: URL | null = null;
  try {
    url = new URL(text);
  } catch {
    url = null;
  }
  if (
    url === null ||
    (url.protocol !== 'ws:' && url.protocol !== 'wss:') ||
    url.hostname === '' ||
    url.username !== '' ||
    url.password !== '' ||
    url.search !== '' ||
    url.hash !== ''
  )
    throw new InvalidArgumentError(
      `client URL must be ws://HOST:PORT or wss://…, got ${JSON.stringify(text.slice(0, 80))}`,
    );
  return text;
}

/** The context a conf change adding a member carries: its addresses, as JSON. */
export function encodeMemberContext(addresses: MemberAddresses): string {
  return JSON.stringify({ peer: formatPeerAddress(addresses.peer), client: addresses.clientUrl });
}

/** Null for anything that is not a context this module wrote (an old entry, another tool's). */
export function decodeMemberContext(context: string | undefined): MemberAddresses | null {
  if (context === undefined) return null;
  try {
    const value = JSON.parse(context) as { peer?: unknown; client?: unknown };
    if (typeof value !== 'object' || value === null || typeof value.peer !== 'string') return null;
    const clientUrl = typeof value.client === 'string' ? checkClientUrl(value.client) : null;
    return { peer: parsePeerAddress(value.peer), clientUrl };
  } catch {
    return null;
  }
}

interface MembersFile {
  readonly version: 1;
  readonly members: readonly {
    readonly id: string;
    readonly peer: string;
    readonly clientUrl: string | null;
  }[];
}

/**
 * Where each member can be reached. Holds addresses only; who is a member is the Raft core's conf.
 * `clientUrls` is one live map, handed to the gateway for NOT_LEADER hints and the dashboard.
 */
export class MemberDirectory {
  readonly clientUrls = new Map<NodeId, string>();
  /** Bumped on every change, so a reader can tell cheaply whether to look again. */
  version = 0;
  private readonly addresses = new Map<NodeId, MemberAddresses>();
  private readonly file: string | null;

  /** `dataDir` null: nothing is read or written (tests, embedding). */
  constructor(dataDir: string | null) {
    this.file = dataDir === null ? null : join(dataDir, 'members.json');
  }

  get size(): number {
    return this.addresses.size;
  }

  get(id: NodeId): MemberAddresses | undefined {
    return this.addresses.get(id);
  }

  entries(): IterableIterator<[NodeId, MemberAddresses]> {
    return this.addresses.entries();
  }

  /** Records `id`'s addresses (a later source wins). Returns whether anything changed. */
  learn(id: NodeId, addresses: MemberAddresses): boolean {
    checkMemberId(id);
    const known = this.addresses.get(id);
    if (
      known !== undefined &&
      known.peer.host === addresses.peer.host &&
      known.peer.port === addresses.peer.port &&
      known.clientUrl === addresses.clientUrl
    )
      return false;
    if (known === undefined && this.addresses.size >= membershipLimits.membersMax)
      throw new LimitExceededError(`at most ${membershipLimits.membersMax} members`);
    this.addresses.set(id, addresses);
    this.version++;
    if (addresses.clientUrl === null) this.clientUrls.delete(id);
    else this.clientUrls.set(id, addresses.clientUrl);
    return true;
  }

  forget(id: NodeId): boolean {
    this.clientUrls.delete(id);
    if (!this.addresses.delete(id)) return false;
    this.version++;
    return true;
  }

  /**
   * The transport's peer set: every member of `conf` but `self` whose address is known. A node that
   * joins knows no membership until the leader's snapshot arrives: it accepts every known address.
   */
  peersFor(conf: ConfState, self: NodeId): Map<NodeId, PeerAddress> {
    const peers = new Map<NodeId, PeerAddress>();
    const unconfigured = conf.voters.length === 0 && conf.learners.length === 0;
    for (const id of unconfigured ? this.addresses.keys() : [...conf.voters, ...conf.learners]) {
      const known = this.addresses.get(id);
      if (id !== self && known !== undefined) peers.set(id, known.peer);
    }
    return peers;
  }

  /** Reads `members.json` if there is one; a damaged file is an error, not an empty directory. */
  load(): boolean {
    if (this.file === null || !existsSync(this.file)) return false;
    let parsed: MembersFile;
    try {
      parsed = JSON.parse(readFileSync(this.file, 'utf8')) as MembersFile;
    } catch (error) {
      throw new InvalidArgumentError(`${this.file}: not JSON: ${(error as Error).message}`);
    }
    if (parsed?.version !== 1 || !Array.isArray(parsed.members))
      throw new InvalidArgumentError(`${this.file}: expected {"version":1,"members":[…]}`);
    for (const member of parsed.members) {
      this.learn(String(member.id), {
        peer: parsePeerAddress(String(member.peer)),
        clientUrl: member.clientUrl === null ? null : checkClientUrl(String(member.clientUrl)),
      });
    }
    return true;
  }

  /** Writes `members.json` atomically (temporary file, fsync, rename). Changes are rare. */
  save(): void {
    if (this.file === null) return;
    const content: MembersFile = {
      version: 1,
      members: [...this.addresses]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([id, addresses]) => ({
          id,
          peer: formatPeerAddress(addresses.peer),
          clientUrl: addresses.clientUrl,
        })),
    };
    const temporary = `${this.file}.tmp`;
    const fd = openSync(temporary, 'w', 0o644);
    try {
      writeSync(fd, `${JSON.stringify(content, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.file);
  }
}

/** What `Membership` needs from the node: its core, its clock and its transport, narrowly. */
export interface MembershipHost {
  readonly id: NodeId;
  status(): RaftStatus;
  proposeConfChange(change: ConfChange): ProposeResult;
  transferLeadership(to: NodeId): boolean;
  /** A turn of the node's loop, so a proposal leaves in the next Ready. */
  wake(): void;
  peerConnected(id: NodeId): boolean;
  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void;
  /** The lock table's copy of the members' contexts (what snapshots carry). */
  setTableMember(id: NodeId, context: string | null): void;
  /** This node was removed from the cluster. */
  onRemoved(): void;
  /** An app message to a peer; false when it could not be queued (no link). */
  sendPeer(to: NodeId, message: PeerBody): boolean;
}

/** A membership change a client asked for (docs/protocol.md "Membership requests"). */
export type AdminOp = AdminBody['op'];

interface ForwardWaiter {
  readonly op: AdminOp;
  readonly member: NodeId;
  ticksLeft: number;
  readonly resolve: () => void;
  readonly reject: (error: RaftlockError) => void;
}

interface ConfWaiter {
  readonly index: number;
  readonly term: number;
  readonly ticksLeft: { value: number };
  readonly resolve: () => void;
  readonly reject: (error: RaftlockError) => void;
}

interface TransferWaiter {
  readonly to: NodeId;
  ticksLeft: number;
  readonly resolve: () => void;
  readonly reject: (error: RaftlockError) => void;
}

export interface MembershipOptions {
  readonly host: MembershipHost;
  readonly directory: MemberDirectory;
  readonly log: Logger;
  readonly learnerCatchUpLagMax: number;
  readonly electionTimeoutTicks: number;
}

export class Membership {
  readonly directory: MemberDirectory;
  private readonly host: MembershipHost;
  private readonly log: Logger;
  private readonly options: MembershipOptions;
  private confWaiters: ConfWaiter[] = [];
  private transferWaiters: TransferWaiter[] = [];
  /** Changes this node handed to the leader, by forward id. */
  private readonly forwards = new Map<number, ForwardWaiter>();
  private nextForwardId = 1;
  private ticks = 0;
  /** The conf and directory version the transport's peer set was last built from. */
  private peersKey = '';
  private removed = false;
  /**
   * Peers that refused our link to them as "not a member" (transport `onPeerVerdict`), with the tick of
   * the first such refusal since they last accepted the link.
   */
  private readonly refusedSince = new Map<NodeId, number>();

  constructor(options: MembershipOptions) {
    this.options = options;
    this.host = options.host;
    this.directory = options.directory;
    this.log = options.log;
  }

  /** Hands the transport its first peer set. */
  start(): void {
    this.refreshPeers();
  }

  // ---------------------------------------------------------------- the applied stream

  /** A conf change entry applied here (before the core applies it at advance()). */
  onConfChangeApplied(index: number, term: number, change: ConfChange): void {
    if (change.type === 'remove') {
      this.host.setTableMember(change.node, null);
      if (change.node !== this.host.id && this.directory.forget(change.node)) this.directory.save();
    } else {
      const addresses = decodeMemberContext(change.context);
      if (addresses !== null) {
        // Table and directory learn it alike on every node: the context is in the log.
        this.host.setTableMember(change.node, change.context ?? null);
        if (this.directory.learn(change.node, addresses)) this.directory.save();
      }
    }
    this.log.info(
      { event: 'membership_changed', index, change: change.type, member: change.node },
      'membership changed',
    );
    const still: ConfWaiter[] = [];
    for (const waiter of this.confWaiters) {
      if (waiter.index > index) still.push(waiter);
      else if (waiter.index === index && waiter.term === term) waiter.resolve();
      else waiter.reject(new NotLeaderError('the membership change was overwritten by a new leader'));
    }
    this.confWaiters = still;
    // A change handed to the leader is answered when it applies here too: the leader's own answer may
    // never come (it removed itself, or lost its link to us as the change took effect).
    const op: AdminOp | null =
      change.type === 'addLearner' ? 'addMember' : change.type === 'remove' ? 'removeMember' : null;
    this.settleForwards((waiter) => waiter.op === op && waiter.member === change.node);
    if (change.type === 'remove' && change.node === this.host.id && !this.removed) {
      this.removed = true;
      this.log.warn(
        { event: 'member_removed', index },
        'this node was removed from the cluster; it takes no further part and stops',
      );
      this.host.onRemoved();
    }
    // The transport hears of it at the next tick: the core's conf changes only at advance().
  }

  /** A snapshot replaced the state: its members' contexts are the directory's newest knowledge. */
  onSnapshotInstalled(members: ReadonlyMap<string, string>): void {
    let changed = false;
    for (const [id, context] of members) {
      const addresses = decodeMemberContext(context);
      if (addresses !== null && id !== this.host.id && this.directory.learn(id, addresses)) changed = true;
    }
    if (changed) this.directory.save();
    this.refreshPeers();
  }

  /**
   * Hands the transport the peers of the core's conf, when it or an address changed. The core applies a
   * change at advance(), which may come a disk write after the apply: every tick looks again.
   */
  private refreshPeers(): void {
    const conf = this.host.status().conf;
    const key = `${conf.voters.join(',')}|${conf.learners.join(',')}|${this.directory.version}`;
    if (key === this.peersKey) return;
    this.peersKey = key;
    const peers = this.directory.peersFor(conf, this.host.id);
    const unknown = [...conf.voters, ...conf.learners].filter((id) => id !== this.host.id && !peers.has(id));
    if (unknown.length > 0)
      this.log.warn(
        { event: 'member_address_unknown', members: unknown },
        'no peer address for some members',
      );
    this.host.setPeers(peers);
  }

  private settleForwards(done: (waiter: ForwardWaiter) => boolean): void {
    for (const [id, waiter] of [...this.forwards]) {
      if (!done(waiter)) continue;
      this.forwards.delete(id);
      waiter.resolve();
    }
  }

  onRoleChanged(isLeader: boolean, leader: NodeId | null): void {
    if (leader !== null)
      this.settleForwards((waiter) => waiter.op === 'transferLeader' && waiter.member === leader);
    if (!isLeader && this.confWaiters.length > 0) {
      const waiters = this.confWaiters;
      this.confWaiters = [];
      for (const waiter of waiters)
        waiter.reject(
          new OutcomeUnknownError('leadership changed; the membership change may or may not apply'),
        );
    }
    if (leader !== null) {
      const still: TransferWaiter[] = [];
      for (const waiter of this.transferWaiters) {
        if (waiter.to === leader) waiter.resolve();
        else if (leader !== this.host.id)
          waiter.reject(new UnavailableError(`${leader} became leader instead`));
        else still.push(waiter);
      }
      this.transferWaiters = still;
    }
  }

  /** A peer accepted our link to it (member) or refused it because we are not in its configuration. */
  onPeerVerdict(peer: NodeId, member: boolean): void {
    if (member) this.refusedSince.delete(peer);
    else if (!this.refusedSince.has(peer)) this.refusedSince.set(peer, this.ticks);
  }

  /**
   * A node removed while it was down never applies its own removal: the leader no longer replicates to
   * it, and every member refuses its links. Once a majority of the other voters of its configuration
   * have refused it as "not a member" for `removedAwayElectionTimeouts` election timeouts, accepting
   * none since, it stops as a removed node. A majority cannot all be behind on the change: the removal
   * committed on a majority of the configuration that still held this node, and a member that had not
   * yet applied an addition of this node would accept it once it did.
   */
  private checkRemovedWhileAway(): void {
    if (this.removed || this.refusedSince.size === 0) return;
    const id = this.host.id;
    const conf = this.host.status().conf;
    if (!conf.voters.includes(id) && !conf.learners.includes(id)) return;
    const others = conf.voters.filter((voter) => voter !== id);
    if (others.length === 0) return;
    const ticksMin = membershipLimits.removedAwayElectionTimeouts * this.options.electionTimeoutTicks;
    const refusing = others.filter((voter) => {
      const since = this.refusedSince.get(voter);
      return since !== undefined && this.ticks - since >= ticksMin;
    });
    if (refusing.length < Math.floor(others.length / 2) + 1) return;
    this.removed = true;
    this.log.warn(
      { event: 'member_removed', refusedBy: refusing, voters: conf.voters },
      'a majority of the other voters refuse this node as not a member: it was removed while it was down; it stops',
    );
    this.host.onRemoved();
  }

  tick(): void {
    this.ticks++;
    if (!this.removed) this.refreshPeers();
    this.checkRemovedWhileAway();
    for (const waiter of this.confWaiters) waiter.ticksLeft.value--;
    const late = this.confWaiters.filter((waiter) => waiter.ticksLeft.value <= 0);
    if (late.length > 0) {
      this.confWaiters = this.confWaiters.filter((waiter) => waiter.ticksLeft.value > 0);
      for (const waiter of late)
        waiter.reject(new OutcomeUnknownError('the membership change did not apply in time; it may later'));
    }
    const expired = this.transferWaiters.filter((waiter) => --waiter.ticksLeft <= 0);
    if (expired.length > 0) {
      this.transferWaiters = this.transferWaiters.filter((waiter) => waiter.ticksLeft > 0);
      for (const waiter of expired)
        waiter.reject(new TimeoutError(`leadership did not move to ${waiter.to} in time`));
    }
    for (const [id, waiter] of [...this.forwards]) {
      if (--waiter.ticksLeft > 0) continue;
      this.forwards.delete(id);
      waiter.reject(
        new OutcomeUnknownError('the leader did not answer in time; the change may or may not apply'),
      );
    }
    if (this.ticks % membershipLimits.promotionCheckTicks === 0) this.maybePromote();
  }

  /** Leader: proposes `addVoter` for the first learner that caught up and is connected. */
  private maybePromote(): void {
    const status = this.host.status();
    if (status.role !== 'leader' || status.progress === undefined || status.leadTransferee !== null) return;
    if (status.conf.learners.length === 0 || status.conf.voters.length >= membershipLimits.votersMax) return;
    for (const learner of status.conf.learners) {
      const progress = status.progress[learner];
      if (progress === undefined || progress.match === 0 || !this.host.peerConnected(learner)) continue;
      if (progress.match < status.lastIndex - this.options.learnerCatchUpLagMax) continue;
      const result = this.host.proposeConfChange({ type: 'addVoter', node: learner });
      if (result.ok) {
        this.log.info(
          { event: 'learner_promoting', member: learner, match: progress.match, lastIndex: status.lastIndex },
          'learner caught up; promoting it to voter',
        );
        this.host.wake();
      }
      return; // one change at a time; CONF_CHANGE_PENDING simply waits for the next check
    }
  }

  // ---------------------------------------------------------------- admin requests

  /**
   * A client's membership change, asked on any node: run here when this node leads (or knows no leader:
   * NOT_LEADER), else handed to the leader over the peer link, which answers how it ended.
   */
  change(op: AdminOp, member: string, peerAddress = '', clientUrl = ''): Promise<void> {
    const leader = this.host.status().leader;
    if (leader === null || leader === this.host.id)
      return this.runChange({ op, member, peerAddress, clientUrl });
    if (this.forwards.size >= membershipLimits.adminWaitersMax)
      return Promise.reject(new LimitExceededError('too many membership changes waiting for the leader'));
    const id = this.nextForwardId++;
    const body: AdminBody = { id, op, member, peerAddress, clientUrl };
    if (!this.host.sendPeer(leader, { kind: 'admin', body }))
      return Promise.reject(new UnavailableError(`no link to the leader ${leader}; retry`));
    return new Promise((resolve, reject) => {
      this.forwards.set(id, {
        op,
        member,
        // Long enough for the leader's own wait for the change to apply, or for a transfer to finish.
        ticksLeft: membershipLimits.confChangeWaitTicks + 2 * this.options.electionTimeoutTicks,
        resolve,
        reject,
      });
    });
  }

  /** The leader's side of a forwarded change: run it, then tell the asker how it ended. */
  onAdminRequest(from: NodeId, body: AdminBody): void {
    const reply = (code: ErrorCode | '', message: string) =>
      this.host.sendPeer(from, {
        kind: 'adminResult',
        body: { id: body.id, code, message: message.slice(0, 512) },
      });
    const status = this.host.status();
    const work =
      status.role === 'leader'
        ? this.runChange(body)
        : Promise.reject(new NotLeaderError(`node ${this.host.id} is not the leader`));
    work.then(
      () => reply('', 'done'),
      (error: RaftlockError) => reply(error.code, error.message),
    );
  }

  /** The asker's side: the leader's answer to a forwarded change. */
  onAdminResult(_from: NodeId, body: AdminResultBody): void {
    const waiter = this.forwards.get(body.id);
    if (waiter === undefined) return;
    this.forwards.delete(body.id);
    if (body.code === '') waiter.resolve();
    else waiter.reject(errorFromCode(body.code, body.message));
  }

  private runChange(body: Omit<AdminBody, 'id'>): Promise<void> {
    switch (body.op) {
      case 'addMember':
        return this.add(body.member, body.peerAddress, body.clientUrl);
      case 'removeMember':
        return this.remove(body.member);
      case 'transferLeader':
        return this.transfer(body.member);
      default:
        return body.op satisfies never;
    }
  }

  /** This node's view of the members; match and lag only when it leads. */
  list(): MemberView[] {
    const status = this.host.status();
    const view = (id: NodeId, role: 'voter' | 'learner'): MemberView => {
      const addresses = this.directory.get(id);
      const progress = status.progress?.[id];
      const match = id === this.host.id && status.role === 'leader' ? status.lastIndex : progress?.match;
      return {
        id,
        role,
        peerAddress: addresses === undefined ? null : formatPeerAddress(addresses.peer),
        clientUrl: addresses?.clientUrl ?? null,
        leader: status.leader === id,
        ...(status.role === 'leader' && match !== undefined
          ? { matchIndex: match, lag: Math.max(0, status.lastIndex - match) }
          : {}),
      };
    };
    return [
      ...status.conf.voters.map((id) => view(id, 'voter')),
      ...status.conf.learners.map((id) => view(id, 'learner')),
    ];
  }

  /** Adds `id` as a learner with its addresses; resolves once the change applied here. */
  add(id: string, peerAddress: string, clientUrl: string): Promise<void> {
    try {
      checkMemberId(id);
      const peer = parsePeerAddress(peerAddress);
      checkClientUrl(clientUrl);
      const status = this.leaderStatus();
      if (status.conf.voters.includes(id) || status.conf.learners.includes(id))
        throw new InvalidArgumentError(`${id} is already a member`);
      if (status.conf.voters.length + status.conf.learners.length >= membershipLimits.membersMax)
        throw new LimitExceededError(`at most ${membershipLimits.membersMax} members`);
      for (const [other, addresses] of this.directory.entries()) {
        const member = status.conf.voters.includes(other) || status.conf.learners.includes(other);
        if (member && addresses.peer.host === peer.host && addresses.peer.port === peer.port)
          throw new InvalidArgumentError(`member ${other} already has peer address ${peerAddress}`);
      }
      return this.propose({
        type: 'addLearner',
        node: id,
        context: encodeMemberContext({ peer, clientUrl }),
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Removes `id` (voter or learner); refused when the voters left could not form a live quorum. */
  remove(id: string): Promise<void> {
    try {
      const status = this.leaderStatus();
      const isVoter = status.conf.voters.includes(id);
      if (!isVoter && !status.conf.learners.includes(id))
        throw new InvalidArgumentError(`${JSON.stringify(id.slice(0, 80))} is not a member`);
      if (isVoter) {
        const left = status.conf.voters.filter((voter) => voter !== id);
        if (left.length === 0) throw new InvalidArgumentError('cannot remove the last voter');
        const live = left.filter((voter) => voter === this.host.id || this.host.peerConnected(voter));
        if (live.length < Math.floor(left.length / 2) + 1)
          throw new UnavailableError(
            `removing ${id} would leave ${left.length} voters of which only ${live.length} are reachable: no quorum`,
          );
      }
      return this.propose({ type: 'remove', node: id });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Hands leadership to voter `id`; resolves once it leads. */
  transfer(id: string): Promise<void> {
    try {
      const status = this.leaderStatus();
      if (!status.conf.voters.includes(id))
        throw new InvalidArgumentError(`${JSON.stringify(id.slice(0, 80))} is not a voter`);
      if (id === this.host.id) return Promise.resolve();
      if (this.transferWaiters.length >= membershipLimits.adminWaitersMax)
        throw new LimitExceededError('too many leadership transfers waiting');
      if (!this.host.peerConnected(id)) throw new UnavailableError(`${id} is not connected`);
      if (!this.host.transferLeadership(id))
        throw new UnavailableError(`cannot transfer leadership to ${id} now`);
      this.host.wake();
      this.log.info({ event: 'leadership_transfer', to: id }, 'transferring leadership (admin request)');
      return new Promise((resolve, reject) =>
        this.transferWaiters.push({
          to: id,
          ticksLeft: 2 * this.options.electionTimeoutTicks,
          resolve,
          reject,
        }),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private leaderStatus(): RaftStatus {
    const status = this.host.status();
    if (status.role !== 'leader') throw new NotLeaderError(`node ${this.host.id} is not the leader`);
    return status;
  }

  private propose(change: ConfChange): Promise<void> {
    if (this.confWaiters.length >= membershipLimits.adminWaitersMax)
      return Promise.reject(new LimitExceededError('too many membership changes waiting'));
    const result = this.host.proposeConfChange(change);
    if (!result.ok) {
      switch (result.code) {
        case 'NOT_LEADER':
          return Promise.reject(new NotLeaderError(`node ${this.host.id} is not the leader`));
        case 'TRANSFERRING':
          return Promise.reject(new TransferringError('leadership is being transferred'));
        case 'CONF_CHANGE_PENDING':
          return Promise.reject(
            new UnavailableError('another membership change is still in progress; retry when it has applied'),
          );
        case 'INVALID_CONF_CHANGE':
          return Promise.reject(
            new InvalidArgumentError(`the cluster refuses ${change.type} ${change.node}`),
          );
        case 'PROPOSALS_FULL':
          return Promise.reject(new LimitExceededError('too many uncommitted proposals'));
        default:
          return Promise.reject(new UnavailableError(`refused: ${String(result.code)}`));
      }
    }
    this.log.info(
      { event: 'membership_proposed', index: result.index, change: change.type, member: change.node },
      'membership change proposed',
    );
    this.host.wake();
    // The core allows one change in flight, so waiters of different indexes never pile up.
    assert(
      this.confWaiters.every((waiter) => waiter.index <= result.index),
      'membership: a conf change proposed below one still waiting',
    );
    return new Promise((resolve, reject) => {
      this.confWaiters.push({
        index: result.index,
        term: result.term,
        ticksLeft: { value: membershipLimits.confChangeWaitTicks },
        resolve,
        reject,
      });
    });
  }

  /** Fails whatever waits (the node is stopping). */
  stop(error: RaftlockError): void {
    assert(this.confWaiters.length <= membershipLimits.adminWaitersMax, 'membership: waiters over bound');
    for (const waiter of this.confWaiters) waiter.reject(error);
    for (const waiter of this.transferWaiters) waiter.reject(error);
    for (const waiter of this.forwards.values()) waiter.reject(error);
    this.confWaiters = [];
    this.transferWaiters = [];
    this.forwards.clear();
  }
}
