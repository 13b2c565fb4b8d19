// One or more tests per SPEC rule the lock table owns, each titled with the rule's id.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/assert.ts';
import { LockTable, utf8ByteLength } from '../../src/locks/index.ts';
import { CONNECTION, expectUnchanged, grantedOf, Harness, SESSION } from './harness.ts';

describe('S1 names', () => {
  it('S1: a name is any non-empty UTF-8 string up to the byte limit', () => {
    const h = new Harness({ lockNameBytesMax: 9 });
    const s = h.open();
    expect(h.acquire(s, 1, '123456789').result.kind).toBe('granted');
    expect(h.acquire(s, 2, 'é€😀').result.kind).toBe('granted'); // 2 + 3 + 4 bytes
    expect(h.acquire(s, 3, ' \u0000\n/*?').result.kind).toBe('granted'); // no reserved characters
    expect(h.acquire(s, 4, 'é€😀x').result).toMatchObject({ kind: 'error', code: 'INVALID_ARGUMENT' });
  });

  it('S1: the byte count is the UTF-8 length, and lone surrogates are refused', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        const wellFormed = !/\p{Cs}/u.test(text);
        expect(utf8ByteLength(text)).toBe(wellFormed ? Buffer.byteLength(text, 'utf8') : -1);
      }),
      { numRuns: 2_000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary-ascii' }), (text) => {
        expect(utf8ByteLength(text)).toBe(Buffer.byteLength(text, 'utf8'));
      }),
      { numRuns: 500 },
    );
  });

  it('S1: an empty, over-long or ill-formed name is INVALID_ARGUMENT and changes nothing', () => {
    const h = new Harness({ lockNameBytesMax: 8 });
    const s = h.open();
    h.acquire(s, 1, 'held');
    for (const name of ['', '123456789', 'ééééé', '\uD800x', 'x\uDC00']) {
      const result = expectUnchanged(h, { type: 'acquire', session: s, requestNo: 2, name, scope: SESSION });
      expect(result).toMatchObject({ kind: 'error', code: 'INVALID_ARGUMENT' });
    }
    // The byte limit counts UTF-8 bytes, not UTF-16 units: 4 × 'é' is 8 bytes, 😀 is 4.
    expect(h.acquire(s, 3, 'éééé').result.kind).toBe('granted');
    expect(h.acquire(s, 4, '😀😀').result.kind).toBe('granted');
    expect(h.acquire(s, 5, '😀😀x').result).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('S1: no create or destroy: a lock exists while owned or waited for, and leaves no record after', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    expect(h.table.lockCount).toBe(0);
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    expect(h.table.lockCount).toBe(1);
    h.release(a, 2, 'x');
    expect(h.table.lockCount).toBe(1);
    h.release(b, 2, 'x');
    expect(h.table.lockCount).toBe(0);
    expect(h.table.getLock('x')).toBeNull();
  });
});

describe('S2 exclusion', () => {
  it('S2: a lock has at most one owner; a second session waits instead', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    expect(h.acquire(a, 1, 'x').result.kind).toBe('granted');
    expect(h.acquire(b, 1, 'x').result).toEqual({ kind: 'waiting', name: 'x' });
    expect(h.acquire(c, 1, 'x').result).toEqual({ kind: 'waiting', name: 'x' });
    expect(h.owner('x')).toBe(a);
    expect(h.waiters('x')).toEqual([b, c]);
  });
});

describe('S3 acquire', () => {
  it('S3: the wait is replicated state: it survives snapshot and restore and is granted afterwards', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    const waiting = h.acquire(b, 7, 'x');
    expect(waiting.effects).toEqual([{ kind: 'waiting', session: b, name: 'x', requestNo: 7 }]);
    h.table = LockTable.restore(h.table.snapshot());
    const { effects } = h.release(a, 2, 'x');
    expect(grantedOf(effects)).toEqual([
      { kind: 'granted', session: b, name: 'x', sequence: 2, scope: SESSION, requestNos: [7] },
    ]);
  });

  it('S3: a free lock is granted at once, with a granted effect', () => {
    const h = new Harness();
    const a = h.open();
    const { result, effects } = h.acquire(a, 1, 'x');
    expect(result).toEqual({ kind: 'granted', name: 'x', sequence: 1, scope: SESSION, held: true });
    expect(effects).toEqual([
      { kind: 'granted', session: a, name: 'x', sequence: 1, scope: SESSION, requestNos: [1] },
    ]);
  });
});

