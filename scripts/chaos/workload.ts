// The chaos clients: workers, each with its own session, looping lock → guarded writes → unlock on a few
// hot names with both scopes, recording everything into the history. A guarded write is the pattern
// docs/client.md recommends: check `isOwned()`, then write to a resource fenced by the grant's sequence,
// in the same synchronous step — so a write the resource rejects as stale is an S10 violation.

import {
  ConnectionPool,
  connect,
  type RaftlockError,
  type Session,
  type SessionLock,
} from '../../src/client/index.ts';
import type { HistoryRecorder } from './history.ts';

/** A resource that rejects writes carrying a lower sequence than one it accepted (a fencing token). */
export class FencedResource {
  private readonly highest = new Map<string, number>();
  accepted = 0;
  rejected = 0;

  write(name: string, sequence: number): boolean {
    const highest = this.highest.get(name) ?? 0;
    if (sequence < highest) {
      this.rejected++;
      return false;
    }
    this.highest.set(name, sequence);
    this.accepted++;
    return true;
  }
}

export interface HeldGrant {
  readonly name: string;
  readonly session: number;
  readonly sequence: number;
}

export interface WorkloadOptions {
  readonly urls: readonly string[];
  readonly names: readonly string[];
  readonly workers: number;
  readonly recorder: HistoryRecorder;
  readonly random: () => number;
  /** How long a worker holds a lock, spread over a few guarded writes. */
  readonly holdMs: number;
  readonly lockTimeoutMs: number;
  readonly reconnectionWindowMs: number;
}

export interface WorkloadStats {
  cycles: number;
  grants: number;
  acquireErrors: Map<string, number>;
  releaseErrors: Map<string, number>;
  unlockedNotOwned: number;
  locksLost: Map<string, number>;
  sessionsOpened: number;
  sessionsClosedByCluster: number;
  reconnects: number;
  connectFailures: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const codeOf = (error: unknown) => (error as RaftlockError)?.code ?? String(error);
const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

/** Errors after which the acquire certainly left no grant behind (S14 withdraws or releases it). */
const definite = new Set(['TIMEOUT', 'ABORTED', 'INVALID_ARGUMENT', 'PERMISSION_DENIED', 'LIMIT_EXCEEDED']);

export class Workload {
  readonly resource = new FencedResource();
  readonly stats: WorkloadStats = {
    cycles: 0,
    grants: 0,
    acquireErrors: new Map(),
    releaseErrors: new Map(),
    unlockedNotOwned: 0,
    locksLost: new Map(),
    sessionsOpened: 0,
    sessionsClosedByCluster: 0,
    reconnects: 0,
    connectFailures: 0,
  };
  /** The grant each worker holds right now (between its acquire's ok and its unlock call). */
  private readonly current = new Map<number, { lock: SessionLock; session: number; name: string }>();
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly sessions = new Map<number, Session>();
  /**
   * Odd-numbered workers' sessions share WebSockets (one per node, docs/protocol.md "Shared
   * connections"), so every fault also hits sessions whose connection is a channel: a cut socket is the
   * connection loss of every session on it.
   */
  private readonly pool = new ConnectionPool();

  constructor(private readonly options: WorkloadOptions) {}

  start(): void {
    this.running = true;
    for (let worker = 0; worker < this.options.workers; worker++) this.loops.push(this.loop(worker));
  }

  /** Stops the loops after their current cycle, then closes every session (recorded: it releases). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    const recorder = this.options.recorder;
    await Promise.all(
      [...this.sessions].map(async ([worker, session]) => {
        if (session.isClosed) return;
        recorder.add({
          f: 'close',
          type: 'invoke',
          process: worker,
          session: session.sessionId,
          timeMs: recorder.now(),
        });
        try {
          await withTimeout(session.close(), 15_000);
          recorder.add({
            f: 'close',
            type: 'ok',
            process: worker,
            session: session.sessionId,
            timeMs: recorder.now(),
          });
        } catch (error) {
          recorder.add({
            f: 'close',
            type: 'info',
            process: worker,
            session: session.sessionId,
            timeMs: recorder.now(),
            error: codeOf(error),
          });
        }
      }),
    );
    await this.pool.close();
  }

  /** Grants whose `isOwned()` is true at this instant (and so may not be granted to anyone else, S10). */
  held(): HeldGrant[] {
    const held: HeldGrant[] = [];
    for (const { lock, session, name } of this.current.values())
      if (lock.isOwned()) held.push({ name, session, sequence: lock.getSequence() });
    return held;
  }

