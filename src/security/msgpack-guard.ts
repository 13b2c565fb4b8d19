// A structural check of untrusted MessagePack bytes before msgpackr decodes them (C7). It walks the bytes
// once, iteratively (no recursion, so no stack to overflow), and refuses:
//   - nesting deeper than `depthMax` (msgpackr recurses per level: 64 KiB of 0x91 overflows its stack);
//   - more than `itemsMax` values in all (the decoder allocates per value);
//   - a container whose declared count exceeds the bytes left (every value takes at least one byte), and
//     a string or binary whose length runs past the end — so a 5-byte header cannot ask for 4 GiB;
//   - extension types (msgpackr would build Dates, Sets, Errors, RegExps… from them; no raftlock frame
//     carries one) except msgpackr's `undefined` (fixext 1, type 0), the never-used byte 0xc1, and
//     trailing bytes after the one top-level value.
// Cost: one pass over the frame, a few ns per value.

import { readU16BE, readU32BE } from '../bytes.ts';
import { ProtocolError } from '../errors.ts';

export interface MsgpackShapeLimits {
  readonly depthMax: number;
  readonly itemsMax: number;
}

/** What the client port accepts: frames are a map of scalars, a session pair and short lists. */
export const clientFrameShape: MsgpackShapeLimits = { depthMax: 8, itemsMax: 4_096 };
/** Peer handshake frames: one flat map. */
export const handshakeFrameShape: MsgpackShapeLimits = { depthMax: 4, itemsMax: 64 };

/** msgpackProblem's stack of counts still to read, kept between calls (it runs for every client frame). */
const stack: number[] = [];

/** The first thing wrong with `bytes` as one bounded MessagePack value, or null. */
export function msgpackProblem(bytes: Uint8Array, limits: MsgpackShapeLimits): string | null {
  const length = bytes.length;
  stack.length = 0;
  let remaining = 1;
  let items = 0;
  let pos = 0;
  for (;;) {
    if (remaining === 0) {
      const outer = stack.pop();
      if (outer === undefined) break;
      remaining = outer;
      continue;
    }
    remaining--;
    if (++items > limits.itemsMax) return `more than ${limits.itemsMax} values`;
    if (pos >= length) return 'truncated';
    const b = bytes[pos++] as number;
    let children = 0;
    let skip = 0;
    if (b <= 0x7f || b >= 0xe0) skip = 0;
    else if (b <= 0x8f) children = 2 * (b & 0x0f);
    else if (b <= 0x9f) children = b & 0x0f;
    else if (b <= 0xbf) skip = b & 0x1f;
    else {
      // No closures or DataView here: this runs for every frame a client sends.
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xc4:
        case 0xd9:
          if (pos + 1 > length) return 'truncated';
          skip = bytes[pos] as number;
          pos += 1;
          break;
        case 0xc5:
        case 0xda:
          if (pos + 2 > length) return 'truncated';
          skip = readU16BE(bytes, pos);
          pos += 2;
          break;
        case 0xc6:
        case 0xdb:
          if (pos + 4 > length) return 'truncated';
          skip = readU32BE(bytes, pos);
          pos += 4;
          break;
        case 0xca:
          skip = 4;
          break;
        case 0xcb:
          skip = 8;
          break;
        case 0xcc:
        case 0xd0:
          skip = 1;
          break;
        case 0xcd:
        case 0xd1:
          skip = 2;
          break;
        case 0xce:
        case 0xd2:
          skip = 4;
          break;
        case 0xcf:
        case 0xd3:
          skip = 8;
          break;
        case 0xdc:
          if (pos + 2 > length) return 'truncated';
          children = readU16BE(bytes, pos);
          pos += 2;
          break;
        case 0xdd:
          if (pos + 4 > length) return 'truncated';
          children = readU32BE(bytes, pos);
          pos += 4;
          break;
        case 0xde:
          if (pos + 2 > length) return 'truncated';
          children = 2 * readU16BE(bytes, pos);
          pos += 2;
          break;
        case 0xdf:
          if (pos + 4 > length) return 'truncated';
          children = 2 * readU32BE(bytes, pos);
          pos += 4;
          break;
        case 0xd4:
          // msgpackr writes `undefined` (an absent optional field) as fixext 1, type 0, data 0.
          if (bytes[pos] === 0x00 && bytes[pos + 1] === 0x00 && pos + 2 <= length) {
            skip = 2;
            break;
          }
          return 'extension types are not accepted';
        case 0xc1:
          return 'byte 0xc1 is never used';
        default:
          // 0xc7–0xc9 ext 8/16/32, 0xd4–0xd8 fixext.
          return 'extension types are not accepted';
      }
    }
    pos += skip;
    if (pos > length) return 'a string or binary runs past the end';
    if (children > 0) {
      if (children > length - pos) return 'a container declares more values than there are bytes';
      if (stack.length >= limits.depthMax) return `nested deeper than ${limits.depthMax}`;
      stack.push(remaining);
      remaining = children;
    }
  }
  if (pos !== length) return 'trailing bytes after the value';
  return null;
}

/** Decodes untrusted bytes after the structural check; any failure is one PROTOCOL_ERROR. */
export function unpackUntrusted(
  unpackr: { unpack(bytes: Uint8Array): unknown },
  bytes: Uint8Array,
  limits: MsgpackShapeLimits,
): unknown {
  const problem = msgpackProblem(bytes, limits);
  if (problem !== null) throw new ProtocolError(`frame rejected: ${problem}`);
  try {
    return unpackr.unpack(bytes);
  } catch (error) {
    throw new ProtocolError('frame is not valid msgpack', { cause: error });
  }
}
