// The raftlock client: `connect()` → Session → SessionLock, with Diffusion's session-lock API names.
//
// Exactly-once across failover (C2): every replicated request carries (session, requestNo); after a
// reconnect the client re-sends everything unanswered and every lock call still waiting, with the same
// request numbers, and the lock table answers a duplicate with the first answer.
//
// isOwned() (S10) is answered locally and conservatively: it turns false — for good — on unlock, on a
// loss notice, on connection loss for UNLOCK_ON_CONNECTION_LOSS, and once the monotonic clock passes the
// last leader-confirmed keepalive's send time plus the bounds the cluster applies, less a safety margin.

import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import {
  AbortedError,
  InvalidArgumentError,
  ProtocolError,
  type RaftlockError,
  SessionClosedError,
  TimeoutError,
  UnavailableError,
} from '../errors.ts';
import { lockNameBytesMax } from '../limits.ts';
import type {
  LockView,
  MembersResult,
  NoticeFrame,
  RequestBody,
  ResultBody,
  Scope,
  ServerFrame,
  WelcomeFrame,
} from '../protocol.ts';
import { ClientCloseCode } from '../protocol.ts';
import {
  decode,
  encode,
  errorFromWire,
  type FrameSocket,
  openConnection,
  type WireRaftlockError,
} from './connection.ts';
import { ConnectionPool } from './pool.ts';

export const SessionLockScope = {
  UNLOCK_ON_SESSION_LOSS: 'UNLOCK_ON_SESSION_LOSS',
  UNLOCK_ON_CONNECTION_LOSS: 'UNLOCK_ON_CONNECTION_LOSS',
} as const;
export type SessionLockScope = Scope;

export interface ConnectOptions {
  readonly servers: readonly string[];
  readonly principal: string;
  readonly password: string;
  /** Asked-for reconnection window; the cluster's default (30 s) when absent. */
  readonly reconnectionWindowMs?: number;
  /** Per attempt to open a connection. Default 2000. */
  readonly connectTimeoutMs?: number;
  /** How long connect() keeps trying servers before it gives up. Default 10000. */
  readonly connectDeadlineMs?: number;
  /** Subtracted from every isOwned() deadline, for clock drift and scheduling delays. Default 250. */
  readonly safetyMarginMs?: number;
  /**
   * For `wss://` servers: the certificate authorities (PEM) to trust instead of the system's, e.g. the
   * `ca.pem` of a cluster started with `raftlock cluster up --tls`. Default: the system's CAs.
   */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /**
   * Shared connections: the sessions of one process that pass the same pool share one WebSocket per
   * server (the server must support them, or connecting fails with PROTOCOL_ERROR). Each session is still
   * a connection of its own for lock scopes, and losing the shared socket is a connection loss for every
   * session on it. Default: a WebSocket of its own.
   */
  readonly pool?: ConnectionPool;
}

/** ConnectOptions with every default filled in; `pool` stays optional. */
type FullConnectOptions = Required<Omit<ConnectOptions, 'pool'>> & Pick<ConnectOptions, 'pool'>;

export interface LockOptions {
  /** Aborting it withdraws the wait (S14); the call rejects with ABORTED. */
  readonly signal?: AbortSignal;
  /** Gives up after this long (S14); the call rejects with TIMEOUT. Integer 0 … 86 400 000; none by default. */
  readonly timeoutMs?: number;
}

/** Why a SessionLock stopped being owned: `lock.signal.reason` and the `lockLost` event's second argument. */
export type LockEndReason =
  /** This client's `unlock()` (or `await using`) ended it. */
  | 'unlocked'
  /** The cluster released it (S10 loss notices). */
  | 'unlock'
  | 'connectionLost'
  | 'sessionClosed'
  | 'sessionExpired'
  | 'cancelled'
  /** A resume showed the cluster no longer holds it for this session. */
  | 'released'
  /** The client's clock passed `safeUntil()` without a confirmed keepalive (S10). */
  | 'expired';

export interface SessionEvents {
  /** The connection dropped; the client is trying the servers again. */
  reconnecting: [];
  /** The session resumed on a (possibly different) server. */
  reconnected: [];
  /** The session ended: `close()`, expiry, or no reconnect within the window. Fires once. */
  closed: [error: RaftlockError];
  /** A lock ended without this client's `unlock()` or `close()`. */
  lockLost: [lock: SessionLock, reason: LockEndReason];
}

