// Integration: what a session's client is told about its grants, and in what order (S4, S5, S6), with real
// processes and a raw client, so every frame the node sends is seen.

import { describe, expect, it } from 'vitest';
import { decode, encode, type OpenConnection, openConnection } from '../../src/client/connection.ts';
import type { ServerFrame } from '../../src/protocol.ts';
import { useTestCluster } from './harness.ts';

const credentials = { principal: 'control', password: 'password' } as const;
const session = 'UNLOCK_ON_SESSION_LOSS' as const;

/** A raw session that records every frame it is sent. */
async function rawSession(url: string): Promise<{ open: OpenConnection; frames: ServerFrame[] }> {
  const open = await openConnection(url, { ...credentials }, 5_000);
  const frames: ServerFrame[] = [];
  open.ws.on('message', (data) => frames.push(decode(data)));
  return { open, frames };
}

async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Frames other than pongs, in arrival order. */
function heard(frames: readonly ServerFrame[]): ServerFrame[] {
  return frames.filter((frame) => !(frame.t === 'res' && frame.ok && frame.result.kind === 'pong'));
}

describe('notices next to answers', () => {
  const suite = useTestCluster(3);

  it('S4, S6: an immediate grant and an unlock are told once, in their answers, on the leader and through a follower', async () => {
    const leader = await suite.cluster.waitForLeader();
    const follower = suite.cluster.urls.find((url) => url !== suite.cluster.node(leader).url)!;
    for (const url of [suite.cluster.node(leader).url, follower]) {
      const { open, frames } = await rawSession(url);
      const name = `nt-once-${url.slice(-5)}`;
      open.ws.send(encode({ t: 'req', id: 1, op: 'lock', requestNo: 1, name, scope: session }));
      await until(() => frames.some((frame) => frame.t === 'res' && frame.id === 1), 'the grant');
      const grant = frames.find((frame) => frame.t === 'res' && frame.id === 1)!;
      expect(grant).toMatchObject({ ok: true, result: { kind: 'granted', name, held: true } });
      const sequence =
        grant.t === 'res' && grant.ok && grant.result.kind === 'granted' ? grant.result.sequence : 0;
      open.ws.send(encode({ t: 'req', id: 2, op: 'unlock', requestNo: 2, name, sequence }));
      await until(() => frames.some((frame) => frame.t === 'res' && frame.id === 2), 'the unlock');
      // A later request's answer proves nothing about the first two is still on its way.
      open.ws.send(
        encode({ t: 'req', id: 3, op: 'lock', requestNo: 3, name: `${name}-after`, scope: session }),
      );
      await until(() => frames.some((frame) => frame.t === 'res' && frame.id === 3), 'the third answer');
      expect(heard(frames).map((frame) => (frame.t === 'res' ? `res ${frame.id}` : frame.t))).toEqual([
        'res 1',
        'res 2',
        'res 3',
      ]);
      expect(frames.find((frame) => frame.t === 'res' && frame.id === 2)).toMatchObject({
        ok: true,
        result: { kind: 'unlocked', owned: true },
      });
      open.ws.terminate();
    }
  });

  it('S3, S4: a grant after a wait comes as a notice naming the request; the wait itself is answered', async () => {
    const leader = await suite.cluster.waitForLeader();
    const url = suite.cluster.node(leader).url;
    const owner = await rawSession(url);
    const waiter = await rawSession(url);
    owner.open.ws.send(
      encode({ t: 'req', id: 1, op: 'lock', requestNo: 1, name: 'nt-wait', scope: session }),
    );
    await until(() => owner.frames.some((frame) => frame.t === 'res' && frame.id === 1), 'the first grant');
    const first = owner.frames.find((frame) => frame.t === 'res' && frame.id === 1)!;
    const sequence =
      first.t === 'res' && first.ok && first.result.kind === 'granted' ? first.result.sequence : 0;
    waiter.open.ws.send(
      encode({ t: 'req', id: 1, op: 'lock', requestNo: 7, name: 'nt-wait', scope: session }),
    );
    await until(() => waiter.frames.some((frame) => frame.t === 'res' && frame.id === 1), 'the wait');
    expect(waiter.frames.find((frame) => frame.t === 'res')).toMatchObject({ result: { kind: 'waiting' } });
    owner.open.ws.send(encode({ t: 'req', id: 2, op: 'unlock', requestNo: 2, name: 'nt-wait', sequence }));
    await until(() => waiter.frames.some((frame) => frame.t === 'notice'), 'the handed-over grant');
    expect(heard(waiter.frames).at(-1)).toMatchObject({
      t: 'notice',
      notice: 'granted',
      name: 'nt-wait',
      sequence: sequence + 1,
      requestNos: [7],
    });
    owner.open.ws.terminate();
    waiter.open.ws.terminate();
  });

  it('S5: when the grant and a scope change are decided in one step, the client hears of the grant first', async () => {
    const leader = await suite.cluster.waitForLeader();
    const { open, frames } = await rawSession(suite.cluster.node(leader).url);
    // Sent together, the two reach the leader in one turn: one entry grants the lock and then weakens it.
    open.ws.send(
      encode({
        t: 'req',
        id: 1,
        op: 'lock',
        requestNo: 1,
        name: 'nt-scope',
        scope: 'UNLOCK_ON_SESSION_LOSS',
      }),
    );
    open.ws.send(
      encode({
        t: 'req',
        id: 2,
        op: 'lock',
        requestNo: 2,
        name: 'nt-scope',
        scope: 'UNLOCK_ON_CONNECTION_LOSS',
      }),
    );
    await until(() => frames.some((frame) => frame.t === 'res' && frame.id === 2), 'both answers');
    const order = heard(frames);
    const grantAt = order.findIndex(
      (frame) =>
        (frame.t === 'notice' && frame.notice === 'granted') ||
        (frame.t === 'res' && frame.id === 1 && frame.ok && frame.result.kind === 'granted'),
    );
    const scopeAt = order.findIndex((frame) => frame.t === 'notice' && frame.notice === 'scopeChanged');
    expect(grantAt).toBeGreaterThanOrEqual(0);
    expect(scopeAt).toBeGreaterThan(grantAt);
    expect(order.find((frame) => frame.t === 'res' && frame.id === 2)).toMatchObject({
      ok: true,
      result: { kind: 'granted', scope: 'UNLOCK_ON_CONNECTION_LOSS' },
    });
    // Each grant is told once: by its notice or by its answer, never by both.
    const notices = order.filter((frame) => frame.t === 'notice' && frame.notice === 'granted');
    expect(notices.length).toBeLessThanOrEqual(1);
    open.ws.terminate();
  });
});
