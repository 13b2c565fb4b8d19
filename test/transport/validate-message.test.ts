import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { Message } from '../../src/raft/types.ts';
import { transportLimits } from '../../src/transport/limits.ts';
import { messageProblem, validateAppMessage, validateMessage } from '../../src/transport/validate-message.ts';
import { append } from './helpers.ts';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const expected = { from: 'n2', to: 'n1' };
const base = { from: 'n2', to: 'n1', term: 3 } as const;
const conf = { voters: ['n1', 'n2', 'n3'], learners: ['n4'] };

/** One valid message of every type. */
const samples: Message[] = [
  { ...base, type: 'preVote', lastLogIndex: 10, lastLogTerm: 2, transfer: false },
  { ...base, type: 'vote', lastLogIndex: 10, lastLogTerm: 3, transfer: true },
  { ...base, type: 'preVoteResp', reject: true },
  { ...base, type: 'voteResp', reject: false },
  { ...append('n2', 'n1', 4, 3, 9), term: 3 },
  { ...base, type: 'appendResp', reject: true, index: 7, hintIndex: 5, hintTerm: 2 },
  { ...base, type: 'heartbeat', commit: 4, readRound: 12 },
  { ...base, type: 'heartbeatResp', readRound: 12 },
  {
    ...base,
    type: 'snapshot',
    meta: { index: 100, term: 3, conf },
    offset: 10,
    totalBytes: 20,
    data: Uint8Array.of(1, 2, 3),
  },
  { ...base, type: 'snapshotResp', snapshotIndex: 100, offset: 13, reject: false, done: false },
  { ...base, type: 'timeoutNow' },
  { ...base, type: 'readIndex', context: 'read-17' },
  { ...base, type: 'readIndexResp', context: 'read-17', index: -1 },
];

function wireRoundTrip(value: unknown): unknown {
  return packr.unpack(packr.pack(value));
}