/** The most milliseconds `timeoutMs` may be: one day (the gateway's bound). */
const lockTimeoutMsMax = 24 * 60 * 60 * 1000;
const loneSurrogate = /\p{Surrogate}/u;

function checkLockArguments(
  name: unknown,
  scope: unknown,
  options: LockOptions,
): InvalidArgumentError | null {
  if (typeof name !== 'string' || name.length === 0)
    return new InvalidArgumentError('a lock name is a non-empty string');
  if (Buffer.byteLength(name) > lockNameBytesMax)
    return new InvalidArgumentError(`a lock name is at most ${lockNameBytesMax} UTF-8 bytes`);
  if (loneSurrogate.test(name)) return new InvalidArgumentError('a lock name must be well-formed Unicode');
  if (scope !== 'UNLOCK_ON_SESSION_LOSS' && scope !== 'UNLOCK_ON_CONNECTION_LOSS')
    return new InvalidArgumentError(`unknown scope ${String(scope)}`);
  const timeoutMs = options.timeoutMs;
  if (
    timeoutMs !== undefined &&
    !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= lockTimeoutMsMax)
  )
    return new InvalidArgumentError(`timeoutMs must be an integer in [0, ${lockTimeoutMsMax}]`);
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    return new InvalidArgumentError('signal must be an AbortSignal');
  return null;
}

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class SessionLock {
  private endReason: LockEndReason | null = null;
  /** Made on first use of `signal`: most locks never have one read, and an abort is an event dispatch. */
  private controller: AbortController | null = null;

  /** @internal */
  constructor(
    private readonly session: Session,
    private readonly name: string,
    private readonly sequence: number,
    private scope: SessionLockScope,
  ) {}

  getName(): string {
    return this.name;
  }
  /** The grant's fencing token (S8): greater than every earlier grant's of this name. */
  getSequence(): number {
    return this.sequence;
  }
  /** The grant's scope; S5 may have weakened it to UNLOCK_ON_CONNECTION_LOSS. */
  getScope(): SessionLockScope {
    return this.scope;
  }

  /** Aborts, with a `LockEndReason` as its reason, when ownership ends. */
  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.endReason !== null) this.controller.abort(this.endReason);
    }
    return this.controller.signal;
  }

  /** Local and conservative (S10). Once false, false forever. */
  isOwned(): boolean {
    if (this.endReason !== null) return false;
    if (now() >= this.session.safeUntilFor(this.scope)) {
      this.session.expireLocally(this);
      return false;
    }
    return true;
  }

  /** The monotonic (`performance.now()`) time up to which ownership is certain; -Infinity once lost. */
  safeUntil(): number {
    if (this.endReason !== null) return Number.NEGATIVE_INFINITY;
    return this.session.safeUntilFor(this.scope);
  }

  /** Same session, name, sequence and scope: what S4's repeat calls return. */
  equals(other: unknown): boolean {
    return (
      other instanceof SessionLock &&
      other.session === this.session &&
      other.name === this.name &&
      other.sequence === this.sequence &&
      other.scope === this.scope
    );
  }

  /** Releases the lock; resolves true if this session owned it (S6). Afterwards it is not owned. */
  unlock(): Promise<boolean> {
    return this.session.unlockLock(this);
  }

  /** `await using lock = await session.lock(…)`: unlocks at the end of the scope, never throws. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.endReason === null) await this.unlock().catch(() => undefined);
  }

  toString(): string {
    return `SessionLock(${this.name}, ${this.sequence}, ${this.scope})`;
  }

  /** @internal */
  setScope(scope: SessionLockScope): void {
    this.scope = scope;
  }

  /** @internal Ends ownership for good; true if it was owned until now. */
  end(reason: LockEndReason): boolean {
    if (this.endReason !== null) return false;
    this.endReason = reason;
    this.controller?.abort(reason);
    return true;
  }

  /** @internal */
  get ended(): boolean {
    return this.endReason !== null;
  }
}

interface PendingRequest {
  readonly body: RequestBody;
  readonly resolve: (result: ResultBody) => void;
  readonly reject: (error: RaftlockError) => void;
  /** Replicated requests are re-sent after a reconnect (same requestNo: applied once). */
  readonly resend: boolean;
  sentAtMs: number;
}

interface LockCall {
  readonly requestNo: number;
  readonly name: string;
  readonly scope: SessionLockScope;
  readonly timeoutMs: number | undefined;
  readonly resolve: (lock: SessionLock) => void;
  readonly reject: (error: RaftlockError) => void;
  cleanup: () => void;
}

type SessionState = 'connected' | 'reconnecting' | 'closed';

