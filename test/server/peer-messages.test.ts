// The node's peer app bodies (forwarding, liveness reports): round trips, and hostile bytes refused (C7).

import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodePeerBody, encodePeerBody, type PeerBody } from '../../src/server/peer-messages.ts';

const packr = new Packr({ useRecords: false });

const samples: PeerBody[] = [
  {
    kind: 'forward',
    body: {
      items: [
        { id: 1, command: { type: 'openSession', principal: 'control', reconnectionWindowMs: 30_000 } },
        {
          id: 2,
          command: {
            type: 'acquire',
            session: 4,
            requestNo: 9,
            name: 'a',
            scope: 'UNLOCK_ON_SESSION_LOSS',
          },
        },
        { id: 3, command: { type: 'release', session: 4, requestNo: 10, name: 'a', sequence: 7 } },
        { id: 4, command: { type: 'reconnect', session: 4, epoch: 2 } },
      ],
      sentAtMs: 123_456,
    },
  },
  { kind: 'refused', body: { items: [{ id: 2, code: 'NOT_LEADER' }] } },
  { kind: 'opened', body: { id: 1, session: 12, index: 340 } },
  {
    kind: 'liveness',
    body: {
      reportNo: 7,
      sessions: [
        [4, 2],
        [5, 0],
      ],
      lost: [[6, 1]],
      base: 0,
      stream: 99,
      removed: [],
    },
  },
  {
    kind: 'liveness',
    body: { reportNo: 8, sessions: [[7, 0]], lost: [], base: 7, stream: 99, removed: [[5, 0]] },
  },
  { kind: 'livenessAck', body: { reportNo: 7 } },
  { kind: 'livenessAck', body: { reportNo: 8, deltas: true } },
  { kind: 'livenessAck', body: { reportNo: 9, resync: true } },
];

describe('peer app bodies', () => {
  it('round-trip every kind unchanged', () => {
    for (const sample of samples) {
      expect(decodePeerBody(sample.kind, encodePeerBody(sample)), sample.kind).toEqual({
        ok: true,
        message: sample,
      });
    }
  });

  it('C7: refuse unknown kinds, bad fields, and commands a follower may not forward', () => {
    const bad: [string, unknown][] = [
      ['nope', { reportNo: 1 }],
      ['livenessAck', { reportNo: -1 }],
      ['opened', { id: 1, session: 'x', index: 3 }],
      ['liveness', { reportNo: 1, sessions: [1, 2, 3], lost: [] }],
      ['liveness', { reportNo: 1, sessions: [1, 'a'], lost: [] }],
      ['refused', { ids: [1], codes: ['LAUNCH_MISSILES'] }],
      ['refused', { ids: [1, 2], codes: ['NOT_LEADER'] }],
      ['forward', { ids: [1], entry: 'not bytes' }],
      ['forward', { ids: [1], entry: Uint8Array.of(0xc1) }],
    ];
    for (const [kind, body] of bad) {
      expect(decodePeerBody(kind, packr.pack(body)).ok, `${kind} ${JSON.stringify(body)}`).toBe(false);
    }
    const expire = encodePeerBody({
      kind: 'forward',
      body: { items: [{ id: 1, command: { type: 'expireSession', session: 1, epoch: 0 } }], sentAtMs: 0 },
    });
    expect(decodePeerBody('forward', expire).ok).toBe(false);
  });

  it('C7: never throw, whatever the bytes', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('forward', 'refused', 'opened', 'liveness', 'livenessAck', 'x'),
        fc.uint8Array({ maxLength: 256 }),
        fc.anything(),
        (kind, bytes, value) => {
          decodePeerBody(kind, bytes);
          decodePeerBody(kind, packr.pack(value));
        },
      ),
    );
  });
});
