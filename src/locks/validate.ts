// Domain checks for commands, shared by the codec (reject on decode) and the table (answer with an
// INVALID_ARGUMENT result): the table is also driven with in-memory entries by tests and the simulator,
// so it cannot rely on every entry having passed through decodeEntry.

import {
  commandsPerBatchMax,
  dedupeResultsPerSessionMax,
  lockNameBytesMax,
  locksAndWaitsPerSessionMax,
  principalBytesMax,
  reconnectionWindowMsMax,
  sessionsMax,
  waitersPerLockMax,
} from '../limits.ts';
import { grantsProblem } from './permissions.ts';
import type { Command } from './types.ts';
import { SessionLockScope } from './types.ts';

/** The bounds one table enforces; tests shrink them to reach the edges quickly. */
export interface LockTableLimits {
  readonly lockNameBytesMax: number;
  readonly principalBytesMax: number;
  readonly waitersPerLockMax: number;
  readonly locksAndWaitsPerSessionMax: number;
  readonly sessionsMax: number;
  readonly dedupeResultsPerSessionMax: number;
  readonly reconnectionWindowMsMax: number;
  readonly commandsPerBatchMax: number;
}

export const defaultLockTableLimits: LockTableLimits = Object.freeze({
  lockNameBytesMax,
  principalBytesMax,
  waitersPerLockMax,
  locksAndWaitsPerSessionMax,
  sessionsMax,
  dedupeResultsPerSessionMax,
  reconnectionWindowMsMax,
  commandsPerBatchMax,
});

/**
 * UTF-8 length of `text`, or -1 if it holds a lone surrogate (not a Unicode string, so it has no UTF-8
 * form and two encoders could disagree about its bytes).
 */
export function utf8ByteLength(text: string): number {
  let bytes = 0;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit < 0xd800 || unit > 0xdfff) bytes += 3;
    else if (unit <= 0xdbff && i + 1 < length) {
      const low = text.charCodeAt(i + 1);
      if (low < 0xdc00 || low > 0xdfff) return -1;
      bytes += 4;
      i++;
    } else return -1;
  }
  return bytes;
}

/** Problem with a name (lock name or principal), or null. S1: non-empty, well-formed, bounded bytes. */
export function nameProblem(what: string, name: string, bytesMax: number): string | null {
  if (typeof name !== 'string') return `${what} must be a string`;
  if (name.length === 0) return `${what} must not be empty`;
  const bytes = utf8ByteLength(name);
  if (bytes < 0) return `${what} is not well-formed Unicode (lone surrogate)`;
  if (bytes > bytesMax) return `${what} is ${bytes} bytes, more than the limit of ${bytesMax}`;
  return null;
}

export function isSessionIdValue(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function positive(what: string, value: unknown): string | null {
  return isSessionIdValue(value) ? null : `${what} must be a positive safe integer`;
}

function count(what: string, value: unknown): string | null {
  return isCount(value) ? null : `${what} must be a non-negative safe integer`;
}

export function isScope(value: unknown): value is SessionLockScope {
  return (
    value === SessionLockScope.UNLOCK_ON_SESSION_LOSS || value === SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
  );
}

/** What is wrong with the values of a command whose shape is already right, or null. */
export function commandProblem(command: Command, limits: LockTableLimits): string | null {
  switch (command.type) {
    case 'openSession':
      return (
        nameProblem('principal', command.principal, limits.principalBytesMax) ??
        (isCount(command.reconnectionWindowMs) &&
        command.reconnectionWindowMs <= limits.reconnectionWindowMsMax
          ? null
          : `reconnectionWindowMs must be an integer from 0 to ${limits.reconnectionWindowMsMax}`) ??
        (command.grants === undefined ? null : grantsProblem(command.grants))
      );
    case 'reconnect':
    case 'connectionLost':
    case 'expireSession':
      return positive('session', command.session) ?? count('epoch', command.epoch);
    case 'closeSession':
      return positive('session', command.session);
    case 'acquire':
      return (
        positive('session', command.session) ??
        positive('requestNo', command.requestNo) ??
        nameProblem('lock name', command.name, limits.lockNameBytesMax) ??
        (isScope(command.scope) ? null : 'scope must be a SessionLockScope') ??
        (command.deadlineMs === undefined ? null : count('deadlineMs', command.deadlineMs))
      );
    case 'cancel':
      return positive('session', command.session) ?? positive('requestNo', command.requestNo);
    case 'release':
      return (
        positive('session', command.session) ??
        positive('requestNo', command.requestNo) ??
        nameProblem('lock name', command.name, limits.lockNameBytesMax) ??
        (command.sequence === undefined ? null : positive('sequence', command.sequence))
      );
    default:
      return `unknown command type ${JSON.stringify((command as { type?: unknown }).type)}`;
  }
}