describe('validateMessage', () => {
  it('C7: accepts every message type after a msgpackr round trip, unchanged', () => {
    for (const message of samples) {
      const result = validateMessage(wireRoundTrip(message), expected, transportLimits);
      expect(result, message.type).toEqual({ ok: true, message });
    }
  });

  it('C7: the sender-side check (messageProblem) finds exactly what validateMessage finds, without copying', () => {
    for (const message of samples) {
      expect(messageProblem(message, expected, transportLimits), message.type).toBeNull();
      for (const key of Object.keys(message)) {
        const damaged: Record<string, unknown> = { ...message };
        delete damaged[key];
        const result = validateMessage(damaged, expected, transportLimits);
        expect(result.ok, `${message.type} without ${key}`).toBe(false);
        expect(messageProblem(damaged as unknown as Message, expected, transportLimits)).toBe(
          result.ok ? null : result.reason,
        );
      }
    }
    const gap = { ...append('n2', 'n1', 4, 3, 9), term: 3 };
    if (gap.type !== 'append') throw new Error('append() made no append');
    const entries = [...gap.entries];
    entries[1] = { ...entries[1]!, index: entries[1]!.index + 1 };
    expect(messageProblem({ ...gap, entries }, expected, transportLimits)).toMatch(/entries\[1\] has index/);
    entries[1] = { ...entries[1]!, index: entries[1]!.index - 1, data: 'x' as unknown as Uint8Array };
    expect(messageProblem({ ...gap, entries }, expected, transportLimits)).toBe('data is not bytes');
  });

  it('C7: a message missing any one field is refused', () => {
    for (const message of samples) {
      for (const key of Object.keys(message)) {
        const damaged: Record<string, unknown> = { ...message };
        delete damaged[key];
        expect(
          validateMessage(wireRoundTrip(damaged), expected, transportLimits).ok,
          `${message.type} without ${key}`,
        ).toBe(false);
      }
    }
  });

  it.each([
    ['a spoofed sender', { ...samples[6], from: 'n3' }],
    ['another receiver', { ...samples[6], to: 'n3' }],
    ['an unknown type', { ...samples[6], type: 'heartbeatPlus' }],
    ['a negative term', { ...samples[6], term: -1 }],
    ['a fractional index', { ...samples[5], index: 1.5 }],
    ['a string boolean', { ...samples[2], reject: 'yes' }],
    ['entries not following prevIndex', { ...append('n2', 'n1', 4, 2), prevIndex: 5 }],
    ['an entry term above the message term', { ...append('n2', 'n1', 4, 1), term: 1 }],
    [
      'entry data that is not bytes',
      { ...append('n2', 'n1', 0, 1), entries: [{ index: 1, term: 2, type: 0, data: 'x' }] },
    ],
    [
      'an unknown entry type',
      { ...append('n2', 'n1', 0, 1), entries: [{ index: 1, term: 2, type: 9, data: new Uint8Array() }] },
    ],
    ['a snapshot chunk past its total', { ...samples[8], offset: 18 }],
    ['a snapshot larger than the bound', { ...samples[8], totalBytes: transportLimits.snapshotBytesMax + 1 }],
    [
      'a read context past its bound',
      { ...samples[11], context: 'x'.repeat(transportLimits.readContextBytesMax + 1) },
    ],
    ['a readIndexResp index below -1', { ...samples[12], index: -2 }],
    ['an array', [samples[0]]],
    ['null', null],
  ])('C7: refuses %s', (_what, value) => {
    expect(validateMessage(wireRoundTrip(value), expected, transportLimits).ok).toBe(false);
  });

  it('C7: strips unknown fields', () => {
    const result = validateMessage(
      { ...samples[10], __proto__: { polluted: true }, extra: 1 },
      expected,
      transportLimits,
    );
    expect(result).toEqual({ ok: true, message: samples[10] });
  });

  it('C7: never throws on arbitrary values or arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.anything({ withTypedArray: true, withBigInt: true, withMap: true }), (value) => {
        const result = validateMessage(value, expected, transportLimits);
        if (result.ok) expect(result.message).toMatchObject(expected);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        let value: unknown;
        try {
          value = packr.unpack(bytes);
        } catch {
          return;
        }
        validateMessage(value, expected, transportLimits);
        if (Array.isArray(value)) for (const item of value) validateMessage(item, expected, transportLimits);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('validateAppMessage', () => {
  const app = { type: 'app', from: 'n2', to: 'n1', term: 0, kind: 'forward', body: Uint8Array.of(1, 2, 3) };

  it('C7: accepts an app envelope after a msgpackr round trip, rebuilt from its fields, body as Uint8Array', () => {
    const result = validateAppMessage(wireRoundTrip({ ...app, extra: 1 }), expected, transportLimits);
    expect(result).toEqual({ ok: true, message: app });
    expect(result.ok && result.message.body.constructor).toBe(Uint8Array);
  });

  it('C7: refuses a wrong sender, receiver, term, kind or body, and an oversized body', () => {
    const bad: [string, unknown][] = [
      ['another sender', { ...app, from: 'n3' }],
      ['another receiver', { ...app, to: 'n7' }],
      ['a Raft term', { ...app, term: 3 }],
      ['an empty kind', { ...app, kind: '' }],
      ['a long kind', { ...app, kind: 'k'.repeat(transportLimits.appKindBytesMax + 1) }],
      ['a string body', { ...app, body: 'text' }],
      ['no body', { ...app, body: undefined }],
      ['not a map', [app]],
      ['a body over the bound', { ...app, body: new Uint8Array(transportLimits.appBodyBytesMax + 1) }],
    ];
    for (const [what, value] of bad) {
      expect(validateAppMessage(wireRoundTrip(value), expected, transportLimits).ok, what).toBe(false);
    }
  });

  it('C7: a Raft message is never taken for an app message, nor an app message for a Raft one', () => {
    for (const message of samples) {
      expect(validateAppMessage(wireRoundTrip(message), expected, transportLimits).ok).toBe(false);
    }
    expect(validateMessage(wireRoundTrip(app), expected, transportLimits).ok).toBe(false);
  });

  it('C7: never throws on arbitrary values', () => {
    fc.assert(
      fc.property(fc.anything(), (value) => {
        validateAppMessage(value, expected, transportLimits);
        validateAppMessage({ ...app, body: value }, expected, transportLimits);
      }),
    );
  });
});
