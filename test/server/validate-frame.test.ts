// C7: every client frame is checked field by field; hostile input gets a typed error, never a crash.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseClientFrame } from '../../src/server/validate-frame.ts';

describe('parseClientFrame', () => {
  it('accepts a hello and rebuilds it from checked fields only', () => {
    const parsed = parseClientFrame({ t: 'hello', v: 1, principal: 'control', password: 'p', extra: 'x' });
    expect(parsed).toEqual({
      ok: true,
      frame: {
        t: 'hello',
        v: 1,
        principal: 'control',
        password: 'p',
        session: undefined,
        reconnectionWindowMs: undefined,
      },
    });
  });

  it('accepts each request op with defaults', () => {
    const lock = parseClientFrame({ t: 'req', id: 7, op: 'lock', requestNo: 1, name: 'a' });
    expect(lock).toMatchObject({ ok: true, frame: { op: 'lock', scope: 'UNLOCK_ON_SESSION_LOSS' } });
    for (const op of ['close', 'ping', 'status', 'locks']) {
      expect(parseClientFrame({ t: 'req', id: 1, op }).ok).toBe(true);
    }
  });

  it('C7: answers a bad field of a request with INVALID_ARGUMENT for that request id', () => {
    const cases = [
      { t: 'req', id: 3, op: 'lock', requestNo: 0, name: 'a' },
      { t: 'req', id: 3, op: 'lock', requestNo: 1, name: '' },
      { t: 'req', id: 3, op: 'lock', requestNo: 1, name: 'x'.repeat(513) },
      { t: 'req', id: 3, op: 'lock', requestNo: 1, name: 'a', scope: 'FOREVER' },
      { t: 'req', id: 3, op: 'lock', requestNo: 1, name: 'a', timeoutMs: -1 },
      { t: 'req', id: 3, op: 'unlock', requestNo: 1.5, name: 'a' },
      { t: 'req', id: 3, op: 'locks', limit: 0 },
      { t: 'req', id: 3, op: 'drop-tables' },
    ];
    for (const frame of cases) {
      const parsed = parseClientFrame(frame);
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) {
        expect(parsed.id).toBe(3);
        expect(parsed.error.code).toBe('INVALID_ARGUMENT');
      }
    }
  });

  it('C7: rejects malformed frames and hellos with PROTOCOL_ERROR', () => {
    for (const value of [
      null,
      1,
      'hello',
      [],
      new Uint8Array(3),
      { t: 'nope' },
      { t: 'req', id: -1, op: 'ping' },
    ]) {
      const parsed = parseClientFrame(value);
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.error.code).toBe('PROTOCOL_ERROR');
    }
    expect(parseClientFrame({ t: 'hello', v: 1, principal: '', password: '' }).ok).toBe(false);
    expect(
      parseClientFrame({ t: 'hello', v: 1, principal: 'a', password: 'b', session: { id: 0, token: 't' } })
        .ok,
    ).toBe(false);
    expect(
      parseClientFrame({ t: 'hello', v: 1, principal: 'a', password: 'b', reconnectionWindowMs: 1e12 }).ok,
    ).toBe(false);
  });

  it('C7: never throws, whatever the value', () => {
    fc.assert(
      fc.property(fc.anything(), (value) => {
        parseClientFrame(value);
        parseClientFrame({
          t: 'req',
          id: 1,
          op: 'lock',
          requestNo: value,
          name: value,
          scope: value,
          timeoutMs: value,
        });
        parseClientFrame({ t: 'hello', v: value, principal: value, password: value, session: value });
      }),
      { numRuns: 2_000 },
    );
  });
});