describe('S4 repeat calls', () => {
  it('S4: a repeat lock call on an owned lock completes at once with an equal grant', () => {
    const h = new Harness();
    const a = h.open();
    const first = h.acquire(a, 1, 'x').result;
    const again = h.acquire(a, 2, 'x');
    expect(again.result).toEqual(first);
    expect(again.effects).toEqual([]);
  });

  it('S4: several pending calls for one name all complete together with the same grant', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(b, 2, 'x');
    h.acquire(b, 3, 'x');
    expect(h.waiters('x')).toEqual([b]); // one wait, three requests
    const { effects } = h.release(a, 2, 'x');
    expect(grantedOf(effects)).toEqual([
      { kind: 'granted', session: b, name: 'x', sequence: 2, scope: SESSION, requestNos: [1, 2, 3] },
    ]);
    for (const requestNo of [1, 2, 3]) {
      expect(h.acquire(b, requestNo, 'x').result).toEqual({
        kind: 'granted',
        name: 'x',
        sequence: 2,
        scope: SESSION,
        held: true,
      });
    }
  });

  it('S4: no reentrancy count: one release after many lock calls frees the lock', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(a, 2, 'x');
    h.acquire(b, 1, 'x');
    const { result, effects } = h.release(a, 3, 'x');
    expect(result).toEqual({ kind: 'unlocked', owned: true });
    expect(grantedOf(effects)[0]).toMatchObject({ session: b });
  });
});

describe('S5 scope', () => {
  it('S5: requests with mixed scopes make the grant UNLOCK_ON_CONNECTION_LOSS for every call', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x', SESSION);
    h.acquire(b, 2, 'x', CONNECTION);
    h.acquire(b, 3, 'x', SESSION);
    const { effects } = h.release(a, 2, 'x');
    expect(grantedOf(effects)[0]).toMatchObject({ scope: CONNECTION, requestNos: [1, 2, 3] });
    expect(h.acquire(b, 1, 'x').result).toMatchObject({ scope: CONNECTION });
    expect(h.acquire(b, 3, 'x').result).toMatchObject({ scope: CONNECTION });
  });

  it('S5: a CONNECTION-scope call on a lock held with SESSION scope weakens the grant it shares', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x', SESSION);
    const repeat = h.acquire(a, 2, 'x', CONNECTION);
    expect(repeat.result).toEqual({ kind: 'granted', name: 'x', sequence: 1, scope: CONNECTION, held: true });
    expect(repeat.effects).toEqual([
      { kind: 'scopeChanged', session: a, name: 'x', sequence: 1, scope: CONNECTION },
    ]);
    // The earlier call's retry reports the same, weakest scope, and never strengthens it again.
    expect(h.acquire(a, 1, 'x').result).toMatchObject({ scope: CONNECTION });
    expect(h.acquire(a, 3, 'x', SESSION).result).toMatchObject({ scope: CONNECTION });
    // And it now goes with the connection.
    expect(h.lost(a, 0).effects).toEqual([
      { kind: 'released', session: a, name: 'x', sequence: 1, reason: 'connectionLost' },
    ]);
  });

  it('S5: connection loss releases UNLOCK_ON_CONNECTION_LOSS locks, keeps UNLOCK_ON_SESSION_LOSS ones', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'c', CONNECTION);
    h.acquire(a, 2, 's', SESSION);
    h.acquire(b, 1, 'c');
    const { result, effects } = h.lost(a, 0);
    expect(result).toEqual({ kind: 'done' });
    expect(effects).toEqual([
      { kind: 'released', session: a, name: 'c', sequence: 1, reason: 'connectionLost' },
      { kind: 'granted', session: b, name: 'c', sequence: 3, scope: SESSION, requestNos: [1] },
    ]);
    expect(h.owner('s')).toBe(a);
    expect(h.table.getSession(a)).toMatchObject({ connected: false, connectionLostAtMs: h.timeMs });
  });

  it('S5: a connectionLost for an older connection epoch is ignored', () => {
    const h = new Harness();
    const a = h.open();
    h.reconnect(a, 5);
    h.acquire(a, 1, 'c', CONNECTION);
    expect(expectUnchanged(h, { type: 'connectionLost', session: a, epoch: 4 })).toEqual({ kind: 'ignored' });
    expect(h.owner('c')).toBe(a);
    expect(h.lost(a, 5).result).toEqual({ kind: 'done' });
    expect(h.owner('c')).toBeNull();
    expect(expectUnchanged(h, { type: 'connectionLost', session: a, epoch: 5 })).toEqual({ kind: 'ignored' });
  });
});