  private async session(worker: number): Promise<Session | null> {
    const current = this.sessions.get(worker);
    if (current !== undefined && !current.isClosed) return current;
    try {
      // Spread the sessions over the nodes: a worker starts at its own node of the list.
      const urls = this.options.urls;
      const first = (worker + this.stats.sessionsOpened) % urls.length;
      const session = await connect({
        servers: [...urls.slice(first), ...urls.slice(0, first)],
        principal: 'control',
        password: 'password',
        reconnectionWindowMs: this.options.reconnectionWindowMs,
        connectDeadlineMs: 5_000,
        ...(worker % 2 === 1 ? { pool: this.pool } : {}),
      });
      session.on('closed', (error) => {
        if (error.code === 'SESSION_CLOSED' && this.running) this.stats.sessionsClosedByCluster++;
      });
      session.on('reconnected', () => this.stats.reconnects++);
      session.on('lockLost', (_lock, reason) => bump(this.stats.locksLost, reason));
      this.sessions.set(worker, session);
      this.stats.sessionsOpened++;
      return session;
    } catch {
      this.stats.connectFailures++;
      return null;
    }
  }

  private async loop(worker: number): Promise<void> {
    const { names, random, recorder, holdMs, lockTimeoutMs } = this.options;
    while (this.running) {
      const session = await this.session(worker);
      if (session === null) {
        await sleep(200);
        continue;
      }
      const name = names[Math.floor(random() * names.length)]!;
      const scope = random() < 0.5 ? 'UNLOCK_ON_SESSION_LOSS' : 'UNLOCK_ON_CONNECTION_LOSS';
      const sessionId = session.sessionId;
      recorder.add({
        f: 'acquire',
        type: 'invoke',
        process: worker,
        session: sessionId,
        name,
        scope,
        timeMs: recorder.now(),
      });
      let lock: SessionLock;
      try {
        lock = await session.lock(name, scope, { timeoutMs: lockTimeoutMs });
      } catch (error) {
        const code = codeOf(error);
        bump(this.stats.acquireErrors, code);
        recorder.add({
          f: 'acquire',
          type: definite.has(code) ? 'fail' : 'info',
          process: worker,
          session: sessionId,
          name,
          timeMs: recorder.now(),
          error: code,
        });
        await sleep(20 + random() * 80);
        continue;
      }
      const okMs = recorder.now();
      const sequence = lock.getSequence();
      recorder.add({
        f: 'acquire',
        type: 'ok',
        process: worker,
        session: sessionId,
        name,
        scope: lock.getScope(),
        sequence,
        timeMs: okMs,
      });
      this.stats.grants++;
      // A grant can arrive already ended (a retried acquire answered held: false after a reconnect):
      // then it was never owned, and its ownership interval is empty (-1).
      const seen = { lastOwnedMs: lock.isOwned() ? okMs : -1 };
      const onEnd = () =>
        recorder.add({
          f: 'end',
          type: 'ok',
          process: worker,
          session: sessionId,
          name,
          sequence,
          reason: String(lock.signal.reason),
          lastOwnedMs: seen.lastOwnedMs,
          timeMs: recorder.now(),
        });
      if (lock.signal.aborted) onEnd();
      else lock.signal.addEventListener('abort', onEnd, { once: true });
      this.current.set(worker, { lock, session: sessionId, name });

      // Hold it: a few guarded writes, each right after isOwned() said yes.
      const writes = 3;
      for (let i = 0; i < writes; i++) {
        if (!lock.isOwned()) break;
        seen.lastOwnedMs = recorder.now();
        const accepted = this.resource.write(name, sequence);
        recorder.add({
          f: 'write',
          type: accepted ? 'ok' : 'fail',
          process: worker,
          session: sessionId,
          name,
          sequence,
          timeMs: seen.lastOwnedMs,
        });
        await sleep((holdMs / writes) * (0.5 + random()));
      }
      if (lock.isOwned()) seen.lastOwnedMs = recorder.now();
      this.current.delete(worker);

      recorder.add({
        f: 'release',
        type: 'invoke',
        process: worker,
        session: sessionId,
        name,
        sequence,
        timeMs: recorder.now(),
      });
      try {
        const owned = await withTimeout(lock.unlock(), 30_000);
        if (!owned) this.stats.unlockedNotOwned++;
        recorder.add({
          f: 'release',
          type: 'ok',
          process: worker,
          session: sessionId,
          name,
          sequence,
          owned,
          timeMs: recorder.now(),
        });
        this.stats.cycles++;
      } catch (error) {
        const code = codeOf(error);
        bump(this.stats.releaseErrors, code);
        recorder.add({
          f: 'release',
          type: 'info',
          process: worker,
          session: sessionId,
          name,
          sequence,
          error: code,
          timeMs: recorder.now(),
        });
      }
    }
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`LOCAL_TIMEOUT after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
