// The client library against a real 3-node cluster: the rules of SPEC.md that the client carries
// (S4–S6, S10, S13, S14) and the ones test/server does not already prove through it.
// Imports come from `raftlock`, the package entry users import.

import {
  AbortedError,
  AuthenticationFailedError,
  connect,
  InvalidArgumentError,
  type LockEndReason,
  RaftlockError,
  type Session,
  SessionClosedError,
  type SessionLock,
  SessionLockScope,
  TimeoutError,
} from 'raftlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../server/harness.ts';
import { TcpProxy } from './proxy.ts';

const credentials = { principal: 'control', password: 'password' } as const;
const { UNLOCK_ON_SESSION_LOSS: SESSION, UNLOCK_ON_CONNECTION_LOSS: CONNECTION } = SessionLockScope;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function rejection(promise: Promise<unknown>): Promise<RaftlockError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(RaftlockError);
    return error as RaftlockError;
  }
  throw new Error('expected a rejection');
}

describe('raftlock client', () => {
  let cluster: TestCluster;
  const sessions: Session[] = [];
  const proxies: TcpProxy[] = [];

  const open = async (options: { servers?: string[]; reconnectionWindowMs?: number } = {}) => {
    const session = await connect({ servers: cluster.urls, ...credentials, ...options });
    sessions.push(session);
    return session;
  };
  /** A session whose only way to the cluster is a proxy in front of the leader. */
  const openBehindProxy = async (reconnectionWindowMs?: number) => {
    const proxy = await TcpProxy.start(cluster.node(await cluster.waitForLeader()).url);
    proxies.push(proxy);
    const session = await open({
      servers: [proxy.url],
      ...(reconnectionWindowMs === undefined ? {} : { reconnectionWindowMs }),
    });
    return { proxy, session };
  };
  const waiters = async (observer: Session, name: string) =>
    (await observer.listLocks({ prefix: name })).find((lock) => lock.name === name)?.waiters ?? [];
  const waitForWaiters = (observer: Session, name: string, expected: number[]) =>
    cluster.waitFor(
      async () => JSON.stringify(await waiters(observer, name)) === JSON.stringify(expected),
      5_000,
      `waiters of ${name} to be ${expected.join(',')}`,
    );

  beforeAll(async () => {
    cluster = await TestCluster.create(3);
    await cluster.waitForLeader(15_000);
  });

  afterAll(async () => {
    await Promise.all(sessions.map((session) => session.close().catch(() => undefined)));
    await Promise.all(proxies.map((proxy) => proxy.stop().catch(() => undefined)));
    await cluster?.destroy();
  });

  it('S4: repeat calls for an owned lock return an equal SessionLock at once; pending calls complete together', async () => {
    const [a, b] = [await open(), await open()];
    const first = await a.lock('s4');
    const again = await a.lock('s4');
    expect(again.equals(first)).toBe(true);
    expect([again.getName(), again.getSequence(), again.getScope()]).toEqual([
      's4',
      first.getSequence(),
      SESSION,
    ]);

    const pending = [b.lock('s4'), b.lock('s4'), b.lock('s4')];
    await waitForWaiters(a, 's4', [b.sessionId]); // one place in the queue for all three calls
    expect(await first.unlock()).toBe(true);
    const granted = await Promise.all(pending);
    for (const lock of granted) expect(lock.equals(granted[0])).toBe(true);
    expect(granted[0]?.getSequence()).toBeGreaterThan(first.getSequence());
    expect(granted[0]?.equals(first)).toBe(false);
    // No reentrancy count: one unlock releases every claim.
    expect(await granted[0]?.unlock()).toBe(true);
    expect(granted.every((lock) => !lock.isOwned())).toBe(true);
    expect(await a.listLocks({ prefix: 's4' })).toEqual([]);
  });

  it('S5: calls with mixed scopes share one grant with the weakest scope', async () => {
    const [a, b] = [await open(), await open()];
    const held = await a.lock('s5-pending');
    const asSession = b.lock('s5-pending', SESSION);
    const asConnection = b.lock('s5-pending', CONNECTION);
    await waitForWaiters(a, 's5-pending', [b.sessionId]);
    await held.unlock();
    const [x, y] = await Promise.all([asSession, asConnection]);
    expect(x.getScope()).toBe(CONNECTION);
    expect(y.equals(x)).toBe(true);
    expect((await a.listLocks({ prefix: 's5-pending' }))[0]?.scope).toBe(CONNECTION);

    // A held UNLOCK_ON_SESSION_LOSS grant is weakened by a repeat call asking for the weaker scope, and
    // a later call asking for the stronger one does not strengthen it again.
    const strong = await a.lock('s5-held', SESSION);
    const weak = await a.lock('s5-held', CONNECTION);
    expect(weak.getSequence()).toBe(strong.getSequence());
    expect(strong.getScope()).toBe(CONNECTION);
    expect(weak.equals(strong)).toBe(true);
    expect((await a.lock('s5-held', SESSION)).getScope()).toBe(CONNECTION);
    expect((await a.listLocks({ prefix: 's5-held' }))[0]?.scope).toBe(CONNECTION);
    await strong.unlock();
    await x.unlock();
  });

  it('S6: unlock resolves false when the session does not own the lock, and an old SessionLock cannot release a newer grant', async () => {
    const a = await open();
    const old = await a.lock('s6');
    expect(await old.unlock()).toBe(true);
    expect(old.isOwned()).toBe(false);
    expect(await old.unlock()).toBe(false);
    const current = await a.lock('s6');
    expect(current.getSequence()).toBeGreaterThan(old.getSequence());
    expect(await old.unlock()).toBe(false);
    expect(current.isOwned()).toBe(true);
    const [row] = await a.listLocks({ prefix: 's6' });
    expect([row?.owner, row?.sequence]).toEqual([a.sessionId, current.getSequence()]);
    expect(await current.unlock()).toBe(true);
  });

  it('S13: failures are typed errors with stable codes', async () => {
    const a = await open();
    const invalid = [
      a.lock(''),
      a.lock('x'.repeat(513)),
      a.lock('é'.repeat(257)), // 514 UTF-8 bytes
      a.lock('\uD800'), // a lone surrogate has no UTF-8 form
      a.lock('s13', 'SOMETIMES' as SessionLockScope),
      a.lock('s13', SESSION, { timeoutMs: -1 }),
      a.lock('s13', SESSION, { timeoutMs: 1.5 }),
      a.lock(42 as unknown as string),
    ];
    for (const call of invalid) {
      const error = await rejection(call);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect(error.code).toBe('INVALID_ARGUMENT');
    }
    expect(await a.listLocks({ prefix: 's13' })).toEqual([]);
    const longest = await a.lock('x'.repeat(512));
    expect(longest.isOwned()).toBe(true);

    await a.close();
    expect(a.isClosed).toBe(true);
    expect(longest.isOwned()).toBe(false);
    for (const call of [a.lock('s13'), longest.unlock(), a.listLocks()]) {
      const error = await rejection(call);
      expect(error).toBeInstanceOf(SessionClosedError);
      expect(error.code).toBe('SESSION_CLOSED');
    }
    await a.close(); // closing twice is fine

    const denied = await rejection(
      connect({ servers: cluster.urls, principal: 'control', password: 'nope' }),
    );
    expect(denied).toBeInstanceOf(AuthenticationFailedError);
    expect(denied.code).toBe('AUTHENTICATION_FAILED');
    const noServers = await rejection(connect({ servers: [], ...credentials }));
    expect(noServers.code).toBe('INVALID_ARGUMENT');
  });

  it('S14: aborting a waiting call rejects ABORTED and withdraws the wait: the next waiter is granted', async () => {
    const [a, b, c] = [await open(), await open(), await open()];
    const held = await a.lock('s14-abort');
    const controller = new AbortController();
    const bCall = b.lock('s14-abort', SESSION, { signal: controller.signal });
    await waitForWaiters(a, 's14-abort', [b.sessionId]);
    const cCall = c.lock('s14-abort');
    await waitForWaiters(a, 's14-abort', [b.sessionId, c.sessionId]);
    controller.abort(new Error('user gave up'));
    const error = await rejection(bCall);
    expect(error).toBeInstanceOf(AbortedError);
    expect(error.code).toBe('ABORTED');
    await waitForWaiters(a, 's14-abort', [c.sessionId]);
    await held.unlock();
    const cLock = await cCall;
    expect(cLock.getSequence()).toBe(held.getSequence() + 1); // nobody was granted in between
    await cLock.unlock();

    // An already-aborted signal rejects at once and queues nothing.
    const again = await a.lock('s14-abort');
    const aborted = await rejection(b.lock('s14-abort', SESSION, { signal: AbortSignal.abort() }));
    expect(aborted.code).toBe('ABORTED');
    expect(await waiters(a, 's14-abort')).toEqual([]);
    await again.unlock();
  });

  it('S14: timeoutMs rejects TIMEOUT and withdraws the wait', async () => {
    const [a, b] = [await open(), await open()];
    const held = await a.lock('s14-timeout');
    const startedMs = performance.now();
    const error = await rejection(b.lock('s14-timeout', SESSION, { timeoutMs: 400 }));
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error.code).toBe('TIMEOUT');
    expect(performance.now() - startedMs).toBeGreaterThanOrEqual(390);
    // The call rejects on the client's own timer; the cancel it sends (or the table's own deadline)
    // withdraws the wait moments later — another session's read may be ordered before that.
    await waitForWaiters(a, 's14-timeout', []);
    // A free lock is granted well within its timeout.
    await held.unlock();
    expect((await b.lock('s14-timeout', SESSION, { timeoutMs: 2_000 })).isOwned()).toBe(true);
  });

  it('S14: a grant that won the race with the abort is released again and handed to the next waiter', async () => {
    const [a, c] = [await open(), await open()];
    const { proxy, session: b } = await openBehindProxy();
    const held = await a.lock('s14-race');
    const controller = new AbortController();
    const bCall = b.lock('s14-race', SESSION, { signal: controller.signal });
    await waitForWaiters(a, 's14-race', [b.sessionId]);
    const cCall = c.lock('s14-race');
    await waitForWaiters(a, 's14-race', [b.sessionId, c.sessionId]);
    const lost: LockEndReason[] = [];
    b.on('lockLost', (_lock, reason) => lost.push(reason));

    proxy.hold(); // b will not hear of its grant before it aborts
    await held.unlock();
    const [row] = await a.listLocks({ prefix: 's14-race' });
    expect(row?.owner).toBe(b.sessionId); // the grant happened
    controller.abort();
    expect((await rejection(bCall)).code).toBe('ABORTED');
    proxy.resume();

    const cLock = await cCall;
    // b's grant took the sequence in between: the cancel released a real grant.
    expect(cLock.getSequence()).toBe(held.getSequence() + 2);
    expect((await b.listLocks({ prefix: 's14-race' }))[0]?.owner).toBe(c.sessionId);
    expect(lost).toEqual([]); // b never reported a lock its caller never saw
    await cLock.unlock();
  });

  it('S14, S4: aborting one of two calls that share a grant does not release the grant the other call got', async () => {
    const a = await open();
    const { proxy, session: b } = await openBehindProxy();
    const held = await a.lock('s14-shared');
    const controller = new AbortController();
    const aborted = b.lock('s14-shared', SESSION, { signal: controller.signal });
    const kept = b.lock('s14-shared');
    await waitForWaiters(a, 's14-shared', [b.sessionId]);
    proxy.hold();
    await held.unlock();
    controller.abort();
    expect((await rejection(aborted)).code).toBe('ABORTED');
    proxy.resume();
    const lock = await kept;
    await sleep(200); // room for a (wrong) cancel to release the shared grant
    const [row] = await a.listLocks({ prefix: 's14-shared' });
    expect([row?.owner, row?.sequence]).toEqual([b.sessionId, lock.getSequence()]);
    expect(lock.isOwned()).toBe(true);
    expect(await lock.unlock()).toBe(true);
  });

  it('await using releases the lock at the end of the scope; lock.signal fires with the reason', async () => {
    const [a, b] = [await open(), await open()];
    let inside: SessionLock | null = null;
    {
      await using lock = await a.lock('using');
      inside = lock;
      expect(lock.signal.aborted).toBe(false);
      expect((await a.listLocks({ prefix: 'using' }))[0]?.owner).toBe(a.sessionId);
    }
    expect(inside?.isOwned()).toBe(false);
    expect(inside?.signal.aborted).toBe(true);
    expect(inside?.signal.reason).toBe('unlocked');
    expect(await a.listLocks({ prefix: 'using' })).toEqual([]);
    const next = await b.lock('using', SESSION, { timeoutMs: 1_000 });
    expect(next.getSequence()).toBeGreaterThan(inside?.getSequence() ?? Number.POSITIVE_INFINITY);
    await next.unlock();
    // A signal first read after the lock ended is already aborted, with the same reason.
    expect(next.signal.aborted).toBe(true);
    expect(next.signal.reason).toBe('unlocked');
  });

  it('S5, S10: a cut connection ends UNLOCK_ON_CONNECTION_LOSS locks with reason connectionLost; session locks survive the resume', async () => {
    const { proxy, session } = await openBehindProxy();
    const keep = await session.lock('cut-keep');
    const drop = await session.lock('cut-drop', CONNECTION);
    const lost: [string, LockEndReason][] = [];
    session.on('lockLost', (lock, reason) => lost.push([lock.getName(), reason]));
    const reconnected = new Promise<void>((resolve) => session.once('reconnected', resolve));
    proxy.cut();
    await reconnected;
    expect(drop.signal.reason).toBe('connectionLost');
    expect(lost).toEqual([['cut-drop', 'connectionLost']]);
    expect(keep.isOwned()).toBe(true);
    const rows = await session.listLocks({ prefix: 'cut-' });
    expect(rows.map((row) => [row.name, row.owner])).toEqual([['cut-keep', session.sessionId]]);
    await keep.unlock();
  });

  it('S10: safeUntil counts from the last confirmed keepalive with the bounds of each scope', async () => {
    const session = await open({ reconnectionWindowMs: 5_000 });
    const sessionScoped = await session.lock('safe-session');
    const connectionScoped = await session.lock('safe-connection', CONNECTION);
    await sleep(1_200); // several keepalives
    const nowMs = performance.now();
    // connection-loss bound 2 000 ms, safety margin 250 ms, keepalives every 500 ms
    expect(connectionScoped.safeUntil() - nowMs).toBeGreaterThan(1_750 - 700);
    expect(connectionScoped.safeUntil() - nowMs).toBeLessThanOrEqual(1_750);
    expect(sessionScoped.safeUntil() - connectionScoped.safeUntil()).toBeCloseTo(5_000, 3);
    await sessionScoped.unlock();
    expect(sessionScoped.safeUntil()).toBe(Number.NEGATIVE_INFINITY);
    await connectionScoped.unlock();
  });

  it('S10, S11, S7: a session left to expire reports its locks lost before the cluster can hand them on; the waiters are granted FIFO', async () => {
    const { proxy, session: doomed } = await openBehindProxy(1_500);
    const [w1, w2] = [await open(), await open()];
    const heldA = await doomed.lock('exp-a');
    const heldB = await doomed.lock('exp-b');
    const w1a = w1.lock('exp-a');
    await waitForWaiters(w1, 'exp-a', [w1.sessionId]);
    const w2a = w2.lock('exp-a');
    const w2b = w2.lock('exp-b');
    await waitForWaiters(w1, 'exp-a', [w1.sessionId, w2.sessionId]);
    await waitForWaiters(w1, 'exp-b', [w2.sessionId]);

    const lostAtMs = new Map<string, number>();
    const reasons: LockEndReason[] = [];
    doomed.on('lockLost', (lock, reason) => {
      lostAtMs.set(lock.getName(), performance.now());
      reasons.push(reason);
    });
    const closed = new Promise<RaftlockError>((resolve) => doomed.once('closed', resolve));
    let grantedAMs = 0;
    const w1Lock = w1a.then((lock) => {
      grantedAMs = performance.now();
      return lock;
    });

    await proxy.stop(); // the node is unreachable for good: no resume
    const [lockA, lockB] = await Promise.all([w1Lock, w2b]);
    expect(reasons).toEqual(['expired', 'expired']);
    // S10: the client stopped saying "owned" before the cluster handed the lock on.
    expect(lostAtMs.get('exp-a')).toBeLessThanOrEqual(grantedAMs);
    expect(heldA.isOwned() || heldB.isOwned()).toBe(false);
    expect(lockA.getSequence()).toBeGreaterThan(heldA.getSequence());
    expect(lockB.getSequence()).toBeGreaterThan(heldB.getSequence());
    // FIFO: w1 was first in line for exp-a; w2 still waits for it.
    expect(await waiters(w1, 'exp-a')).toEqual([w2.sessionId]);
    expect((await closed).code).toBe('SESSION_CLOSED');
    expect(doomed.isClosed).toBe(true);
    await lockA.unlock();
    const w2Lock = await w2a;
    expect(w2Lock.getSequence()).toBeGreaterThan(lockA.getSequence());
    await Promise.all([w2Lock.unlock(), lockB.unlock()]);
  });
});