describe('S6 unlock', () => {
  it('S6: unlock reports true if the session owned the lock, false if not; afterwards it does not own it', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    expect(h.release(b, 1, 'x').result).toEqual({ kind: 'unlocked', owned: false });
    expect(h.release(b, 2, 'nothing').result).toEqual({ kind: 'unlocked', owned: false });
    const { result, effects } = h.release(a, 2, 'x');
    expect(result).toEqual({ kind: 'unlocked', owned: true });
    expect(effects).toEqual([{ kind: 'released', session: a, name: 'x', sequence: 1, reason: 'unlock' }]);
    expect(h.owner('x')).toBeNull();
    expect(h.release(a, 3, 'x').result).toEqual({ kind: 'unlocked', owned: false });
  });

  it("S6: unlock of a lock the session does not own leaves that session's pending lock calls waiting", () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    expect(h.release(b, 2, 'x').result).toEqual({ kind: 'unlocked', owned: false });
    expect(h.waiters('x')).toEqual([b]);
  });

  it('S6: a retried unlock that arrives after the session re-acquired the lock does not release it (etcd#22082)', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    expect(h.release(a, 2, 'x').result).toEqual({ kind: 'unlocked', owned: true });
    h.acquire(a, 3, 'x');
    const retry = h.release(a, 2, 'x');
    expect(retry.result).toEqual({ kind: 'unlocked', owned: true }); // its first answer
    expect(retry.effects).toEqual([]);
    expect(h.owner('x')).toBe(a);
  });

  it('S6: an unlock fenced with an older grant sequence does not release the newer grant', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x', CONNECTION);
    h.lost(a, 0);
    h.reconnect(a, 1);
    const newer = h.acquire(a, 2, 'x').result;
    expect(newer).toMatchObject({ sequence: 2 });
    expect(h.release(a, 3, 'x', 1).result).toEqual({ kind: 'unlocked', owned: false });
    expect(h.owner('x')).toBe(a);
    expect(h.release(a, 4, 'x', 2).result).toEqual({ kind: 'unlocked', owned: true });
  });

  it('S6: unlock on a closed session rejects with SESSION_CLOSED and the session owns nothing', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    h.close(a);
    expect(expectUnchanged(h, { type: 'release', session: a, requestNo: 2, name: 'x' })).toMatchObject({
      kind: 'error',
      code: 'SESSION_CLOSED',
    });
    expect(h.owner('x')).toBeNull();
  });
});

describe('S7 handoff', () => {
  it('S7: the earliest waiter is granted in the same step as the release', () => {
    const h = new Harness();
    const [a, b, c, d] = [h.open(), h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(c, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(d, 1, 'x');
    const order: number[] = [];
    for (const [session, requestNo] of [
      [a, 2],
      [c, 2],
      [b, 2],
      [d, 2],
    ] as const) {
      const { effects } = h.release(session, requestNo, 'x');
      const granted = grantedOf(effects);
      if (granted.length > 0) order.push((granted[0] as { session: number }).session);
    }
    expect(order).toEqual([c, b, d]);
  });

  it('S7: a waiter that left and came back queues at the back; a cancelled head is skipped', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(c, 1, 'x');
    h.cancel(b, 1);
    h.acquire(b, 2, 'x');
    expect(h.waiters('x')).toEqual([c, b]);
    expect(grantedOf(h.release(a, 2, 'x').effects)[0]).toMatchObject({ session: c });
  });

  it('S7: a session keeps its place while any of its calls for the lock still waits', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(c, 1, 'x');
    h.acquire(b, 2, 'x');
    h.cancel(b, 1);
    expect(h.waiters('x')).toEqual([b, c]);
    expect(grantedOf(h.release(a, 2, 'x').effects)[0]).toMatchObject({ session: b, requestNos: [2] });
  });
});

describe('S8 sequence', () => {
  it('S8: grant sequences strictly grow per name and overall, even after an idle lock leaves no record', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    const sequences: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const r = h.acquire(a, 2 * i, 'x').result;
      if (r.kind !== 'granted') throw new Error('expected a grant');
      sequences.push(r.sequence);
      h.acquire(b, i, `other-${i}`);
      h.release(a, 2 * i + 1, 'x');
      expect(h.table.getLock('x')).toBeNull();
    }
    for (let i = 1; i < sequences.length; i++)
      expect(sequences[i]).toBeGreaterThan(sequences[i - 1] as number);
  });

  it('S8: two grants of the same name in one entry get different, increasing sequences', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    const { results, effects } = h.batch([
      { type: 'acquire', session: a, requestNo: 1, name: 'x', scope: SESSION },
      { type: 'acquire', session: b, requestNo: 1, name: 'x', scope: SESSION },
      { type: 'release', session: a, requestNo: 2, name: 'x' },
    ]);
    expect(results.map((r) => r.kind)).toEqual(['granted', 'waiting', 'unlocked']);
    expect(grantedOf(effects).map((e) => [e.session, e.sequence])).toEqual([
      [a, 1],
      [b, 2],
    ]);
  });

  it('S8: sequences keep growing across snapshot and restore', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    h.release(a, 2, 'x');
    h.table = LockTable.restore(h.table.snapshot());
    expect(h.acquire(a, 3, 'x').result).toMatchObject({ sequence: 2 });
  });
});

