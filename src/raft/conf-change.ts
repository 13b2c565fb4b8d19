// Membership changes travel in the log as the bytes of a tiny JSON object. The core stays free of
// dependencies this way, and a change is rare enough that the encoding's speed does not matter.

import { assert } from '../assert.ts';
import type { ConfChange } from './types.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeConfChange(change: ConfChange): Uint8Array {
  return encoder.encode(JSON.stringify({ type: change.type, node: change.node }));
}

/** Only leaders write these entries, after validating them, so a malformed one is a broken invariant. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  const value: unknown = JSON.parse(decoder.decode(data));
  assert(typeof value === 'object' && value !== null, 'conf change: not an object');
  const { type, node } = value as { type?: unknown; node?: unknown };
  assert(typeof node === 'string' && node.length > 0, 'conf change: bad node id');
  assert(
    type === 'addLearner' || type === 'addVoter' || type === 'remove',
    `conf change: bad type ${String(type)}`,
  );
  return { type, node };
}
