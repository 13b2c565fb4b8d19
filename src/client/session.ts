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
import type WebSocket from 'ws';
import {
  AbortedError,
  InvalidArgumentError,
  type RaftlockError,
  SessionClosedError,
  TimeoutError,
  UnavailableError,
} from '../errors.ts';
import type { NoticeFrame, RequestBody, ResultBody, Scope, ServerFrame, WelcomeFrame } from '../protocol.ts';
import { ClientCloseCode } from '../protocol.ts';
import { decode, encode, errorFromWire, openConnection, type WireRaftlockError } from './connection.ts';

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
}

export interface LockOptions {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class SessionLock {
  private ownedFlag = true;
  private readonly controller = new AbortController();

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
  getSequence(): number {
    return this.sequence;
  }
  getScope(): SessionLockScope {
    return this.scope;
  }

  /** Fires, with the reason, when ownership ends. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Local and conservative (S10). Once false, false forever. */
  isOwned(): boolean {
    if (!this.ownedFlag) return false;
    if (now() >= this.safeUntil()) {
      this.end('expired');
      return false;
    }
    return true;
  }

  /** The monotonic (performance.now()) time up to which ownership is certain; -Infinity once lost. */
  safeUntil(): number {
    if (!this.ownedFlag) return Number.NEGATIVE_INFINITY;
    return this.session.safeUntilFor(this.scope);
  }

  equals(other: unknown): boolean {
    return (
      other instanceof SessionLock &&
      other.session === this.session &&
      other.name === this.name &&
      other.sequence === this.sequence &&
      other.scope === this.scope
    );
  }

  /** Releases the lock; resolves true if this session owned it (S6). */
  unlock(): Promise<boolean> {
    return this.session.unlockLock(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ownedFlag) await this.unlock().catch(() => undefined);
  }

  /** @internal */
  setScope(scope: SessionLockScope): void {
    this.scope = scope;
  }

  /** @internal */
  end(reason: string): boolean {
    if (!this.ownedFlag) return false;
    this.ownedFlag = false;
    this.controller.abort(reason);
    return true;
  }

  /** @internal */
  get ownedLocally(): boolean {
    return this.ownedFlag;
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
  /** Answered `waiting`: the grant comes as a notice. */
  waiting: boolean;
  cleanup: () => void;
}

type SessionState = 'connected' | 'reconnecting' | 'closed';

export class Session extends EventEmitter {
  private state: SessionState = 'connected';
  private ws: WebSocket;
  private url: string;
  private welcome: WelcomeFrame;
  private nextId = 1;
  private nextRequestNo = 1;
  private readonly requests = new Map<number, PendingRequest>();
  private readonly lockCalls = new Map<number, LockCall>();
  private readonly locks = new Map<string, SessionLock>();
  private lastConfirmedSendMs: number;
  private lastHeardMs: number;
  private disconnectedAtMs = 0;
  private pinger: NodeJS.Timeout | null = null;
  private readonly options: Required<ConnectOptions>;