describe('S11 sessions', () => {
  it('S11: closing a session releases its locks, withdraws its waits and hands locks on in FIFO order', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(a, 2, 'y');
    h.acquire(b, 1, 'z');
    h.acquire(a, 3, 'z');
    h.acquire(b, 2, 'x');
    h.acquire(c, 1, 'x');
    const { result, effects } = h.close(a);
    expect(result).toEqual({ kind: 'done' });
    expect(effects).toEqual([
      { kind: 'waitEnded', session: a, name: 'z', requestNo: 3, reason: 'sessionClosed' },
      { kind: 'released', session: a, name: 'x', sequence: 1, reason: 'sessionClosed' },
      { kind: 'granted', session: b, name: 'x', sequence: 4, scope: SESSION, requestNos: [2] },
      { kind: 'released', session: a, name: 'y', sequence: 2, reason: 'sessionClosed' },
      { kind: 'sessionEnded', session: a, reason: 'closed' },
    ]);
    expect(h.waiters('z')).toEqual([]);
    expect(h.waiters('x')).toEqual([c]);
    expect(h.table.getSession(a)).toBeNull();
    expect(h.table.sessionCount).toBe(2);
  });

  it('S11: a lost connection keeps UNLOCK_ON_SESSION_LOSS locks and waits through the window; expiry ends them', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'held');
    h.acquire(b, 1, 'wanted');
    h.acquire(a, 2, 'wanted', SESSION);
    h.acquire(a, 3, 'wanted', CONNECTION);
    const lost = h.lost(a, 0);
    // The connection-scoped call goes with the connection; the session-scoped one keeps waiting.
    expect(lost.effects).toEqual([
      { kind: 'waitEnded', session: a, name: 'wanted', requestNo: 3, reason: 'connectionLost' },
    ]);
    expect(h.acquire(a, 3, 'wanted').result).toMatchObject({ kind: 'error', code: 'CONNECTION_LOST' });
    expect(h.owner('held')).toBe(a);
    expect(h.waiters('wanted')).toEqual([a]);
    // While disconnected, the session-scoped wait can still be granted (S11 keeps it).
    expect(grantedOf(h.release(b, 2, 'wanted').effects)[0]).toMatchObject({ session: a, requestNos: [2] });
    const expired = h.expire(a, 0);
    expect(expired.result).toEqual({ kind: 'done' });
    expect(expired.effects.map((e) => e.kind)).toEqual(['released', 'released', 'sessionEnded']);
    expect(expired.effects[2]).toEqual({ kind: 'sessionEnded', session: a, reason: 'expired' });
    expect(h.acquire(a, 9, 'x').result).toMatchObject({ code: 'SESSION_CLOSED' });
  });

  it('S11: an expiry decided before a reconnect is ignored', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    h.lost(a, 0);
    expect(h.reconnect(a, 1).result).toEqual({ kind: 'done' });
    expect(expectUnchanged(h, { type: 'expireSession', session: a, epoch: 0 })).toEqual({ kind: 'ignored' });
    expect(h.owner('x')).toBe(a);
    expect(h.table.getSession(a)).toMatchObject({
      connected: true,
      connectionEpoch: 1,
      connectionLostAtMs: null,
    });
  });

  it('S11: a reconnect on a newer connection implies the old one was lost', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'c', CONNECTION);
    h.acquire(a, 2, 's', SESSION);
    const { result, effects } = h.reconnect(a, 3);
    expect(result).toEqual({ kind: 'done' });
    expect(effects).toEqual([
      { kind: 'released', session: a, name: 'c', sequence: 1, reason: 'connectionLost' },
    ]);
    expect(h.owner('s')).toBe(a);
    expect(h.reconnect(a, 3).result).toEqual({ kind: 'done' }); // a retry
    expect(expectUnchanged(h, { type: 'reconnect', session: a, epoch: 2 })).toMatchObject({
      code: 'STALE_REQUEST',
    });
  });

  it('S11: a CONNECTION-scope lock call from a session without a connection fails with CONNECTION_LOST', () => {
    const h = new Harness();
    const a = h.open();
    h.lost(a, 0);
    expect(h.acquire(a, 1, 'x', CONNECTION).result).toMatchObject({ code: 'CONNECTION_LOST' });
    expect(h.owner('x')).toBeNull();
    expect(h.acquire(a, 2, 'x', SESSION).result).toMatchObject({ kind: 'granted' });
  });

  it('S11: commands for unknown or ended sessions are typed errors and change nothing', () => {
    const h = new Harness();
    const a = h.open();
    h.close(a);
    const commands = [
      { type: 'acquire', session: 99, requestNo: 1, name: 'x', scope: SESSION },
      { type: 'release', session: 99, requestNo: 1, name: 'x' },
      { type: 'cancel', session: 99, requestNo: 1 },
      { type: 'closeSession', session: 99 },
      { type: 'expireSession', session: 99, epoch: 0 },
      { type: 'reconnect', session: 99, epoch: 1 },
      { type: 'connectionLost', session: 99, epoch: 0 },
    ] as const;
    for (const command of commands) {
      expect(expectUnchanged(h, command)).toMatchObject({ kind: 'error', code: 'SESSION_NOT_FOUND' });
      expect(expectUnchanged(h, { ...command, session: a })).toMatchObject({
        kind: 'error',
        code: 'SESSION_CLOSED',
      });
    }
  });

  it('S11: sessions get distinct ids in order, one per openSession, even within one entry', () => {
    const h = new Harness();
    const { results } = h.batch([
      { type: 'openSession', principal: 'p', reconnectionWindowMs: 1 },
      { type: 'openSession', principal: 'q', reconnectionWindowMs: 2 },
    ]);
    expect(results).toEqual([
      { kind: 'opened', session: 1 },
      { kind: 'opened', session: 2 },
    ]);
    expect(h.table.getSession(2)).toMatchObject({ principal: 'q', reconnectionWindowMs: 2, connected: true });
  });
});