const CONNECTION: SessionLockScope = 'UNLOCK_ON_CONNECTION_LOSS';

const noCleanup = (): void => {};

export class Session extends EventEmitter<SessionEvents> {
  private state: SessionState = 'connected';
  /** close() was called: the locks it releases are not reported as lost. */
  private closing = false;
  private ws: FrameSocket;
  private url: string;
  private welcome: WelcomeFrame;
  private nextId = 1;
  private nextRequestNo = 1;
  private readonly requests = new Map<number, PendingRequest>();
  /** Lock calls not yet completed, by request number; re-sent after every reconnect. */
  private readonly lockCalls = new Map<number, LockCall>();
  private readonly locks = new Map<string, SessionLock>();
  /**
   * Abandoned calls whose cancel waits because another call of this session for the same name still
   * waits: all of a session's calls for a name share one place in the queue and one grant (S4), and a
   * cancel of a granted call would release that shared grant (S14). Cancelled with the last of them.
   */
  private readonly detached = new Map<string, number[]>();
  /** Request numbers whose cancel is on its way: a grant naming only these is released by the cancel. */
  private readonly cancelling = new Set<number>();
  /** Grants this client gave up locally (isOwned() expiry) whose fenced unlock is on its way. */
  private readonly expiring = new Map<string, number>();
  private lastConfirmedSendMs: number;
  private lastHeardMs: number;
  private disconnectedAtMs = 0;
  private pinger: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  /** When `expiryTimer` is due (performance.now() clock). */
  private expiryAtMs = 0;
  private hint: string | null = null;
  private readonly options: FullConnectOptions;

  /** @internal */
  constructor(
    options: FullConnectOptions,
    opened: { ws: FrameSocket; welcome: WelcomeFrame; url: string; sentAtMs: number },
  ) {
    super();
    this.options = options;
    this.ws = opened.ws;
    this.url = opened.url;
    this.welcome = opened.welcome;
    this.lastConfirmedSendMs = opened.sentAtMs;
    this.lastHeardMs = now();
    this.attach();
  }

  /** The cluster's id for this session (as `listLocks()` shows owners and waiters). */
  get sessionId(): number {
    return this.welcome.session.id;
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /** The server this session is connected to now. */
  get server(): string {
    return this.url;
  }

  /** The reconnection window the cluster granted this session (S11). */
  get reconnectionWindowMs(): number {
    return this.welcome.session.reconnectionWindowMs;
  }

  // ---------------------------------------------------------------- API

  /** Resolves once this session owns `name` (S3); see docs/client.md for S4, S5 and S14. */
  lock(
    name: string,
    scope: SessionLockScope = SessionLockScope.UNLOCK_ON_SESSION_LOSS,
    options: LockOptions = {},
  ): Promise<SessionLock> {
    if (this.state === 'closed') return Promise.reject(new SessionClosedError('session is closed'));
    const invalid = checkLockArguments(name, scope, options);
    if (invalid !== null) return Promise.reject(invalid);
    if (options.signal?.aborted) return Promise.reject(new AbortedError(`lock ${name} aborted`));
    const owned = this.locks.get(name);
    // S4: a lock this session owns answers at once with the same SessionLock. A call asking for a
    // weaker scope than the grant has goes to the cluster, which weakens the grant (S5).
    if (owned?.isOwned() && (owned.getScope() === scope || owned.getScope() === CONNECTION)) {
      return Promise.resolve(owned);
    }
    const requestNo = this.nextRequestNo++;
    return new Promise<SessionLock>((resolve, reject) => {
      const call: LockCall = {
        requestNo,
        name,
        scope,
        timeoutMs: options.timeoutMs,
        resolve,
        reject,
        cleanup: noCleanup,
      };
      if (options.timeoutMs !== undefined || options.signal !== undefined)
        call.cleanup = this.armAbandon(call, options);
      this.lockCalls.set(requestNo, call);
      // While reconnecting, resync() sends every lock call once the session is back.
      if (this.state === 'connected') this.sendLock(call);
    });
  }

  /** The timer and abort listener that abandon `call` (S14); returns what removes them. */
  private armAbandon(call: LockCall, options: LockOptions): () => void {
    const name = call.name;
    const clears: (() => void)[] = [];
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      const timer = setTimeout(
        () => this.abandon(call, new TimeoutError(`lock ${name}: no grant within ${timeoutMs} ms`)),
        timeoutMs,
      );
      clears.push(() => clearTimeout(timer));
    }
    if (options.signal !== undefined) {
      const signal = options.signal;
      const onAbort = () =>
        this.abandon(call, new AbortedError(`lock ${name} aborted`, { cause: signal.reason }));
      signal.addEventListener('abort', onAbort, { once: true });
      clears.push(() => signal.removeEventListener('abort', onAbort));
    }
    return () => {
      for (const clear of clears) clear();
    };
  }

