// The shared-connection record format (src/mux.ts): what the outbox writes reads back record for record,
// and every way a message can be malformed is named before any record is handed out (C7).

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  isCloseCode,
  MuxKind,
  MuxOutbox,
  muxLimits,
  muxMessageProblem,
  readMuxClose,
  readMuxMessage,
  toClient,
  toNode,
} from '../src/mux.ts';
import { clientFrameBytesMax } from '../src/protocol.ts';

function header(channel: number, kind: number, length: number): number[] {
  return [
    channel >>> 24,
    (channel >>> 16) & 0xff,
    (channel >>> 8) & 0xff,
    channel & 0xff,
    kind,
    length >>> 24,
    (length >>> 16) & 0xff,
    (length >>> 8) & 0xff,
    length & 0xff,
  ];
}

function records(message: Uint8Array): { channel: number; kind: number; payload: number[] }[] {
  const out: { channel: number; kind: number; payload: number[] }[] = [];
  const problem = readMuxMessage(message, toClient, (channel, kind, payload) =>
    out.push({ channel, kind, payload: [...payload] }),
  );
  expect(problem).toBeNull();
  return out;
}

describe('shared-connection records', () => {
  it('C7: frames and closes written by the outbox read back in order, one message per take', () => {
    const outbox = new MuxOutbox(toClient);
    expect(outbox.empty).toBe(true);
    outbox.pushFrame(1, Uint8Array.of(0x80));
    outbox.pushFrame(0xffffffff, Uint8Array.of(1, 2, 3));
    outbox.pushClose(7, 4006, 'ended');
    expect(outbox.empty).toBe(false);
    const messages = outbox.take();
    expect(messages).toHaveLength(1);
    expect(outbox.empty).toBe(true);
    const read = records(messages[0]!);
    expect(read.map((r) => [r.channel, r.kind])).toEqual([
      [1, MuxKind.frame],
      [0xffffffff, MuxKind.frame],
      [7, MuxKind.close],
    ]);
    expect(read[1]!.payload).toEqual([1, 2, 3]);
    expect(readMuxClose(Uint8Array.from(read[2]!.payload))).toEqual({ code: 4006, reason: 'ended' });
    expect(outbox.take()).toEqual([]);
  });

  it('C7: records past the batch size start a new message; none is split, and a big one travels alone', () => {
    const outbox = new MuxOutbox(toClient);
    const frame = new Uint8Array(clientFrameBytesMax).fill(0x81);
    const perMessage = Math.floor(muxLimits.batchBytesMax / (clientFrameBytesMax + muxLimits.headerBytes));
    for (let i = 1; i <= perMessage + 1; i++) outbox.pushFrame(i, frame);
    const big = new Uint8Array(3 * muxLimits.batchBytesMax).fill(0x82);
    outbox.pushFrame(99, big);
    outbox.pushFrame(100, Uint8Array.of(0x80));
    const messages = outbox.take();
    expect(messages).toHaveLength(4);
    expect(messages[0]!.length).toBeLessThanOrEqual(muxLimits.batchBytesMax);
    expect(records(messages[0]!).map((r) => r.channel)).toEqual(
      Array.from({ length: perMessage }, (_, i) => i + 1),
    );
    expect(records(messages[1]!).map((r) => r.channel)).toEqual([perMessage + 1]);
    expect(records(messages[2]!).map((r) => [r.channel, r.payload.length])).toEqual([[99, big.length]]);
    expect(records(messages[3]!).map((r) => r.channel)).toEqual([100]);
  });

  it('C7: toward the node a frame is at most 64 KiB, as on a socket of its own; toward the client 64 MiB', () => {
    const frame = new Uint8Array(clientFrameBytesMax + 1);
    expect(new MuxOutbox(toClient).fits(frame)).toBe(true);
    expect(new MuxOutbox(toNode).fits(frame)).toBe(false);
    expect(() => new MuxOutbox(toNode).pushFrame(1, frame)).toThrow();
    expect(new MuxOutbox(toClient).fits(new Uint8Array(toClient.frameBytesMax + 1))).toBe(false);
  });

  it('C7: a close reason is cut to 123 bytes on a character boundary', () => {
    const outbox = new MuxOutbox(toClient);
    outbox.pushClose(1, 1000, 'é'.repeat(100));
    const [record] = records(outbox.take()[0]!);
    const { reason } = readMuxClose(Uint8Array.from(record!.payload));
    expect(Buffer.byteLength(reason)).toBe(122);
    expect(reason).toBe('é'.repeat(61));
  });

  it('C7: every malformed message is named, and no record of it is handed out', () => {
    const bad: [string, number[]][] = [
      ['empty message', []],
      ['header cut short', [...header(1, 1, 1), 0x80, 0, 0]],
      ['channel 0', [...header(0, 1, 1), 0x80]],
      ['declared', [...header(1, 1, 5), 0x80]],
      ['empty frame', header(1, 1, 0)],
      ['unknown kind 3', [...header(1, 3, 1), 0]],
      ['close of 1 bytes', [...header(1, 2, 1), 0]],
      ['close code 1005', [...header(1, 2, 2), 0x03, 0xed]],
      ['close code 3000', [...header(1, 2, 2), 0x0b, 0xb8]],
      ['not UTF-8', [...header(1, 2, 3), 0x03, 0xe8, 0xff]],
    ];
    for (const [expected, bytes] of bad) {
      // A good record first: it must not be handed out either.
      const message = Uint8Array.from([...header(9, 1, 1), 0x80, ...bytes]);
      const seen: number[] = [];
      const problem = readMuxMessage(bytes.length === 0 ? new Uint8Array(0) : message, toNode, (channel) =>
        seen.push(channel),
      );
      expect(problem, expected).toContain(expected);
      expect(seen, expected).toEqual([]);
    }
    const big = new Uint8Array(muxLimits.headerBytes + clientFrameBytesMax + 1);
    big.set(header(1, 1, clientFrameBytesMax + 1));
    expect(muxMessageProblem(big, toNode)).toContain(`frame of ${clientFrameBytesMax + 1} bytes`);
    expect(muxMessageProblem(big, toClient)).toBeNull();
    expect(muxMessageProblem(new Uint8Array(toNode.messageBytesMax + 1), toNode)).toContain('message of');
  });

  it('C7: close codes are the normal ones and the application range only', () => {
    expect([1000, 1001, 4000, 4999].every(isCloseCode)).toBe(true);
    expect([0, 999, 1002, 1005, 1006, 3000, 3999, 5000].some(isCloseCode)).toBe(false);
    expect(() => new MuxOutbox(toClient).pushClose(1, 1006, '')).toThrow();
    expect(() => new MuxOutbox(toClient).pushFrame(0, Uint8Array.of(1))).toThrow();
  });

  it('C7 (property): any bytes either read back into records that re-encode to the same bytes, or are refused; nothing throws', () => {
    // Bytes biased toward record-shaped input: headers with small lengths and known kinds, then noise.
    const record = fc
      .tuple(
        fc.integer({ min: 0, max: 5 }),
        fc.constantFrom(1, 2, 3),
        fc.uint8Array({ minLength: 0, maxLength: 12 }),
        fc.integer({ min: -2, max: 2 }),
      )
      .map(([channel, kind, payload, skew]) => [
        ...header(channel, kind, Math.max(0, payload.length + skew)),
        ...payload,
      ]);
    const message = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((bytes) => [...bytes]),
      fc.array(record, { minLength: 1, maxLength: 5 }).map((records) => records.flat()),
    );
    fc.assert(
      fc.property(message, (bytes) => {
        const input = Uint8Array.from(bytes);
        const seen: { channel: number; kind: number; payload: Uint8Array }[] = [];
        const problem = readMuxMessage(input, toNode, (channel, kind, payload) =>
          seen.push({ channel, kind, payload }),
        );
        if (problem !== null) {
          expect(typeof problem).toBe('string');
          expect(seen).toEqual([]);
          return;
        }
        const outbox = new MuxOutbox(toNode);
        for (const { channel, kind, payload } of seen) {
          if (kind === MuxKind.frame) outbox.pushFrame(channel, payload);
          else {
            const close = readMuxClose(payload);
            outbox.pushClose(channel, close.code, close.reason);
          }
        }
        const out = outbox.take();
        expect(out).toHaveLength(1);
        expect([...out[0]!]).toEqual(bytes);
      }),
      { numRuns: 2000 },
    );
  });

  it('C7 (property): whatever an outbox is given reads back record for record, in order, however it is split', () => {
    const push = fc.oneof(
      fc
        .tuple(fc.integer({ min: 1, max: 0xffffffff }), fc.integer({ min: 1, max: 300_000 }))
        .map(([channel, size]) => ({ channel, frame: new Uint8Array(size).fill(size & 0xff) })),
      fc
        .tuple(
          fc.integer({ min: 1, max: 0xffffffff }),
          fc.constantFrom(1000, 1001, 4000, 4006, 4999),
          fc.string({ maxLength: 80 }),
        )
        .map(([channel, code, reason]) => ({ channel, code, reason })),
    );
    fc.assert(
      fc.property(fc.array(push, { minLength: 1, maxLength: 12 }), (pushes) => {
        const outbox = new MuxOutbox(toClient);
        for (const p of pushes) {
          if ('frame' in p) outbox.pushFrame(p.channel, p.frame);
          else outbox.pushClose(p.channel, p.code, p.reason);
        }
        const read: string[] = [];
        for (const message of outbox.take()) {
          const problem = readMuxMessage(message, toClient, (channel, kind, payload) =>
            read.push(
              kind === MuxKind.frame
                ? `${channel} frame ${payload.length} ${payload[0]}`
                : `${channel} close ${JSON.stringify(readMuxClose(payload))}`,
            ),
          );
          expect(problem).toBeNull();
        }
        const truncate = (reason: string) => {
          let bytes = Buffer.from(reason);
          if (bytes.length <= muxLimits.closeReasonBytesMax) return reason;
          let end = muxLimits.closeReasonBytesMax;
          while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end--;
          bytes = bytes.subarray(0, end);
          return bytes.toString('utf8');
        };
        expect(read).toEqual(
          pushes.map((p) =>
            'frame' in p
              ? `${p.channel} frame ${p.frame.length} ${p.frame[0]}`
              : `${p.channel} close ${JSON.stringify({ code: p.code, reason: truncate(p.reason) })}`,
          ),
        );
      }),
      { numRuns: 300 },
    );
  });
});