describe('S14 cancel and timeout', () => {
  it('S14: cancelling a pending call withdraws the wait; a retry of the call answers ABORTED', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    const { result, effects } = h.cancel(b, 1);
    expect(result).toEqual({ kind: 'cancelled', outcome: 'withdrawn' });
    expect(effects).toEqual([
      { kind: 'waitEnded', session: b, name: 'x', requestNo: 1, reason: 'cancelled' },
    ]);
    expect(h.waiters('x')).toEqual([]);
    expect(h.acquire(b, 1, 'x').result).toMatchObject({ kind: 'error', code: 'ABORTED' });
    expect(h.cancel(b, 1).result).toEqual({ kind: 'cancelled', outcome: 'none' });
    expect(grantedOf(h.release(a, 2, 'x').effects)).toEqual([]);
  });

  it('S14: if the grant won the race, the cancel releases it again and hands it on', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(c, 1, 'x');
    h.release(a, 2, 'x'); // b is granted before its cancel arrives
    const { result, effects } = h.cancel(b, 1);
    expect(result).toEqual({ kind: 'cancelled', outcome: 'released' });
    expect(effects).toEqual([
      { kind: 'released', session: b, name: 'x', sequence: 2, reason: 'cancelled' },
      { kind: 'granted', session: c, name: 'x', sequence: 3, scope: SESSION, requestNos: [1] },
    ]);
    expect(h.acquire(b, 1, 'x').result).toMatchObject({ code: 'ABORTED' });
  });

  it('S14: a cancel for an old grant does not release a newer grant of the same lock', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    h.release(a, 2, 'x');
    h.acquire(a, 3, 'x');
    const result = expectUnchanged(h, { type: 'cancel', session: a, requestNo: 1 });
    expect(result).toEqual({ kind: 'cancelled', outcome: 'none' });
    expect(h.owner('x')).toBe(a);
  });

  it('S14: a cancel that overtakes its lock call makes the call, when it comes, answer ABORTED', () => {
    const h = new Harness();
    const a = h.open();
    expect(h.cancel(a, 5).result).toEqual({ kind: 'cancelled', outcome: 'none' });
    const late = h.acquire(a, 5, 'x');
    expect(late.result).toMatchObject({ kind: 'error', code: 'ABORTED' });
    expect(late.effects).toEqual([]);
    expect(h.owner('x')).toBeNull();
  });

  it('S14: a wait is withdrawn with reason timeout when an entry reaches its deadline, before its commands', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x', SESSION, 5_000);
    h.acquire(c, 1, 'x', SESSION, 9_000);
    expect(h.tick(4_999)).toEqual([]);
    // This entry both reaches b's deadline and releases the lock: the deadline goes first, so c gets it.
    const { results, effects } = h.batch([{ type: 'release', session: a, requestNo: 2, name: 'x' }], 5_000);
    expect(results[0]).toEqual({ kind: 'unlocked', owned: true });
    expect(effects).toEqual([
      { kind: 'waitEnded', session: b, name: 'x', requestNo: 1, reason: 'timeout' },
      { kind: 'released', session: a, name: 'x', sequence: 1, reason: 'unlock' },
      { kind: 'granted', session: c, name: 'x', sequence: 2, scope: SESSION, requestNos: [1] },
    ]);
    expect(h.acquire(b, 1, 'x').result).toMatchObject({ code: 'TIMEOUT' });
  });

  it('S14: deadlines fire in deadline order, and a grant removes the deadline', () => {
    const h = new Harness();
    const [a, b, c, d] = [h.open(), h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(a, 2, 'y');
    h.acquire(b, 1, 'x', SESSION, 3_000);
    h.acquire(c, 1, 'y', SESSION, 2_000);
    h.acquire(d, 1, 'x', SESSION, 2_500);
    h.release(a, 3, 'x'); // b granted: its deadline no longer applies
    const effects = h.tick(10_000);
    expect(effects).toEqual([
      { kind: 'waitEnded', session: c, name: 'y', requestNo: 1, reason: 'timeout' },
      { kind: 'waitEnded', session: d, name: 'x', requestNo: 1, reason: 'timeout' },
    ]);
    expect(h.owner('x')).toBe(b);
  });

  it('S14: a call whose deadline has passed does not wait, but a free lock is still granted', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.tick(10_000);
    expect(h.acquire(a, 1, 'x', SESSION, 5_000).result).toMatchObject({ kind: 'granted' });
    expect(h.acquire(b, 1, 'x', SESSION, 10_000).result).toMatchObject({ kind: 'error', code: 'TIMEOUT' });
    expect(h.waiters('x')).toEqual([]);
  });

  it('S14: table time never goes back when a new leader stamps an earlier time', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.tick(8_000);
    h.acquire(b, 1, 'x', SESSION, 9_000);
    expect(h.tick(7_000)).toEqual([]);
    expect(h.table.nowMs).toBe(8_000);
    expect(h.tick(9_000)).toHaveLength(1);
  });
});

