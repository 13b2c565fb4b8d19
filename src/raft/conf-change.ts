// Membership changes travel in the log as the bytes of a tiny JSON object. The core stays free of
// dependencies this way, and a change is rare enough that the encoding's speed does not matter.

import { assert } from '../assert.ts';
import { type ConfChange, confChangeContextBytesMax } from './types.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes within `confChangeContextBytesMax`: the one check a proposal needs beyond the membership rules. */
export function confChangeContextValid(change: ConfChange): boolean {
  const context = change.context;
  return context === undefined || encoder.encode(context).byteLength <= confChangeContextBytesMax;
}

export function encodeConfChange(change: ConfChange): Uint8Array {
  // Without a context the bytes are exactly what they were before contexts existed.
  const value =
    change.context === undefined
      ? { type: change.type, node: change.node }
      : { type: change.type, node: change.node, context: change.context };
  return encoder.encode(JSON.stringify(value));
}

/** Only leaders write these entries, after validating them, so a malformed one is a broken invariant. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  const value: unknown = JSON.parse(decoder.decode(data));
  assert(typeof value === 'object' && value !== null, 'conf change: not an object');
  const { type, node, context } = value as { type?: unknown; node?: unknown; context?: unknown };
  assert(typeof node === 'string' && node.length > 0, 'conf change: bad node id');
  assert(
    type === 'addLearner' || type === 'addVoter' || type === 'remove',
    `conf change: bad type ${String(type)}`,
  );
  if (context === undefined) return { type, node };
  assert(typeof context === 'string', 'conf change: context is not a string');
  return { type, node, context };
}
