// The node's own messages between peers, carried as transport app messages (docs/peer-transport.md):
// request forwarding from a follower's gateway to the leader, and the gateways' liveness reports.
// The transport checks the envelope (authenticated sender, bounded body); every body is decoded and
// checked here, field by field, and rebuilt from the checked fields alone (C7). Commands travel as a
// lock-table entry (`encodeEntry`), so they pass the same decoder and validation as the log itself.

import { Packr, Unpackr } from 'msgpackr';
import { type ErrorCode, isErrorCode } from '../errors.ts';
import { commandsPerBatchMax } from '../limits.ts';
import { type Command, decodeEntry, encodeEntry, validateCommand } from '../locks/index.ts';
import { serverLimits } from './limits.ts';

/** A follower's gateway → the leader: commands to propose, each with the follower's id for it. */
export interface ForwardBody {
  readonly items: readonly { readonly id: number; readonly command: Command }[];
  /**
   * The follower's clock when it sent the batch. Acquire deadlines in the items are on that clock; the
   * leader moves them onto its own (S14: a timeout counts from the ask, whatever the clocks' offset).
   */
  readonly sentAtMs: number;
}

/** The leader → a follower: forwarded commands it could not propose, with why. */
export interface RefusedBody {
  readonly items: readonly { readonly id: number; readonly code: ErrorCode }[];
}

/** The leader → a follower: a forwarded openSession applied on the leader at `index`. */
export interface OpenedBody {
  readonly id: number;
  readonly session: number;
  readonly index: number;
}

/**
 * A gateway → the leader, every heartbeat: the sessions it holds open, and connections it lost. The held
 * sessions travel as a full list (`base` 0) or as the changes since report `base` of the same `stream`
 * (src/server/liveness.ts, "liveness reports as deltas"). A body without `base` is a full list (older
 * senders).
 */
export interface LivenessReportBody {
  readonly reportNo: number;
  /** (session, connection epoch): every open session connection on the gateway, or those added since `base`. */
  readonly sessions: readonly (readonly [number, number])[];
  /** (session, connection epoch) of connections that closed or went idle since the last report. */
  readonly lost: readonly (readonly [number, number])[];
  /** 0: `sessions` is the full list; otherwise the report this one builds on. */
  readonly base: number;
  /** The sender's run (a random number per process): deltas build only on reports of the same stream. */
  readonly stream: number;
  /** Deltas: (session, epoch) pairs no longer held since `base`. */
  readonly removed: readonly (readonly [number, number])[];
}

/** The leader → a gateway: report `reportNo` arrived, and leadership was confirmed by a quorum after. */
export interface LivenessAckBody {
  readonly reportNo: number;
  /** The leader applied the report and takes deltas from this sender. */
  readonly deltas?: boolean;
  /** The leader refused the report (a delta on a base it does not have): send a full list. Confirms nothing. */
  readonly resync?: boolean;
}

/** A node → the leader: a client's membership change (C5), to run there; `id` is the asker's. */
export interface AdminBody {
  readonly id: number;
  readonly op: 'addMember' | 'removeMember' | 'transferLeader';
  readonly member: string;
  /** addMember only; '' otherwise. */
  readonly peerAddress: string;
  readonly clientUrl: string;
}

/** The leader → the asker: how the membership change `id` ended; `code` '' when it succeeded. */
export interface AdminResultBody {
  readonly id: number;
  readonly code: ErrorCode | '';
  readonly message: string;
}

/** Bounds of the admin bodies' strings (the node checks ids and addresses properly). */
export const adminStringBytesMax = 512;
export const adminMessageBytesMax = 1024;

export type PeerBody =
  | { readonly kind: 'forward'; readonly body: ForwardBody }
  | { readonly kind: 'admin'; readonly body: AdminBody }
  | { readonly kind: 'adminResult'; readonly body: AdminResultBody }
  | { readonly kind: 'refused'; readonly body: RefusedBody }
  | { readonly kind: 'opened'; readonly body: OpenedBody }
  | { readonly kind: 'liveness'; readonly body: LivenessReportBody }
  | { readonly kind: 'livenessAck'; readonly body: LivenessAckBody };

export type PeerKind = PeerBody['kind'];

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodePeerBody(message: PeerBody): Uint8Array {
  switch (message.kind) {
    case 'forward': {
      // Ids ride next to an entry of the commands: the entry codec is the one that checks commands.
      const { items, sentAtMs } = message.body;
      const entry = encodeEntry({ timeMs: sentAtMs, commands: items.map((item) => item.command) });
      return packr.pack({ ids: items.map((item) => item.id), entry });
    }
    case 'refused':
      return packr.pack({
        ids: message.body.items.map((i) => i.id),
        codes: message.body.items.map((i) => i.code),
      });
    case 'opened':
    case 'admin':
    case 'adminResult':
      return packr.pack(message.body);
    case 'livenessAck': {
      const { reportNo, deltas, resync } = message.body;
      return packr.pack({
        reportNo,
        ...(deltas === true ? { deltas: 1 } : {}),
        ...(resync === true ? { resync: 1 } : {}),
      });
    }
    case 'liveness': {
      const { reportNo, sessions, lost, base, stream, removed } = message.body;
      return packr.pack({
        reportNo,
        sessions: sessions.flat(),
        lost: lost.flat(),
        base,
        stream,
        ...(removed.length > 0 ? { removed: removed.flat() } : {}),
      });
    }
    default:
      return message satisfies never;
  }
}

class Invalid extends Error {}

function fail(reason: string): never {
  throw new Invalid(reason);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function record(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array)
    fail('body is not a map');
  return value as Record<string, unknown>;
}