describe('S15 inspect', () => {
  it('S15: listLocks gives owner, sequence, scope and waiters, sorted, by prefix and page', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'jobs/b', CONNECTION);
    h.acquire(a, 2, 'jobs/a');
    h.acquire(b, 1, 'other');
    h.acquire(b, 2, 'jobs/a');
    h.acquire(c, 1, 'jobs/a');
    expect(h.table.listLocks({ prefix: 'jobs/' })).toEqual([
      { name: 'jobs/a', owner: a, sequence: 2, scope: SESSION, waiters: [b, c] },
      { name: 'jobs/b', owner: a, sequence: 1, scope: CONNECTION, waiters: [] },
    ]);
    expect(h.table.listLocks({ limit: 1 }).map((l) => l.name)).toEqual(['jobs/a']);
    expect(h.table.listLocks({ after: 'jobs/a', limit: 1 }).map((l) => l.name)).toEqual(['jobs/b']);
    expect(h.table.listLocks({ prefix: 'none' })).toEqual([]);
    expect([h.table.sessionCount, h.table.lockCount, h.table.waiterCount]).toEqual([3, 3, 2]);
    expect(h.table.getSession(b)).toEqual({
      id: b,
      principal: 'alice',
      reconnectionWindowMs: 30_000,
      grants: null,
      connectionEpoch: 0,
      connected: true,
      connectionLostAtMs: null,
      locks: [{ name: 'other', sequence: 3, scope: SESSION }],
      waits: [{ name: 'jobs/a', requestNos: [2] }],
    });
    expect(h.table.getSession(42)).toBeNull();
  });

  it('S15: reads change nothing', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    const before = h.table.snapshot();
    h.table.listLocks();
    h.table.getLock('x');
    h.table.getSession(a);
    expect(Buffer.from(h.table.snapshot()).equals(Buffer.from(before))).toBe(true);
  });
});

