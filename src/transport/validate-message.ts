// Turns whatever a peer frame decoded to into a well-formed Raft `Message`, or a reason to drop it.
// The core trusts its inputs' shapes, so nothing reaches it that has not passed through here: the type is
// known, the sender is the peer that authenticated the link, the receiver is us, every field has its type
// and range, and append entries are contiguous after `prevIndex`. The message is rebuilt from the
// checked fields alone, so stray keys never travel further.

import type { ConfState, Entry, EntryType, Message, NodeId, SnapshotMeta } from '../raft/types.ts';
import type { TransportLimits } from './limits.ts';

/**
 * An application-level message between nodes (request forwarding, liveness reports): the transport
 * checks the envelope only; `body` is opaque bytes that the server decodes and validates itself.
 */
export interface AppMessage {
  readonly type: 'app';
  readonly from: NodeId;
  readonly to: NodeId;
  /** Always 0: app messages carry no Raft term (the key keeps the envelope shaped like a Message). */
  readonly term: 0;
  readonly kind: string;
  readonly body: Uint8Array;
}

export type AppValidationResult =
  | { readonly ok: true; readonly message: AppMessage }
  | { readonly ok: false; readonly reason: string };

export type ValidationResult =
  | { readonly ok: true; readonly message: Message }
  | { readonly ok: false; readonly reason: string };

class Invalid extends Error {}

function fail(reason: string): never {
  throw new Invalid(reason);
}

function field(value: Record<string, unknown>, name: string): unknown {
  return Object.hasOwn(value, name) ? value[name] : undefined;
}

function index(value: Record<string, unknown>, name: string, min = 0): number {
  const v = field(value, name);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
    fail(`${name} is not an integer ≥ ${min}`);
  return v;
}

function bool(value: Record<string, unknown>, name: string): boolean {
  const v = field(value, name);
  if (typeof v !== 'boolean') fail(`${name} is not a boolean`);
  return v;
}

function string(value: Record<string, unknown>, name: string, bytesMax: number): string {
  const v = field(value, name);
  if (typeof v !== 'string' || Buffer.byteLength(v) > bytesMax)
    fail(`${name} is not a string of ≤ ${bytesMax} bytes`);
  return v;
}

function bytes(value: Record<string, unknown>, name: string, copy: boolean): Uint8Array {
  const v = field(value, name);
  if (!(v instanceof Uint8Array)) fail(`${name} is not bytes`);
  // msgpackr decodes to Buffers that share the frame's memory; the core gets plain Uint8Array views.
  return copy ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : v;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function map(value: unknown, what: string): Record<string, unknown> {
  if (!isMap(value)) fail(`${what} is not a map`);
  return value;
}

function nodeIds(value: unknown, what: string, limits: TransportLimits): NodeId[] {
  if (!Array.isArray(value) || value.length > limits.confMembersMax) fail(`${what} is not a bounded list`);
  for (const id of value) {
    if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > limits.nodeIdBytesMax) {
      fail(`${what} holds an invalid node id`);
    }
  }
  return [...(value as string[])];
}

function snapshotMeta(value: unknown, limits: TransportLimits): SnapshotMeta {
  const meta = map(value, 'meta');
  const conf = map(field(meta, 'conf'), 'meta.conf');
  const confState: ConfState = {
    voters: nodeIds(field(conf, 'voters'), 'meta.conf.voters', limits),
    learners: nodeIds(field(conf, 'learners'), 'meta.conf.learners', limits),
  };
  return { index: index(meta, 'index'), term: index(meta, 'term'), conf: confState };
}

function entries(
  value: unknown,
  prevIndex: number,
  term: number,
  limits: TransportLimits,
  copy: boolean,
): Entry[] {
  if (!Array.isArray(value) || value.length > limits.appendEntriesMax) fail('entries is not a bounded list');
  const out: Entry[] = [];
  let previousTerm = 0;
  for (let k = 0; k < value.length; k++) {
    const entry: unknown = value[k];
    if (!isMap(entry)) fail(`entries[${k}] is not a map`);
    const entryIndex = index(entry, 'index', 1);
    if (entryIndex !== prevIndex + 1 + k)
      fail(`entries[${k}] has index ${entryIndex}, expected ${prevIndex + 1 + k}`);
    const entryTerm = index(entry, 'term', 1);
    // Terms never decrease along a log, and a leader holds no entry from a term after its own.
    if (entryTerm < previousTerm || entryTerm > term) fail(`entries[${k}] has term ${entryTerm}`);
    previousTerm = entryTerm;
    const type = field(entry, 'type');
    if (type !== 0 && type !== 1 && type !== 2) fail(`entries[${k}] has unknown type`);
    const data = bytes(entry, 'data', copy);
    if (copy) out.push({ index: entryIndex, term: entryTerm, type: type as EntryType, data });
  }
  return copy ? out : (value as Entry[]);
}