function count(body: Record<string, unknown>, name: string): number {
  const value = Object.hasOwn(body, name) ? body[name] : undefined;
  if (!isCount(value)) fail(`${name} is not a non-negative integer`);
  return value;
}

function text(body: Record<string, unknown>, name: string, bytesMax: number): string {
  const value = Object.hasOwn(body, name) ? body[name] : undefined;
  if (typeof value !== 'string' || Buffer.byteLength(value) > bytesMax)
    fail(`${name} is not a bounded string`);
  return value;
}

function counts(body: Record<string, unknown>, name: string, lengthMax: number): number[] {
  const value = Object.hasOwn(body, name) ? body[name] : undefined;
  if (!Array.isArray(value) || value.length > lengthMax) fail(`${name} is not a bounded list`);
  for (const item of value) if (!isCount(item)) fail(`${name} holds a non-integer`);
  return value as number[];
}

/** An optional 0/1 field; absent is false. */
function flag(body: Record<string, unknown>, name: string): boolean {
  if (!Object.hasOwn(body, name)) return false;
  const value = body[name];
  if (value !== 0 && value !== 1) fail(`${name} is not 0 or 1`);
  return value === 1;
}

function pairs(flat: readonly number[], name: string): [number, number][] {
  if (flat.length % 2 !== 0) fail(`${name} does not hold pairs`);
  const out: [number, number][] = [];
  for (let k = 0; k < flat.length; k += 2) out.push([flat[k]!, flat[k + 1]!]);
  return out;
}

/** Commands a follower may forward: the ones its gateway proposes for its clients. */
const forwardable = new Set<Command['type']>([
  'openSession',
  'reconnect',
  'closeSession',
  'acquire',
  'release',
  'cancel',
]);

function decodeBody(kind: string, bytes: Uint8Array): PeerBody {
  let raw: unknown;
  try {
    raw = unpackr.unpack(bytes);
  } catch {
    fail('body is not msgpack');
  }
  const body = record(raw);
  switch (kind) {
    case 'forward': {
      const ids = counts(body, 'ids', commandsPerBatchMax);
      const entryBytes = Object.hasOwn(body, 'entry') ? body.entry : undefined;
      if (!(entryBytes instanceof Uint8Array)) fail('entry is not bytes');
      let commands: readonly Command[];
      let sentAtMs: number;
      try {
        ({ commands, timeMs: sentAtMs } = decodeEntry(entryBytes));
        for (const command of commands) validateCommand(command);
      } catch (error) {
        fail(`entry: ${(error as Error).message}`);
      }
      if (commands.length !== ids.length) fail('ids and commands differ in length');
      for (const command of commands) {
        if (!forwardable.has(command.type)) fail(`${command.type} may not be forwarded`);
      }
      return { kind, body: { items: commands.map((command, k) => ({ id: ids[k]!, command })), sentAtMs } };
    }
    case 'refused': {
      const ids = counts(body, 'ids', commandsPerBatchMax);
      const codes = Object.hasOwn(body, 'codes') ? body.codes : undefined;
      if (!Array.isArray(codes) || codes.length !== ids.length) fail('codes is not a list matching ids');
      for (const code of codes) if (typeof code !== 'string' || !isErrorCode(code)) fail('unknown code');
      return { kind, body: { items: ids.map((id, k) => ({ id, code: codes[k] as ErrorCode })) } };
    }
    case 'opened':
      return {
        kind,
        body: { id: count(body, 'id'), session: count(body, 'session'), index: count(body, 'index') },
      };
    case 'liveness': {
      const sessionsMax = 2 * serverLimits.clientConnectionsMax;
      return {
        kind,
        body: {
          reportNo: count(body, 'reportNo'),
          sessions: pairs(counts(body, 'sessions', sessionsMax), 'sessions'),
          lost: pairs(counts(body, 'lost', 2 * serverLimits.livenessLostPerReportMax), 'lost'),
          base: Object.hasOwn(body, 'base') ? count(body, 'base') : 0,
          stream: Object.hasOwn(body, 'stream') ? count(body, 'stream') : 0,
          removed: Object.hasOwn(body, 'removed')
            ? pairs(counts(body, 'removed', sessionsMax), 'removed')
            : [],
        },
      };
    }
    case 'livenessAck':
      return {
        kind,
        body: {
          reportNo: count(body, 'reportNo'),
          ...(flag(body, 'deltas') ? { deltas: true } : {}),
          ...(flag(body, 'resync') ? { resync: true } : {}),
        },
      };
    case 'admin': {
      const op = body.op;
      if (op !== 'addMember' && op !== 'removeMember' && op !== 'transferLeader') fail('unknown admin op');
      return {
        kind,
        body: {
          id: count(body, 'id'),
          op,
          member: text(body, 'member', adminStringBytesMax),
          peerAddress: text(body, 'peerAddress', adminStringBytesMax),
          clientUrl: text(body, 'clientUrl', adminStringBytesMax),
        },
      };
    }
    case 'adminResult': {
      const code = body.code;
      if (code !== '' && !isErrorCode(code)) fail('unknown code');
      return {
        kind,
        body: { id: count(body, 'id'), code, message: text(body, 'message', adminMessageBytesMax) },
      };
    }
    default:
      return fail(`unknown kind ${JSON.stringify(kind.slice(0, 32))}`);
  }
}

export type PeerBodyResult =
  | { readonly ok: true; readonly message: PeerBody }
  | { readonly ok: false; readonly reason: string };

/** Never throws: any bytes either yield a checked body or a reason to drop them. */
export function decodePeerBody(kind: string, bytes: Uint8Array): PeerBodyResult {
  try {
    return { ok: true, message: decodeBody(kind, bytes) };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, reason: error.message };
    return { ok: false, reason: `undecodable: ${String(error)}` };
  }
}
