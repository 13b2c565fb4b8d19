// The lock table's public face, for the node (src/server) and the simulator. The records in state.ts,
// the snapshot layout and the deadline heap stay internal.

export { decodeEntry, encodeEntry, entryFormatVersion, validateCommand, validateEntry } from './codec.ts';
export { snapshotFormatVersion } from './snapshot.ts';
export { LockTable, type LockTableOptions } from './table.ts';
export type {
  AcquireCommand,
  ApplyOutput,
  CancelCommand,
  CancelledResult,
  CloseSessionCommand,
  Command,
  CommandType,
  ConnectionLostCommand,
  DoneResult,
  Effect,
  Entry,
  ErrorResult,
  ExpireSessionCommand,
  GrantedEffect,
  GrantedResult,
  IgnoredResult,
  ListLocksOptions,
  LockInfo,
  OpenedResult,
  OpenSessionCommand,
  ReconnectCommand,
  ReleaseCommand,
  ReleasedEffect,
  ReleaseReason,
  Result,
  ScopeChangedEffect,
  SessionEndedEffect,
  SessionEndReason,
  SessionId,
  SessionInfo,
  UnlockedResult,
  WaitEndedEffect,
  WaitEndReason,
  WaitingEffect,
  WaitingResult,
} from './types.ts';
export { SessionLockScope } from './types.ts';
export { defaultLockTableLimits, type LockTableLimits, utf8ByteLength } from './validate.ts';
