// The client's reconnect path against a real 3-node cluster: connect() walks its server list, and a
// request whose effect landed while its reply was lost is re-sent with the same request number after the
// resume, so it takes effect once and answers with its first outcome (C2).

import { connect, type Session, SessionLockScope } from 'raftlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../server/harness.ts';
import { TcpProxy } from './proxy.ts';

const credentials = { principal: 'control', password: 'password' } as const;

describe('client reconnects and exactly-once', () => {
  let cluster: TestCluster;
  const sessions: Session[] = [];
  const proxies: TcpProxy[] = [];

  const open = async (servers: string[] = cluster.urls) => {
    const session = await connect({ servers, ...credentials });
    sessions.push(session);
    return session;
  };
  const openBehindProxy = async () => {
    const proxy = await TcpProxy.start(cluster.node(await cluster.waitForLeader()).url);
    proxies.push(proxy);
    return { proxy, session: await open([proxy.url]) };
  };
  const row = async (observer: Session, name: string) =>
    (await observer.listLocks({ prefix: name })).find((lock) => lock.name === name);

  beforeAll(async () => {
    cluster = await TestCluster.create(3);
    await cluster.waitForLeader(15_000);
  });

  afterAll(async () => {
    await Promise.all(sessions.map((session) => session.close().catch(() => undefined)));
    await Promise.all(proxies.map((proxy) => proxy.stop().catch(() => undefined)));
    await cluster?.destroy();
  });

  it('connect() tries the servers in turn: unreachable addresses first, then a live node', async () => {
    const unreachable = await TcpProxy.start(cluster.urls[0]!);
    await unreachable.stop(); // its port now refuses connections
    const session = await open([unreachable.url, 'ws://127.0.0.1:1', ...cluster.urls]);
    const lock = await session.lock('walk');
    expect(lock.isOwned()).toBe(true);
    expect(await lock.unlock()).toBe(true);
  });

  it('C2: an unlock that applied while its reply was lost is re-sent after the resume and answers true, once', async () => {
    const { proxy, session } = await openBehindProxy();
    const other = await open();
    const lock = await session.lock('eo-unlock');
    proxy.hold(); // the node's replies stop here; the client's requests still go through
    const unlocked = lock.unlock();
    // The release applied on the cluster: another session can now take the lock.
    const taken = await other.lock('eo-unlock');
    const reconnected = new Promise<void>((resolve) => session.once('reconnected', () => resolve()));
    proxy.cut();
    await reconnected;
    // Applied a second time, the release would find the lock not ours and answer false.
    expect(await unlocked).toBe(true);
    expect(lock.isOwned()).toBe(false);
    expect(taken.isOwned()).toBe(true);
    const after = await row(other, 'eo-unlock');
    expect([after?.owner, after?.sequence]).toEqual([other.sessionId, taken.getSequence()]);
    await taken.unlock();
  });

  it('C2, S7: a wait granted while its reply was lost resolves with that same grant after the resume', async () => {
    const holder = await open();
    const held = await holder.lock('eo-grant');
    const { proxy, session } = await openBehindProxy();
    const pending = session.lock('eo-grant', SessionLockScope.UNLOCK_ON_SESSION_LOSS);
    await cluster.waitFor(
      async () => (await row(holder, 'eo-grant'))?.waiters.includes(session.sessionId) === true,
      5_000,
      'the proxied session to wait for eo-grant',
    );
    proxy.hold();
    await held.unlock();
    let granted: { owner: number; sequence: number } | undefined;
    await cluster.waitFor(
      async () => {
        granted = await row(holder, 'eo-grant');
        return granted?.owner === session.sessionId;
      },
      5_000,
      'the cluster to grant eo-grant to the proxied session',
    );
    proxy.cut();
    const lock = await pending;
    expect(lock.getSequence()).toBe(granted!.sequence);
    expect(lock.getSequence()).toBeGreaterThan(held.getSequence());
    expect(lock.isOwned()).toBe(true);
    // No second grant: the table still shows the first one, and nobody waits.
    const after = await row(holder, 'eo-grant');
    expect([after?.owner, after?.sequence, after?.waiters]).toEqual([
      session.sessionId,
      granted!.sequence,
      [],
    ]);
    expect(await lock.unlock()).toBe(true);
  });
});
