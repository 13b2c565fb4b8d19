// Integration: session liveness across the cluster (C6, S5, S11) with real processes.

import { describe, expect, it } from 'vitest';
import { encode, openConnection } from '../../src/client/connection.ts';
import { connect, type Session, SessionLockScope } from '../../src/client/index.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('session liveness', () => {
  const sessions: Session[] = [];
  const suite = useTestCluster(3, { sessions });

  it('C6, S5, S11: a silent client loses its connection locks after ~2 s and its session locks only after its reconnection window', async () => {
    const leader = await suite.cluster.waitForLeader();
    // A raw client that opens a session, takes two locks, then never speaks again.
    const silent = await openConnection(
      suite.cluster.node(leader).url,
      { ...credentials, reconnectionWindowMs: 2_000 },
      2_000,
    );
    const silentId = silent.welcome.session.id;
    silent.ws.send(
      encode({
        t: 'req',
        id: 1,
        op: 'lock',
        requestNo: 1,
        name: 'lv-conn',
        scope: 'UNLOCK_ON_CONNECTION_LOSS',
      }),
    );
    silent.ws.send(
      encode({
        t: 'req',
        id: 2,
        op: 'lock',
        requestNo: 2,
        name: 'lv-session',
        scope: 'UNLOCK_ON_SESSION_LOSS',
      }),
    );
    const silentAt = Date.now();

    const waiter = await connect({ servers: suite.cluster.urls, ...credentials });
    sessions.push(waiter);
    await suite.cluster.waitFor(
      async () =>
        (await waiter.listLocks({ prefix: 'lv-' })).every((lock) => lock.owner === silentId) &&
        (await waiter.listLocks({ prefix: 'lv-' })).length === 2,
      5_000,
      'the silent session to own both locks',
    );
    const connWait = waiter.lock('lv-conn');
    const sessionWait = waiter.lock('lv-session', SessionLockScope.UNLOCK_ON_SESSION_LOSS);

    const connLock = await connWait;
    const connAfterMs = Date.now() - silentAt;
    console.log(`connection-scoped lock handed over ${connAfterMs} ms after the client went silent`);
    expect(connAfterMs).toBeGreaterThanOrEqual(1_900);
    expect(connAfterMs).toBeLessThan(4_000);
    // The session-scoped lock is still the silent session's: its reconnection window is open.
    const [stillHeld] = await waiter.listLocks({ prefix: 'lv-session' });
    expect(stillHeld?.owner).toBe(silentId);

    const sessionLock = await sessionWait;
    const sessionAfterMs = Date.now() - silentAt;
    console.log(`session-scoped lock handed over ${sessionAfterMs} ms after the client went silent`);
    expect(sessionAfterMs).toBeGreaterThanOrEqual(connAfterMs + 1_500);
    expect(sessionLock.getSequence()).toBeGreaterThan(connLock.getSequence());
    silent.ws.terminate();
  });

  it('C6: a client whose connection drops resumes its session by itself and keeps its session locks', async () => {
    const session = await connect({ servers: suite.cluster.urls, ...credentials });
    sessions.push(session);
    const keep = await session.lock('lv-keep');
    const drop = await session.lock('lv-drop', SessionLockScope.UNLOCK_ON_CONNECTION_LOSS);
    const reconnecting = new Promise<void>((resolve) => session.once('reconnecting', () => resolve()));
    const reconnected = new Promise<void>((resolve) => session.once('reconnected', () => resolve()));
    const lost: string[] = [];
    session.on('lockLost', (lock: { getName(): string }) => lost.push(lock.getName()));
    // Cut the connection under the client.
    (session as unknown as { ws: { terminate(): void } }).ws.terminate();
    await reconnecting;
    expect(drop.isOwned()).toBe(false);
    expect(drop.signal.aborted).toBe(true);
    await reconnected;
    expect(lost).toContain('lv-drop');
    expect(keep.isOwned()).toBe(true);
    const [row] = await session.listLocks({ prefix: 'lv-keep' });
    expect(row?.owner).toBe(session.sessionId);
    expect(await session.listLocks({ prefix: 'lv-drop' })).toEqual([]);
    expect(await keep.unlock()).toBe(true);
  });
});
