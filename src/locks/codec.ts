// Log entries on disk and on the wire: msgpackr arrays (tuples), not maps, because every lock operation
// pays for its bytes in the log, in every replication message and in every fsync.
//
//   entry   = [formatVersion, timeMs, [command, …]]
//   command = [opcode, …fields]        (see the opcode table below; optional fields are trailing)
//
// Decoding trusts nothing: any byte sequence either yields a fully valid Entry or throws a
// RaftlockError (PROTOCOL_ERROR for bytes or shapes, INVALID_ARGUMENT for values, LIMIT_EXCEEDED for
// size). It never returns a half-built object and never throws anything else (C7).

import { Packr, Unpackr } from 'msgpackr';
import { assert } from '../assert.ts';
import { InvalidArgumentError, LimitExceededError, ProtocolError, RaftlockError } from '../errors.ts';
import { entryBytesMax } from '../limits.ts';
import type { Grants } from './permissions.ts';
import type { Command, Entry, SessionLockScope } from './types.ts';
import { SessionLockScope as Scope } from './types.ts';
import { commandProblem, defaultLockTableLimits } from './validate.ts';

export const entryFormatVersion = 1;

const Op = {
  openSession: 0,
  reconnect: 1,
  connectionLost: 2,
  closeSession: 3,
  expireSession: 4,
  acquire: 5,
  cancel: 6,
  release: 7,
} as const;

const scopeCode = { UNLOCK_ON_SESSION_LOSS: 0, UNLOCK_ON_CONNECTION_LOSS: 1 } as const;
const scopeByCode: readonly SessionLockScope[] = [
  Scope.UNLOCK_ON_SESSION_LOSS,
  Scope.UNLOCK_ON_CONNECTION_LOSS,
];

// Records (msgpackr's structure extension) are off: a decoder must not learn shapes from the input.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

type Tuple = readonly unknown[];

function commandToTuple(command: Command): Tuple {
  switch (command.type) {
    case 'openSession':
      return command.grants === undefined
        ? [Op.openSession, command.principal, command.reconnectionWindowMs]
        : [
            Op.openSession,
            command.principal,
            command.reconnectionWindowMs,
            [command.grants.acquire, command.grants.read, command.grants.admin ? 1 : 0],
          ];
    case 'reconnect':
      return [Op.reconnect, command.session, command.epoch];
    case 'connectionLost':
      return [Op.connectionLost, command.session, command.epoch];
    case 'closeSession':
      return [Op.closeSession, command.session];
    case 'expireSession':
      return [Op.expireSession, command.session, command.epoch];
    case 'acquire':
      return command.deadlineMs === undefined
        ? [Op.acquire, command.session, command.requestNo, command.name, scopeCode[command.scope]]
        : [
            Op.acquire,
            command.session,
            command.requestNo,
            command.name,
            scopeCode[command.scope],
            command.deadlineMs,
          ];
    case 'cancel':
      return [Op.cancel, command.session, command.requestNo];
    case 'release':
      return command.sequence === undefined
        ? [Op.release, command.session, command.requestNo, command.name]
        : [Op.release, command.session, command.requestNo, command.name, command.sequence];
  }
}

/** Throws INVALID_ARGUMENT if `command` is not one a table would accept under the default limits. */
export function validateCommand(command: Command): void {
  const problem = commandProblem(command, defaultLockTableLimits);
  if (problem !== null) throw new InvalidArgumentError(problem);
}

/** Throws a RaftlockError describing the first thing wrong with `entry`. */
export function validateEntry(entry: Entry): void {
  if (!isCount(entry.timeMs)) throw new InvalidArgumentError('timeMs must be a non-negative safe integer');
  if (!Array.isArray(entry.commands)) throw new InvalidArgumentError('commands must be an array');
  if (entry.commands.length > defaultLockTableLimits.commandsPerBatchMax) {
    throw new LimitExceededError(
      `${entry.commands.length} commands in one entry, more than ${defaultLockTableLimits.commandsPerBatchMax}`,
    );
  }
  for (let i = 0; i < entry.commands.length; i++) {
    const problem = commandProblem(entry.commands[i] as Command, defaultLockTableLimits);
    if (problem !== null) throw new InvalidArgumentError(`command ${i}: ${problem}`);
  }
}

/** Encodes a valid entry; an invalid one is the proposer's bug, answered with a typed error. */
export function encodeEntry(entry: Entry): Uint8Array {
  validateEntry(entry);
  const commands = new Array<Tuple>(entry.commands.length);
  for (let i = 0; i < commands.length; i++) commands[i] = commandToTuple(entry.commands[i] as Command);
  const bytes: Uint8Array = packr.pack([entryFormatVersion, entry.timeMs, commands]);
  if (bytes.length > entryBytesMax) {
    throw new LimitExceededError(`entry is ${bytes.length} bytes, more than ${entryBytesMax}`);
  }
  // msgpackr packs into one scratch buffer shared by every Packr in the process, and hands back a view
  // of it. An entry lives on in the Raft log until the next snapshot: as a view it would keep alive the
  // whole scratch chunk around it, every frame and record packed before and after (W5 measured about
  // 10× the entries' own bytes). A copy keeps exactly its own bytes.
  return new Uint8Array(bytes);
}

export function decodeEntry(bytes: Uint8Array): Entry {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('entry must be bytes');
  if (bytes.length > entryBytesMax) {
    throw new LimitExceededError(`entry is ${bytes.length} bytes, more than ${entryBytesMax}`);
  }
  let raw: unknown;
  try {
    raw = unpackr.unpack(bytes);
  } catch (error) {
    // msgpackr throws plain Errors and RangeErrors (deep nesting): all become one typed error.
    throw new ProtocolError('entry is not valid msgpack', { cause: error });
  }
  try {
    return entryFromRaw(raw);
  } catch (error) {
    if (error instanceof RaftlockError) throw error;
    throw new ProtocolError('entry could not be decoded', { cause: error });
  }
}