  /** Closes the session: the cluster releases its locks and withdraws its waits (S11). */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.closing = true;
    try {
      await this.request({ op: 'close' }, true);
    } catch (error) {
      if ((error as RaftlockError).code !== 'SESSION_CLOSED') {
        this.shutdown(error as RaftlockError, 'sessionClosed');
        throw error;
      }
    }
    this.shutdown(new SessionClosedError('session closed'), 'sessionClosed');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close().catch(() => undefined);
  }

  /** Linearizable list of locks (S15). */
  async listLocks(
    options: { prefix?: string; after?: string; limit?: number } = {},
  ): Promise<readonly LockView[]> {
    const result = await this.request({ op: 'locks', ...options }, false);
    if (result.kind !== 'locks') throw new ProtocolError(`unexpected result ${result.kind}`);
    return result.locks;
  }

  // ---------------------------------------------------------------- membership (C5), `admin` only

  /**
   * The cluster's members as the connected node knows them (`matchIndex`/`lag` only when it leads).
   * PERMISSION_DENIED without the `admin` permission.
   */
  async members(): Promise<MembersResult> {
    const result = await this.request({ op: 'members' }, false);
    if (result.kind !== 'members') throw new ProtocolError(`unexpected result ${result.kind}`);
    return result;
  }

  /**
   * Adds a member as a learner; the leader promotes it to voter once it has caught up. Resolves once the
   * change applied. Any node hands it to the leader; one that knows no leader rejects NotLeaderError.
   */
  async addMember(member: { id: string; peerAddress: string; clientUrl: string }): Promise<void> {
    await this.adminChange({
      op: 'addMember',
      member: member.id,
      peerAddress: member.peerAddress,
      clientUrl: member.clientUrl,
    });
  }

  /** Removes a voter or learner; resolves once the change applied (any node, like addMember). */
  async removeMember(id: string): Promise<void> {
    await this.adminChange({ op: 'removeMember', member: id });
  }

  /** Hands leadership to voter `id`; resolves once it leads (any node, like addMember). */
  async transferLeader(id: string): Promise<void> {
    await this.adminChange({ op: 'transferLeader', member: id });
  }

  private async adminChange(body: RequestBody): Promise<void> {
    const result = await this.request(body, false);
    if (result.kind !== 'done') throw new ProtocolError(`unexpected result ${result.kind}`);
  }

  // ---------------------------------------------------------------- internals used by SessionLock

  /** @internal The S10 deadline for a lock of `scope`. */
  safeUntilFor(scope: SessionLockScope): number {
    if (this.state === 'closed') return Number.NEGATIVE_INFINITY;
    const windowMs = this.welcome.session.reconnectionWindowMs;
    if (this.state === 'connected') {
      const boundMs = this.welcome.connectionTimeoutMs + (scope === CONNECTION ? 0 : windowMs);
      return this.lastConfirmedSendMs + boundMs - this.options.safetyMarginMs;
    }
    // Disconnected. A closed socket is reported lost at once, so the cluster may have started the
    // reconnection window as early as right after our last confirmed keepalive: adding the
    // connection-loss bound on top would no longer be conservative.
    if (scope === CONNECTION) return Number.NEGATIVE_INFINITY;
    return this.lastConfirmedSendMs + windowMs - this.options.safetyMarginMs;
  }

  /** @internal isOwned() found the S10 deadline passed: lost for good, and given back to the cluster. */
  expireLocally(lock: SessionLock): void {
    if (!lock.end('expired')) return;
    const name = lock.getName();
    if (this.locks.get(name) === lock) this.locks.delete(name);
    queueMicrotask(() => this.emit('lockLost', lock, 'expired'));
    if (this.state === 'closed' || (lock.getScope() === CONNECTION && this.state !== 'connected')) return;
    // The cluster may still count this session as owner; release that grant so a later lock() call
    // gets a new one rather than this grant, which we already reported as lost.
    const sequence = lock.getSequence();
    this.expiring.set(name, sequence);
    this.request({ op: 'unlock', requestNo: this.nextRequestNo++, name, sequence }, true)
      .catch(() => undefined)
      .finally(() => {
        if (this.expiring.get(name) === sequence) this.expiring.delete(name);
      });
  }

  /** @internal */
  async unlockLock(lock: SessionLock): Promise<boolean> {
    const name = lock.getName();
    // From the moment of the call the cluster may release it: not owned any more (S6, S10).
    lock.end('unlocked');
    if (this.locks.get(name) === lock) this.locks.delete(name);
    const result = await this.request(
      { op: 'unlock', requestNo: this.nextRequestNo++, name, sequence: lock.getSequence() },
      true,
    );
    return result.kind === 'unlocked' && result.owned;
  }

  // ---------------------------------------------------------------- requests

  private request(body: RequestBody, resend: boolean): Promise<ResultBody> {
    if (this.state === 'closed') return Promise.reject(new SessionClosedError('session is closed'));
    return new Promise<ResultBody>((resolve, reject) => this.send(body, resend, resolve, reject));
  }

  /**
   * `request()` with callbacks, for this class's own calls: they run as the answer is read, in the order
   * of the frames on the wire, with no promise and no microtask between (a lock → unlock loop makes two
   * requests per cycle). Only while the session is not closed.
   */
  private send(
    body: RequestBody,
    resend: boolean,
    resolve: (result: ResultBody) => void,
    reject: (error: RaftlockError) => void,
  ): void {
    const id = this.nextId++;
    const pending: PendingRequest = { body, resolve, reject, resend, sentAtMs: now() };
    this.requests.set(id, pending);
    if (this.state === 'connected') this.sendRequest(id, pending);
  }

  private sendRequest(id: number, pending: PendingRequest): void {
    pending.sentAtMs = now();
    this.ws.send(encode({ t: 'req', id, ...pending.body }));
  }

  private sendLock(call: LockCall): void {
    if (call.scope === CONNECTION) {
      // S5, S10: the cluster will weaken a held grant to this scope; count with it from now on.
      const held = this.locks.get(call.name);
      if (held !== undefined && held.getScope() !== CONNECTION) {
        held.setScope(CONNECTION);
        this.scheduleExpiry();
      }
    }
    if (this.state === 'closed') {
      this.settleLock(call, new SessionClosedError('session is closed'));
      return;
    }
    this.send(
      {
        op: 'lock',
        requestNo: call.requestNo,
        name: call.name,
        scope: call.scope,
        timeoutMs: call.timeoutMs,
      },
      false,
      (result) => {
        // `waiting`: the grant comes as a notice naming this request number.
        if (result.kind !== 'granted') return;
        // An immediate grant comes only in this answer, unless the cluster had more to say about the lock
        // in the same step: then a `granted` notice came first and settled the call. An abandoned call's
        // grant is still ours to track (S14), as a notice would have made it.
        const requestNo = call.requestNo;
        if (
          this.lockCalls.has(requestNo) ||
          this.cancelling.has(requestNo) ||
          this.detached.get(call.name)?.includes(requestNo) === true
        )
          this.onGranted(result.name, result.sequence, result.scope, [requestNo], result.held);
      },
      (error: RaftlockError) => {
        // A lock call in flight when the connection dropped is re-sent after the reconnect.
        if (error.code === 'CONNECTION_LOST' && this.state === 'reconnecting') return;
        this.settleLock(call, error);
      },
    );
  }

  private abandon(call: LockCall, error: RaftlockError): void {
    if (!this.lockCalls.has(call.requestNo)) return;
    this.settleLock(call, error);
    if (this.state === 'closed') return;
    const name = call.name;
    const detached = this.detached.get(name) ?? [];
    detached.push(call.requestNo);
    for (const other of this.lockCalls.values()) {
      if (other.name !== name) continue;
      this.detached.set(name, detached);
      return;
    }
    this.detached.delete(name);
    // S14: withdraw the wait; if the grant won the race, the cluster releases it again.
    for (const requestNo of detached) {
      this.cancelling.add(requestNo);
      this.request({ op: 'cancel', requestNo }, true)
        .catch(() => undefined)
        .finally(() => this.cancelling.delete(requestNo));
    }
  }

  private settleLock(call: LockCall, outcome: RaftlockError | SessionLock): void {
    if (!this.lockCalls.delete(call.requestNo)) return;
    call.cleanup();
    if (outcome instanceof SessionLock) call.resolve(outcome);
    else call.reject(outcome);
  }

  // ---------------------------------------------------------------- frames

  private attach(): void {
    const ws = this.ws;
    ws.on('message', (data) => {
      if (ws !== this.ws) return;
      this.lastHeardMs = now();
      let frame: ServerFrame;
      try {
        frame = decode(data);
      } catch {
        ws.terminate();
        return;
      }
      this.onFrame(frame);
    });
    ws.on('close', (code) => {
      if (ws !== this.ws) return;
      this.onDisconnected(code);
    });
    ws.on('error', () => undefined);
    const interval = Math.max(100, Math.floor(this.welcome.connectionTimeoutMs / 4));
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = setInterval(() => this.keepalive(), interval);
  }

  private keepalive(): void {
    if (this.state !== 'connected') return;
    if (now() - this.lastHeardMs > this.welcome.connectionTimeoutMs) {
      // The node went quiet: drop it and find another.
      this.ws.terminate();
      return;
    }
    const sentAtMs = now();
    this.request({ op: 'ping' }, false).then(
      (result) => {
        if (result.kind === 'pong' && result.confirmed) this.confirm(sentAtMs);
      },
      () => undefined,
    );
  }

  private confirm(sentAtMs: number): void {
    if (sentAtMs <= this.lastConfirmedSendMs) return;
    this.lastConfirmedSendMs = sentAtMs;
    this.scheduleExpiry();
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.t) {
      case 'res': {
        const pending = this.requests.get(frame.id);
        if (pending === undefined) return;
        this.requests.delete(frame.id);
        if (frame.ok) {
          // A replicated request's answer proves the leader heard us when we sent it.
          if (!unconfirmingOps.has(pending.body.op)) this.confirm(pending.sentAtMs);
          pending.resolve(frame.result);
        } else pending.reject(errorFromWire(frame.error));
        return;
      }
      case 'notice':
        this.onNotice(frame);
        return;
      case 'error':
        // The node is about to close the socket; a NOT_LEADER hint tells us where to go.
        if (frame.leaderUrl !== undefined) this.hint = frame.leaderUrl;
        return;
      case 'welcome':
        return;
      default:
        frame satisfies never;
    }
  }

  private onNotice(notice: NoticeFrame): void {
    switch (notice.notice) {
      case 'granted':
        this.onGranted(notice.name, notice.sequence, notice.scope, notice.requestNos, true);
        return;
      case 'lost': {
        const lock = this.locks.get(notice.name);
        if (lock === undefined || lock.getSequence() !== notice.sequence) return;
        this.locks.delete(notice.name);
        this.lose(lock, lossReason(notice.reason));
        this.scheduleExpiry();
        return;
      }
      case 'scopeChanged': {
        const lock = this.locks.get(notice.name);
        if (lock !== undefined && lock.getSequence() === notice.sequence) {
          lock.setScope(notice.scope);
          this.scheduleExpiry();
        }
        return;
      }
      case 'waitEnded': {
        const call = this.lockCalls.get(notice.requestNo);
        if (call !== undefined)
          this.settleLock(
            call,
            errorFromWire({ code: notice.code, message: `lock ${notice.name}: ${notice.reason}` }),
          );
        return;
      }
      case 'sessionExpired':
        this.shutdown(new SessionClosedError('session expired'), 'sessionExpired');
        return;
      case 'sessionClosed':
        this.shutdown(new SessionClosedError('session closed'), 'sessionClosed');
        return;
      default:
        notice satisfies never;
    }
  }

  /** Ends a lock for `reason`; reports it unless this client's own unlock() or close() caused it. */
  private lose(lock: SessionLock, reason: LockEndReason): void {
    if (lock.end(reason) && reason !== 'unlock' && !this.closing) this.emit('lockLost', lock, reason);
  }

  private onGranted(
    name: string,
    sequence: number,
    scope: SessionLockScope,
    requestNos: readonly number[],
    held: boolean,
  ): void {
    const detached = this.detached.get(name);
    if (detached !== undefined) {
      const left = detached.filter((requestNo) => !requestNos.includes(requestNo));
      if (left.length === 0) this.detached.delete(name);
      else this.detached.set(name, left);
    }
    const calls: LockCall[] = [];
    for (const requestNo of requestNos) {
      const call = this.lockCalls.get(requestNo);
      if (call !== undefined) calls.push(call);
    }
    let lock = this.locks.get(name);
    if (lock !== undefined && lock.getSequence() === sequence) {
      if (lock.getScope() !== scope) lock.setScope(scope);
    } else {
      // S14: the grant won the race with our cancel, which releases it; nobody waits for it here.
      if (calls.length === 0 && requestNos.every((requestNo) => this.cancelling.has(requestNo))) return;
      if (lock !== undefined) {
        // A newer grant: we missed the end of the old one.
        this.locks.delete(name);
        this.lose(lock, 'released');
      }
      lock = new SessionLock(this, name, sequence, scope);
      // A grant we gave up locally (S10) never turns owned again; its unlock is on its way.
      if (held && this.expiring.get(name) !== sequence) this.locks.set(name, lock);
      else lock.end('released');
    }
    this.scheduleExpiry();
    for (const call of calls) this.settleLock(call, lock);
  }

  /** Fires lock.signal and `lockLost` when the S10 deadline passes, not only when isOwned() is asked. */
  private scheduleExpiry(): void {
    if (this.state === 'closed') {
      if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
      this.expiryTimer = null;
      return;
    }
    let earliestMs = Number.POSITIVE_INFINITY;
    for (const lock of this.locks.values()) earliestMs = Math.min(earliestMs, lock.safeUntil());
    // A timer due no later than the earliest deadline stays: firing early only checks and re-arms. So a
    // grant or unlock, whose deadlines are those of the session's last confirmation, rarely re-arms it.
    // With no lock left, an armed timer stays too: it fires once, finds nothing and stops — cheaper than
    // clearing it now and arming a new one at the next grant, in a loop of lock → unlock.
    if (
      this.expiryTimer !== null &&
      (this.expiryAtMs <= earliestMs || earliestMs === Number.POSITIVE_INFINITY)
    )
      return;
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    if (earliestMs === Number.POSITIVE_INFINITY) return;
    const delayMs = Math.max(1, Math.ceil(earliestMs - now()));
    this.expiryAtMs = now() + delayMs;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      for (const lock of [...this.locks.values()]) lock.isOwned();
      this.scheduleExpiry();
    }, delayMs);
    this.expiryTimer.unref();
  }

  // ---------------------------------------------------------------- reconnect

  private onDisconnected(code: number): void {
    if (this.state !== 'connected') return;
    if (code === ClientCloseCode.sessionEnded) {
      this.shutdown(new SessionClosedError('session ended'), 'sessionClosed');
      return;
    }
    this.state = 'reconnecting';
    this.disconnectedAtMs = now();
    for (const lock of [...this.locks.values()]) {
      if (lock.getScope() === CONNECTION) {
        this.locks.delete(lock.getName());
        this.lose(lock, 'connectionLost');
      }
    }
    this.scheduleExpiry();
    // Unanswered reads and pings fail; replicated requests wait to be re-sent.
    for (const [id, pending] of this.requests) {
      if (pending.resend) continue;
      this.requests.delete(id);
      pending.reject(errorFromWire({ code: 'CONNECTION_LOST', message: 'connection lost' }));
    }
    this.emit('reconnecting');
    void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    let backoffMs = 50;
    const windowMs = this.welcome.session.reconnectionWindowMs;
    while (this.state === 'reconnecting') {
      if (now() - this.disconnectedAtMs > windowMs) {
        this.shutdown(
          new SessionClosedError('could not reconnect within the reconnection window'),
          'sessionExpired',
        );
        return;
      }
      for (const url of this.serverOrder()) {
        if (this.state !== 'reconnecting') return;
        const sentAtMs = now();
        try {
          const opened = await openConnection(
            url,
            {
              principal: this.options.principal,
              password: this.options.password,
              session: { id: this.welcome.session.id, token: this.welcome.session.token },
            },
            this.options.connectTimeoutMs,
            this.options.ca,
            this.options.pool,
          );
          if (this.state !== 'reconnecting') {
            opened.ws.close();
            return;
          }
          this.ws = opened.ws;
          this.url = opened.url;
          this.welcome = opened.welcome;
          this.lastHeardMs = now();
          this.state = 'connected';
          this.confirm(sentAtMs);
          this.hint = null;
          this.attach();
          this.resync();
          this.emit('reconnected');
          return;
        } catch (error) {
          const wire = error as WireRaftlockError;
          if (
            wire.code === 'SESSION_CLOSED' ||
            wire.code === 'SESSION_NOT_FOUND' ||
            wire.code === 'AUTHENTICATION_FAILED'
          ) {
            this.shutdown(wire, 'sessionExpired');
            return;
          }
          if (wire.leaderUrl !== undefined) {
            this.hint = wire.leaderUrl;
            break;
          }
        }
      }
      if (this.hint === null) {
        await sleep(backoffMs / 2 + Math.random() * (backoffMs / 2));
        backoffMs = Math.min(backoffMs * 2, 1_000);
      }
    }
  }

  private serverOrder(): string[] {
    const first = this.hint;
    this.hint = null;
    const rest = this.options.servers.filter((server) => server !== first);
    return first === null ? rest : [first, ...rest];
  }

  /** After a resume: owned locks from the welcome, then every unanswered request again. */
  private resync(): void {
    const owned = new Map(this.welcome.locks.map((lock) => [lock.name, lock]));
    for (const [name, lock] of [...this.locks]) {
      const still = owned.get(name);
      if (still === undefined || still.sequence !== lock.getSequence()) {
        this.locks.delete(name);
        this.lose(lock, 'released');
      } else if (still.scope !== lock.getScope()) lock.setScope(still.scope);
    }
    this.scheduleExpiry();
    for (const [id, pending] of this.requests) this.sendRequest(id, pending);
    for (const call of this.lockCalls.values()) this.sendLock(call);
  }

  private shutdown(error: RaftlockError, reason: LockEndReason): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    const locks = [...this.locks.values()];
    this.locks.clear();
    for (const lock of locks) this.lose(lock, reason);
    for (const call of [...this.lockCalls.values()]) this.settleLock(call, error);
    for (const pending of this.requests.values()) pending.reject(error);
    this.requests.clear();
    this.ws.close(ClientCloseCode.normal);
    this.emit('closed', error);
  }
}