  /** @internal */
  constructor(
    options: Required<ConnectOptions>,
    opened: { ws: WebSocket; welcome: WelcomeFrame; url: string; sentAtMs: number },
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

  // ---------------------------------------------------------------- API

  lock(
    name: string,
    scope: SessionLockScope = SessionLockScope.UNLOCK_ON_SESSION_LOSS,
    options: LockOptions = {},
  ): Promise<SessionLock> {
    if (this.state === 'closed') return Promise.reject(new SessionClosedError('session is closed'));
    if (typeof name !== 'string' || name.length === 0)
      return Promise.reject(new InvalidArgumentError('a lock name is a non-empty string'));
    if (scope !== 'UNLOCK_ON_SESSION_LOSS' && scope !== 'UNLOCK_ON_CONNECTION_LOSS')
      return Promise.reject(new InvalidArgumentError(`unknown scope ${String(scope)}`));
    const owned = this.locks.get(name);
    // S4: a lock we own answers at once with an equal SessionLock. A different scope goes to the
    // cluster, which may weaken the grant (S5, a scopeChanged notice).
    if (owned?.isOwned() && owned.getScope() === scope) return Promise.resolve(owned);
    if (options.signal?.aborted) return Promise.reject(new AbortedError('lock request aborted'));
    const requestNo = this.nextRequestNo++;
    return new Promise<SessionLock>((resolve, reject) => {
      const call: LockCall = {
        requestNo,
        name,
        scope,
        timeoutMs: options.timeoutMs,
        resolve,
        reject,
        waiting: false,
        cleanup: () => {},
      };
      const timers: (() => void)[] = [];
      if (options.timeoutMs !== undefined) {
        const timer = setTimeout(
          () => this.abandon(call, new TimeoutError(`lock ${name} timed out`)),
          options.timeoutMs,
        );
        timers.push(() => clearTimeout(timer));
      }
      if (options.signal !== undefined) {
        const signal = options.signal;
        const onAbort = () => this.abandon(call, new AbortedError(`lock ${name} aborted`));
        signal.addEventListener('abort', onAbort, { once: true });
        timers.push(() => signal.removeEventListener('abort', onAbort));
      }
      call.cleanup = () => {
        for (const clear of timers) clear();
      };
      this.lockCalls.set(requestNo, call);
      // While reconnecting, resync() sends every lock call once the session is back.
      if (this.state === 'connected') this.sendLock(call);
    });
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    try {
      await this.request({ op: 'close' }, true);
    } catch (error) {
      if ((error as RaftlockError).code !== 'SESSION_CLOSED') {
        this.shutdown(error as RaftlockError);
        throw error;
      }
    }
    this.shutdown(new SessionClosedError('session closed'));
  }

  /** Linearizable list of locks (S15). */
  async listLocks(options: { prefix?: string; after?: string; limit?: number } = {}) {
    const result = await this.request({ op: 'locks', ...options }, false);
    if (result.kind !== 'locks') throw new UnavailableError(`unexpected result ${result.kind}`);
    return result.locks;
  }

  // ---------------------------------------------------------------- internals used by SessionLock

  /** @internal */
  safeUntilFor(scope: SessionLockScope): number {
    if (this.state === 'closed') return Number.NEGATIVE_INFINITY;
    if (scope === 'UNLOCK_ON_CONNECTION_LOSS' && this.state !== 'connected') return Number.NEGATIVE_INFINITY;
    const bound =
      this.welcome.connectionTimeoutMs +
      (scope === 'UNLOCK_ON_SESSION_LOSS' ? this.welcome.session.reconnectionWindowMs : 0);
    return this.lastConfirmedSendMs + bound - this.options.safetyMarginMs;
  }

  /** @internal */
  async unlockLock(lock: SessionLock): Promise<boolean> {
    const name = lock.getName();
    const requestNo = this.nextRequestNo++;
    try {
      const result = await this.request(
        { op: 'unlock', requestNo, name, sequence: lock.getSequence() },
        true,
      );
      return result.kind === 'unlocked' && result.owned;
    } finally {
      // Whatever the answer, afterwards this session does not own it (S6).
      if (lock.end('unlocked') && this.locks.get(name) === lock) this.locks.delete(name);
    }
  }

  // ---------------------------------------------------------------- requests

  private request(body: RequestBody, resend: boolean): Promise<ResultBody> {
    if (this.state === 'closed') return Promise.reject(new SessionClosedError('session is closed'));
    return new Promise<ResultBody>((resolve, reject) => {
      const id = this.nextId++;
      const pending: PendingRequest = { body, resolve, reject, resend, sentAtMs: now() };
      this.requests.set(id, pending);
      if (this.state === 'connected') this.sendRequest(id, pending);
    });
  }

  private sendRequest(id: number, pending: PendingRequest): void {
    pending.sentAtMs = now();
    this.ws.send(encode({ t: 'req', id, ...pending.body }));
  }

  private sendLock(call: LockCall): void {
    this.request(
      {
        op: 'lock',
        requestNo: call.requestNo,
        name: call.name,
        scope: call.scope,
        timeoutMs: call.timeoutMs,
      },
      false,
    ).then(
      (result) => {
        if (!this.lockCalls.has(call.requestNo)) return;
        if (result.kind === 'granted') {
          this.onGranted(result.name, result.sequence, result.scope, [call.requestNo], result.held);
        } else if (result.kind === 'waiting') {
          call.waiting = true;
        }
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
    // S14: withdraw the wait; if the grant won the race, the table releases it.
    if (this.state !== 'closed') {
      this.request({ op: 'cancel', requestNo: call.requestNo }, true).catch(() => undefined);
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
    if (sentAtMs > this.lastConfirmedSendMs) this.lastConfirmedSendMs = sentAtMs;
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.t) {
      case 'res': {
        const pending = this.requests.get(frame.id);
        if (pending === undefined) return;
        this.requests.delete(frame.id);
        if (frame.ok) {
          // A replicated request's answer proves the leader heard us when we sent it.
          if (pending.body.op !== 'ping' && pending.body.op !== 'status') this.confirm(pending.sentAtMs);
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

  private hint: string | null = null;

  private onNotice(notice: NoticeFrame): void {
    switch (notice.notice) {
      case 'granted':
        this.onGranted(notice.name, notice.sequence, notice.scope, notice.requestNos, true);
        return;
      case 'lost': {
        const lock = this.locks.get(notice.name);
        if (lock === undefined || lock.getSequence() !== notice.sequence) return;
        this.locks.delete(notice.name);
        if (lock.end(notice.reason) && notice.reason !== 'unlock') this.emit('lockLost', lock, notice.reason);
        return;
      }
      case 'scopeChanged': {
        const lock = this.locks.get(notice.name);
        if (lock !== undefined && lock.getSequence() === notice.sequence) lock.setScope(notice.scope);
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
      case 'sessionClosed':
        this.shutdown(
          new SessionClosedError(`session ${notice.notice === 'sessionExpired' ? 'expired' : 'closed'}`),
        );
        return;
      default:
        notice satisfies never;
    }
  }

  private onGranted(
    name: string,
    sequence: number,
    scope: SessionLockScope,
    requestNos: readonly number[],
    held: boolean,
  ): void {
    let lock = this.locks.get(name);
    if (lock === undefined || lock.getSequence() !== sequence) {
      lock?.end('replaced');
      lock = new SessionLock(this, name, sequence, scope);
      if (held) this.locks.set(name, lock);
      else lock.end('released');
    } else if (lock.getScope() !== scope) lock.setScope(scope);
    for (const requestNo of requestNos) {
      const call = this.lockCalls.get(requestNo);
      if (call !== undefined) this.settleLock(call, lock);
    }
  }

  // ---------------------------------------------------------------- reconnect

  private onDisconnected(code: number): void {
    if (this.state !== 'connected') return;
    if (code === ClientCloseCode.sessionEnded) {
      this.shutdown(new SessionClosedError('session ended'));
      return;
    }
    this.state = 'reconnecting';
    this.disconnectedAtMs = now();
    for (const lock of [...this.locks.values()]) {
      if (lock.getScope() === 'UNLOCK_ON_CONNECTION_LOSS') {
        this.locks.delete(lock.getName());
        if (lock.end('connectionLost')) this.emit('lockLost', lock, 'connectionLost');
      }
    }
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
        this.shutdown(new SessionClosedError('could not reconnect within the reconnection window'));
        return;
      }
      const order = this.serverOrder();
      for (const url of order) {
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
          );
          if (this.state !== 'reconnecting') {
            opened.ws.close();
            return;
          }
          this.ws = opened.ws;
          this.url = opened.url;
          this.welcome = opened.welcome;
          this.lastHeardMs = now();
          this.confirm(sentAtMs);
          this.state = 'connected';
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
            this.shutdown(wire);
            return;
          }
          if (wire.leaderUrl !== undefined) this.hint = wire.leaderUrl;
        }
      }
      await sleep(backoffMs / 2 + Math.random() * (backoffMs / 2));
      backoffMs = Math.min(backoffMs * 2, 1_000);
    }
  }

  private serverOrder(): string[] {
    const servers = [...this.options.servers];
    const first = this.hint;
    const rest = servers.filter((server) => server !== first);
    return first === null ? rest : [first, ...rest];
  }

  /** After a resume: owned locks from the welcome, then every unanswered request again. */
  private resync(): void {
    const owned = new Map(this.welcome.locks.map((lock) => [lock.name, lock]));
    for (const [name, lock] of [...this.locks]) {
      const still = owned.get(name);
      if (still === undefined || still.sequence !== lock.getSequence()) {
        this.locks.delete(name);
        if (lock.end('released')) this.emit('lockLost', lock, 'released');
      }
    }
    for (const [id, pending] of this.requests) this.sendRequest(id, pending);
    for (const call of this.lockCalls.values()) this.sendLock(call);
  }

  private shutdown(error: RaftlockError): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
    for (const lock of this.locks.values()) lock.end('sessionClosed');
    this.locks.clear();
    for (const call of [...this.lockCalls.values()]) this.settleLock(call, error);
    for (const pending of this.requests.values()) pending.reject(error);
    this.requests.clear();
    this.ws.close(ClientCloseCode.normal);
    this.emit('closed', error);
  }
}

export async function connect(options: ConnectOptions): Promise<Session> {
  if (options.servers.length === 0) throw new InvalidArgumentError('connect needs at least one server');
  const full: Required<ConnectOptions> = {
    reconnectionWindowMs: 30_000,
    connectTimeoutMs: 2_000,
    connectDeadlineMs: 10_000,
    safetyMarginMs: 250,
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
        );
        return new Session(full, { ...opened, sentAtMs });
      } catch (error) {
        const wire = error as WireRaftlockError;
        lastError = wire;
        if (
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