describe('C2 exactly-once requests', () => {
  it('C2: a retried acquire that still waits answers waiting and adds no second waiter', () => {
    const h = new Harness();
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    const retry = h.acquire(b, 1, 'x');
    expect(retry.result).toEqual({ kind: 'waiting', name: 'x' });
    expect(retry.effects).toEqual([]);
    expect(h.table.getSession(b)?.waits).toEqual([{ name: 'x', requestNos: [1] }]);
  });

  it('C2: a retried acquire answers its grant while held, and the grant with held=false after release', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    expect(h.acquire(a, 1, 'x').result).toEqual({
      kind: 'granted',
      name: 'x',
      sequence: 1,
      scope: SESSION,
      held: true,
    });
    h.release(a, 2, 'x');
    const retry = h.acquire(a, 1, 'x');
    expect(retry.result).toEqual({ kind: 'granted', name: 'x', sequence: 1, scope: SESSION, held: false });
    expect(h.owner('x')).toBeNull();
  });

  it('C2: a request number older than the dedupe window is STALE_REQUEST and changes nothing', () => {
    const h = new Harness({ dedupeResultsPerSessionMax: 3 });
    const a = h.open();
    for (let requestNo = 1; requestNo <= 4; requestNo++) h.acquire(a, requestNo, `l${requestNo}`);
    expect(expectUnchanged(h, { type: 'release', session: a, requestNo: 1, name: 'l1' })).toMatchObject({
      code: 'STALE_REQUEST',
    });
    expect(h.owner('l1')).toBe(a);
    expect(h.acquire(a, 2, 'l2').result).toMatchObject({ kind: 'granted' }); // still in the window
  });

  it('C2: request numbers may arrive out of order within the window', () => {
    const h = new Harness({ dedupeResultsPerSessionMax: 4 });
    const a = h.open();
    h.acquire(a, 3, 'x');
    h.acquire(a, 1, 'y');
    h.acquire(a, 2, 'z');
    expect([h.owner('x'), h.owner('y'), h.owner('z')]).toEqual([a, a, a]);
    expect(h.release(a, 5, 'x').result).toEqual({ kind: 'unlocked', owned: true });
    expect(h.release(a, 4, 'y').result).toEqual({ kind: 'unlocked', owned: true });
  });

  it('C2: a pending acquire pushed out of the dedupe window still answers waiting and can be cancelled', () => {
    const h = new Harness({ dedupeResultsPerSessionMax: 2 });
    const [a, b] = [h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.release(b, 2, 'q');
    h.release(b, 3, 'q');
    expect(h.acquire(b, 1, 'x').result).toEqual({ kind: 'waiting', name: 'x' });
    expect(h.cancel(b, 1).result).toEqual({ kind: 'cancelled', outcome: 'withdrawn' });
    expect(h.acquire(b, 1, 'x').result).toMatchObject({ code: 'STALE_REQUEST' });
  });

  it('C2, S14: a retry inside a batch answers the state the earlier commands left; a later cancel makes every later retry ABORTED, across a snapshot', () => {
    // The command sequence of lock-sim seed 574073086 (entries 128 and 129): session 6's acquire waits;
    // then one batch closes the owner (handing the lock to 6:1), retries 6:1 and cancels it.
    const h = new Harness({ dedupeResultsPerSessionMax: 32 });
    const [owner, waiter] = [h.open(), h.open()];
    const held = h.acquire(owner, 1, 'b').result;
    expect(held).toMatchObject({ kind: 'granted', sequence: 1 });
    expect(h.acquire(waiter, 1, 'b').result).toEqual({ kind: 'waiting', name: 'b' });
    const retry = { type: 'acquire', session: waiter, requestNo: 1, name: 'b', scope: SESSION } as const;
    const { results, effects } = h.batch([
      { type: 'closeSession', session: owner },
      retry,
      { type: 'cancel', session: waiter, requestNo: 1 },
    ]);
    expect(results).toEqual([
      { kind: 'done' },
      // The grant happened earlier in this entry and is still held when the retry applies.
      { kind: 'granted', name: 'b', sequence: 2, scope: SESSION, held: true },
      // S14: the grant won the race, so the cancel releases it; the call ends ABORTED.
      { kind: 'cancelled', outcome: 'released' },
    ]);
    expect(effects).toEqual([
      { kind: 'released', session: owner, name: 'b', sequence: 1, reason: 'sessionClosed' },
      { kind: 'granted', session: waiter, name: 'b', sequence: 2, scope: SESSION, requestNos: [1] },
      { kind: 'sessionEnded', session: owner, reason: 'closed' },
      { kind: 'released', session: waiter, name: 'b', sequence: 2, reason: 'cancelled' },
    ]);
    expect(h.owner('b')).toBeNull();
    // Every later retry — on this replica and on one restored from a snapshot — answers ABORTED and
    // changes nothing: no fresh grant.
    expect(expectUnchanged(h, retry)).toMatchObject({ kind: 'error', code: 'ABORTED' });
    h.table = LockTable.restore(h.table.snapshot(), { limits: h.table.limits });
    expect(expectUnchanged(h, retry)).toMatchObject({ kind: 'error', code: 'ABORTED' });
    expect(expectUnchanged(h, { type: 'cancel', session: waiter, requestNo: 1 })).toEqual({
      kind: 'cancelled',
      outcome: 'none',
    });
    expect(h.owner('b')).toBeNull();
  });

  it('C2: a request number reused for a different kind of request is INVALID_ARGUMENT', () => {
    const h = new Harness();
    const a = h.open();
    h.acquire(a, 1, 'x');
    h.release(a, 2, 'y');
    expect(expectUnchanged(h, { type: 'release', session: a, requestNo: 1, name: 'x' })).toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(
      expectUnchanged(h, { type: 'acquire', session: a, requestNo: 2, name: 'y', scope: SESSION }),
    ).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('bounds', () => {
  it('waitersPerLockMax: one more waiting session is LIMIT_EXCEEDED and changes nothing', () => {
    const h = new Harness({ waitersPerLockMax: 2 });
    const [a, b, c, d] = [h.open(), h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x');
    h.acquire(b, 1, 'x');
    h.acquire(c, 1, 'x');
    h.acquire(c, 2, 'x'); // joins its own wait: no new waiter
    const over = h.acquire(d, 1, 'x');
    expect(over.result).toMatchObject({ kind: 'error', code: 'LIMIT_EXCEEDED' });
    expect(over.effects).toEqual([]);
    expect(h.waiters('x')).toEqual([b, c]);
    expect(h.acquire(d, 1, 'x').result).toMatchObject({ code: 'LIMIT_EXCEEDED' }); // its first answer
  });

  it('locksAndWaitsPerSessionMax: owned locks plus pending calls are bounded per session', () => {
    const h = new Harness({ locksAndWaitsPerSessionMax: 3 });
    const [a, b] = [h.open(), h.open()];
    h.acquire(b, 1, 'w');
    h.acquire(a, 1, 'x');
    h.acquire(a, 2, 'y');
    h.acquire(a, 3, 'w');
    expect(h.acquire(a, 4, 'z').result).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(h.acquire(a, 5, 'w').result).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(h.acquire(a, 6, 'x').result).toMatchObject({ kind: 'granted' }); // a repeat adds no claim
    expect(h.owner('z')).toBeNull();
    h.release(a, 7, 'x');
    expect(h.acquire(a, 8, 'z').result).toMatchObject({ kind: 'granted' });
  });

  it('sessionsMax: one session too many is LIMIT_EXCEEDED and changes nothing', () => {
    const h = new Harness({ sessionsMax: 2 });
    h.open();
    const b = h.open();
    expect(
      expectUnchanged(h, { type: 'openSession', principal: 'c', reconnectionWindowMs: 1 }),
    ).toMatchObject({
      code: 'LIMIT_EXCEEDED',
    });
    h.close(b);
    expect(h.open()).toBe(3);
  });

  it('bad values are INVALID_ARGUMENT and change nothing', () => {
    const h = new Harness({ principalBytesMax: 4, reconnectionWindowMsMax: 100 });
    const a = h.open('p', 100);
    const bad = [
      { type: 'openSession', principal: '', reconnectionWindowMs: 1 },
      { type: 'openSession', principal: 'toolong', reconnectionWindowMs: 1 },
      { type: 'openSession', principal: 'p', reconnectionWindowMs: 101 },
      { type: 'openSession', principal: 'p', reconnectionWindowMs: -1 },
      { type: 'acquire', session: a, requestNo: 0, name: 'x', scope: SESSION },
      { type: 'acquire', session: a, requestNo: 1.5, name: 'x', scope: SESSION },
      { type: 'acquire', session: a, requestNo: 1, name: 'x', scope: 'FOREVER' },
      { type: 'acquire', session: a, requestNo: 1, name: 'x', scope: SESSION, deadlineMs: -5 },
      { type: 'acquire', session: 0, requestNo: 1, name: 'x', scope: SESSION },
      { type: 'release', session: a, requestNo: 1, name: 'x', sequence: 0 },
      { type: 'reconnect', session: a, epoch: Number.NaN },
      { type: 'cancel', session: a, requestNo: 2 ** 53 },
    ];
    for (const command of bad) {
      // biome-ignore lint/suspicious/noExplicitAny: deliberately ill-typed input
      expect(expectUnchanged(h, command as any)).toMatchObject({ kind: 'error', code: 'INVALID_ARGUMENT' });
    }
  });
});

describe('determinism and invariants', () => {
  it('apply refuses an index that does not grow (a programmer error, so it asserts)', () => {
    const table = new LockTable();
    table.apply(5, { timeMs: 0, commands: [] });
    expect(() => table.apply(5, { timeMs: 0, commands: [] })).toThrow(AssertionError);
    expect(() => table.apply(4, { timeMs: 0, commands: [] })).toThrow(AssertionError);
  });

  it('snapshot → restore → snapshot gives the same bytes, and the restored table behaves the same', () => {
    const h = new Harness();
    const [a, b, c] = [h.open(), h.open(), h.open()];
    h.acquire(a, 1, 'x', CONNECTION);
    h.acquire(b, 1, 'x', SESSION, 50_000);
    h.acquire(c, 1, 'x', CONNECTION);
    h.acquire(c, 2, 'x', SESSION, 40_000);
    h.acquire(b, 2, 'y');
    h.acquire(a, 2, 'y');
    h.release(c, 3, 'nothing');
    h.cancel(c, 9);
    h.lost(a, 0);
    const bytes = h.table.snapshot();
    const restored = LockTable.restore(bytes);
    restored.assertInvariants();
    expect(Buffer.from(restored.snapshot()).equals(Buffer.from(bytes))).toBe(true);
    const next = [
      { timeMs: 45_000, commands: [] },
      { timeMs: 46_000, commands: [{ type: 'closeSession', session: b } as const] },
      { timeMs: 47_000, commands: [{ type: 'expireSession', session: a, epoch: 0 } as const] },
    ];
    for (const entry of next) {
      const index = ++h.index;
      expect(restored.apply(index, entry)).toEqual(h.table.apply(index, entry));
      expect(Buffer.from(restored.snapshot()).equals(Buffer.from(h.table.snapshot()))).toBe(true);
    }
  });
});