/** Answers that may come from a node that does not lead: they prove nothing about the leader (S10). */
const unconfirmingOps: ReadonlySet<string> = new Set([
  'ping',
  'status',
  'members',
  'addMember',
  'removeMember',
  'transferLeader',
]);

/** The cluster's loss reasons (docs/protocol.md), as LockEndReasons. */
function lossReason(reason: string): LockEndReason {
  switch (reason) {
    case 'unlock':
    case 'connectionLost':
    case 'sessionClosed':
    case 'sessionExpired':
    case 'cancelled':
      return reason;
    default:
      return 'released';
  }
}

export async function connect(options: ConnectOptions): Promise<Session> {
  if (!Array.isArray(options.servers) || options.servers.length === 0)
    throw new InvalidArgumentError('connect needs at least one server URL');
  for (const server of options.servers)
    if (typeof server !== 'string' || !/^wss?:\/\//.test(server))
      throw new InvalidArgumentError(`a server is a ws:// or wss:// URL, not ${String(server)}`);
  for (const key of ['connectTimeoutMs', 'connectDeadlineMs', 'safetyMarginMs'] as const) {
    const value = options[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0))
      throw new InvalidArgumentError(`${key} must be a non-negative number`);
  }
  const pool = options.pool;
  if (pool !== undefined && !(pool instanceof ConnectionPool))
    throw new InvalidArgumentError('pool must be a ConnectionPool');
  if (pool?.closed) throw new SessionClosedError('the connection pool is closed');
  const full: FullConnectOptions = {
    reconnectionWindowMs: 30_000,
    connectTimeoutMs: 2_000,
    connectDeadlineMs: 10_000,
    safetyMarginMs: 250,
    ca: [],
    ...options,
  };
  const deadline = now() + full.connectDeadlineMs;
  let hint: string | null = null;
  let lastError: RaftlockError = new UnavailableError('no server answered');
  let backoffMs = 50;
  while (now() < deadline) {
    const order =
      hint === null ? [...full.servers] : [hint, ...full.servers.filter((server) => server !== hint)];
    hint = null;
    for (const url of order) {
      const sentAtMs = now();
      try {
        const opened = await openConnection(
          url,
          {
            principal: full.principal,
            password: full.password,
            ...(options.reconnectionWindowMs === undefined
              ? {}
              : { reconnectionWindowMs: options.reconnectionWindowMs }),
          },
          full.connectTimeoutMs,
          full.ca,
          full.pool,
        );
        return new Session(full, { ...opened, sentAtMs });
      } catch (error) {
        const wire = error as WireRaftlockError;
        lastError = wire;
        if (
          pool?.closed ||
          wire.code === 'AUTHENTICATION_FAILED' ||
          wire.code === 'INVALID_ARGUMENT' ||
          wire.code === 'PROTOCOL_ERROR'
        )
          throw wire;
        if (wire.leaderUrl !== undefined) {
          hint = wire.leaderUrl;
          break;
        }
      }
    }
    if (hint === null) {
      await sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, 500);
    }
  }
  throw lastError;
}