function entryFromRaw(raw: unknown): Entry {
  if (!Array.isArray(raw) || raw.length !== 3) throw new ProtocolError('entry must be a 3-element array');
  if (raw[0] !== entryFormatVersion) {
    throw new ProtocolError(
      `unsupported entry format ${JSON.stringify(typeof raw[0] === 'number' ? raw[0] : null)}`,
    );
  }
  const timeMs: unknown = raw[1];
  if (!isCount(timeMs)) throw new InvalidArgumentError('timeMs must be a non-negative safe integer');
  const tuples: unknown = raw[2];
  if (!Array.isArray(tuples)) throw new ProtocolError('commands must be an array');
  if (tuples.length > defaultLockTableLimits.commandsPerBatchMax) {
    throw new LimitExceededError(
      `${tuples.length} commands in one entry, more than ${defaultLockTableLimits.commandsPerBatchMax}`,
    );
  }
  const commands = new Array<Command>(tuples.length);
  for (let i = 0; i < tuples.length; i++) {
    const command = commandFromTuple(tuples[i], i);
    const problem = commandProblem(command, defaultLockTableLimits);
    if (problem !== null) throw new InvalidArgumentError(`command ${i}: ${problem}`);
    commands[i] = command;
  }
  return { timeMs, commands };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function field<T>(
  tuple: Tuple,
  at: number,
  guard: (value: unknown) => value is T,
  what: string,
  i: number,
): T {
  const value = tuple[at];
  if (!guard(value)) throw new ProtocolError(`command ${i}: ${what} has the wrong type`);
  return value;
}

const isNumber = (value: unknown): value is number => typeof value === 'number';
const isString = (value: unknown): value is string => typeof value === 'string';

function arity(tuple: Tuple, lengths: readonly number[], i: number): void {
  if (!lengths.includes(tuple.length)) {
    throw new ProtocolError(`command ${i}: opcode ${String(tuple[0])} takes ${lengths.join(' or ')} fields`);
  }
}

/** `[acquirePatterns, readPatterns, admin 0|1]`; the values are checked by commandProblem. */
function grantsFromTuple(value: unknown, i: number): Grants {
  if (!Array.isArray(value) || value.length !== 3)
    throw new ProtocolError(`command ${i}: grants must be a triple`);
  const [acquire, read, admin] = value as unknown[];
  if (!Array.isArray(acquire) || !Array.isArray(read) || (admin !== 0 && admin !== 1))
    throw new ProtocolError(`command ${i}: grants have the wrong shape`);
  return { acquire: acquire as string[], read: read as string[], admin: admin === 1 };
}

function commandFromTuple(value: unknown, i: number): Command {
  if (!Array.isArray(value) || value.length === 0)
    throw new ProtocolError(`command ${i} must be a non-empty array`);
  const t: Tuple = value;
  switch (t[0]) {
    case Op.openSession:
      arity(t, [3, 4], i);
      return {
        type: 'openSession',
        principal: field(t, 1, isString, 'principal', i),
        reconnectionWindowMs: field(t, 2, isNumber, 'reconnectionWindowMs', i),
        grants: t.length === 4 ? grantsFromTuple(t[3], i) : undefined,
      };
    case Op.reconnect:
    case Op.connectionLost:
    case Op.expireSession: {
      arity(t, [3], i);
      const session = field(t, 1, isNumber, 'session', i);
      const epoch = field(t, 2, isNumber, 'epoch', i);
      if (t[0] === Op.reconnect) return { type: 'reconnect', session, epoch };
      if (t[0] === Op.connectionLost) return { type: 'connectionLost', session, epoch };
      return { type: 'expireSession', session, epoch };
    }
    case Op.closeSession:
      arity(t, [2], i);
      return { type: 'closeSession', session: field(t, 1, isNumber, 'session', i) };
    case Op.acquire: {
      arity(t, [5, 6], i);
      const code = t[4];
      const scope = typeof code === 'number' ? scopeByCode[code] : undefined;
      if (scope === undefined) throw new InvalidArgumentError(`command ${i}: unknown scope code`);
      return {
        type: 'acquire',
        session: field(t, 1, isNumber, 'session', i),
        requestNo: field(t, 2, isNumber, 'requestNo', i),
        name: field(t, 3, isString, 'name', i),
        scope,
        deadlineMs: t.length === 6 ? field(t, 5, isNumber, 'deadlineMs', i) : undefined,
      };
    }
    case Op.cancel:
      arity(t, [3], i);
      return {
        type: 'cancel',
        session: field(t, 1, isNumber, 'session', i),
        requestNo: field(t, 2, isNumber, 'requestNo', i),
      };
    case Op.release:
      arity(t, [4, 5], i);
      return {
        type: 'release',
        session: field(t, 1, isNumber, 'session', i),
        requestNo: field(t, 2, isNumber, 'requestNo', i),
        name: field(t, 3, isString, 'name', i),
        sequence: t.length === 5 ? field(t, 4, isNumber, 'sequence', i) : undefined,
      };
    default:
      throw new ProtocolError(`command ${i}: unknown opcode`);
  }
}

// Keeps the two scope tables in step with SessionLockScope.
assert(
  scopeByCode.every((scope, code) => scopeCode[scope] === code) &&
    scopeByCode.length === Object.keys(Scope).length,
  'scope codes cover SessionLockScope exactly',
);