/**
 * Checks `value` and rebuilds it from the checked fields. Without `copy` (the sender's check of its own
 * message) entries and byte fields are checked but not copied: the result is only looked at, not kept.
 */
function build(
  value: unknown,
  expected: { from: NodeId; to: NodeId },
  limits: TransportLimits,
  copy: boolean,
): Message {
  const m = map(value, 'message');
  const type = field(m, 'type');
  if (field(m, 'from') !== expected.from) fail('from is not the authenticated peer');
  if (field(m, 'to') !== expected.to) fail('to is not this node');
  const base = { from: expected.from, to: expected.to, term: index(m, 'term') };
  switch (type) {
    case 'preVote':
    case 'vote':
      return {
        ...base,
        type,
        lastLogIndex: index(m, 'lastLogIndex'),
        lastLogTerm: index(m, 'lastLogTerm'),
        transfer: bool(m, 'transfer'),
      };
    case 'preVoteResp':
    case 'voteResp':
      return { ...base, type, reject: bool(m, 'reject') };
    case 'append': {
      const prevIndex = index(m, 'prevIndex');
      return {
        ...base,
        type,
        prevIndex,
        prevTerm: index(m, 'prevTerm'),
        entries: entries(field(m, 'entries'), prevIndex, base.term, limits, copy),
        commit: index(m, 'commit'),
      };
    }
    case 'appendResp':
      return {
        ...base,
        type,
        reject: bool(m, 'reject'),
        index: index(m, 'index'),
        hintIndex: index(m, 'hintIndex'),
        hintTerm: index(m, 'hintTerm'),
      };
    case 'heartbeat':
      return { ...base, type, commit: index(m, 'commit'), readRound: index(m, 'readRound') };
    case 'heartbeatResp':
      return { ...base, type, readRound: index(m, 'readRound') };
    case 'snapshot': {
      const offset = index(m, 'offset');
      const totalBytes = index(m, 'totalBytes');
      const data = bytes(m, 'data', copy);
      if (totalBytes > limits.snapshotBytesMax) fail('totalBytes exceeds snapshotBytesMax');
      if (offset + data.byteLength > totalBytes) fail('chunk runs past totalBytes');
      return { ...base, type, meta: snapshotMeta(field(m, 'meta'), limits), offset, totalBytes, data };
    }
    case 'snapshotResp':
      return {
        ...base,
        type,
        snapshotIndex: index(m, 'snapshotIndex'),
        offset: index(m, 'offset'),
        reject: bool(m, 'reject'),
        done: bool(m, 'done'),
      };
    case 'timeoutNow':
      return { ...base, type };
    case 'readIndex':
      return { ...base, type, context: string(m, 'context', limits.readContextBytesMax) };
    case 'readIndexResp':
      return {
        ...base,
        type,
        context: string(m, 'context', limits.readContextBytesMax),
        index: index(m, 'index', -1),
      };
    default:
      return fail(
        `unknown type ${JSON.stringify(typeof type === 'string' ? type.slice(0, 32) : typeof type)}`,
      );
  }
}

/**
 * Checks one decoded value against the `Message` union. `expected.from` is the peer the link
 * authenticated, `expected.to` is this node.
 */
export function validateMessage(
  value: unknown,
  expected: { readonly from: NodeId; readonly to: NodeId },
  limits: TransportLimits,
): ValidationResult {
  try {
    return { ok: true, message: build(value, expected, limits, true) };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, reason: error.message };
    throw error;
  }
}

/**
 * What `validateMessage` would find wrong with a message about to be sent, or null: the same checks,
 * without copying its entries.
 */
export function messageProblem(
  message: Message,
  expected: { readonly from: NodeId; readonly to: NodeId },
  limits: TransportLimits,
): string | null {
  try {
    build(message, expected, limits, false);
    return null;
  } catch (error) {
    if (error instanceof Invalid) return error.message;
    throw error;
  }
}

/** Checks one decoded value against the `AppMessage` envelope; the body's content is the server's to check. */
export function validateAppMessage(
  value: unknown,
  expected: { readonly from: NodeId; readonly to: NodeId },
  limits: TransportLimits,
): AppValidationResult {
  try {
    const m = map(value, 'message');
    if (field(m, 'type') !== 'app') fail('type is not app');
    if (field(m, 'from') !== expected.from) fail('from is not the authenticated peer');
    if (field(m, 'to') !== expected.to) fail('to is not this node');
    if (field(m, 'term') !== 0) fail('term of an app message is not 0');
    const kind = string(m, 'kind', limits.appKindBytesMax);
    if (kind.length === 0) fail('kind is empty');
    const body = bytes(m, 'body', true);
    if (body.byteLength > limits.appBodyBytesMax) fail('body exceeds appBodyBytesMax');
    return { ok: true, message: { type: 'app', from: expected.from, to: expected.to, term: 0, kind, body } };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, reason: error.message };
    throw error;
  }
}
