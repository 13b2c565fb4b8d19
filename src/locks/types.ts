// The lock table's vocabulary: the commands the Raft log carries, the results it answers them with and
// the effects (grants, releases, notices) the node turns into messages for clients. All plain data.

import type { ErrorCode } from '../errors.ts';
import type { Grants } from './permissions.ts';

/** When a lock is released without an unlock (S5). Names and values follow Diffusion's API. */
export const SessionLockScope = {
  /** Released when the session closes or expires. The default. */
  UNLOCK_ON_SESSION_LOSS: 'UNLOCK_ON_SESSION_LOSS',
  /** Released also when the session's current connection is lost. The weaker of the two. */
  UNLOCK_ON_CONNECTION_LOSS: 'UNLOCK_ON_CONNECTION_LOSS',
} as const;
export type SessionLockScope = (typeof SessionLockScope)[keyof typeof SessionLockScope];

export type SessionId = number;

// --- Commands ------------------------------------------------------------------------------------

export interface OpenSessionCommand {
  readonly type: 'openSession';
  readonly principal: string;
  readonly reconnectionWindowMs: number;
  /**
   * What the principal may do (S12, S15), fixed for the session's life and checked when its commands
   * apply. Absent: every permission (sessions opened before permissions existed, and embedders without
   * a users file).
   */
  readonly grants?: Grants | undefined;
}

/** The session's client is now on a connection with `epoch`, newer than any before (S11). */
export interface ReconnectCommand {
  readonly type: 'reconnect';
  readonly session: SessionId;
  readonly epoch: number;
}

/** The leader saw the connection with `epoch` go silent past the connection-loss bound (C6). */
export interface ConnectionLostCommand {
  readonly type: 'connectionLost';
  readonly session: SessionId;
  readonly epoch: number;
}

export interface CloseSessionCommand {
  readonly type: 'closeSession';
  readonly session: SessionId;
}

/** The reconnection window of the connection with `epoch` passed without a reconnect (S11). */
export interface ExpireSessionCommand {
  readonly type: 'expireSession';
  readonly session: SessionId;
  readonly epoch: number;
}

export interface AcquireCommand {
  readonly type: 'acquire';
  readonly session: SessionId;
  readonly requestNo: number;
  readonly name: string;
  readonly scope: SessionLockScope;
  /** Leader time (as in `Entry.timeMs`) at which a still-pending request is withdrawn (S14). */
  readonly deadlineMs?: number | undefined;
}

/** Withdraws pending acquire `requestNo`, or releases the lock if its grant won the race (S14). */
export interface CancelCommand {
  readonly type: 'cancel';
  readonly session: SessionId;
  readonly requestNo: number;
}

export interface ReleaseCommand {
  readonly type: 'release';
  readonly session: SessionId;
  readonly requestNo: number;
  readonly name: string;
  /**
   * Fencing for the unlock itself: when set, only the grant with this sequence is released, so an
   * unlock sent for an old SessionLock cannot release a newer grant of the same name.
   */
  readonly sequence?: number | undefined;
}

export type Command =
  | OpenSessionCommand
  | ReconnectCommand
  | ConnectionLostCommand
  | CloseSessionCommand
  | ExpireSessionCommand
  | AcquireCommand
  | CancelCommand
  | ReleaseCommand;

export type CommandType = Command['type'];

/** One log entry: a batch of commands and the leader's clock when it proposed them. */
export interface Entry {
  /** Leader-stamped wall time, the table's only source of time. */
  readonly timeMs: number;
  readonly commands: readonly Command[];
}

// --- Results (one per command, in order) ------------------------------------------------------

export interface OpenedResult {
  readonly kind: 'opened';
  readonly session: SessionId;
}
/** The command took effect (reconnect, connectionLost, closeSession, expireSession). */
export interface DoneResult {
  readonly kind: 'done';
}
/** connectionLost or expireSession named an older connection than the session's current one. */
export interface IgnoredResult {
  readonly kind: 'ignored';
}
export interface GrantedResult {
  readonly kind: 'granted';
  readonly name: string;
  readonly sequence: number;
  readonly scope: SessionLockScope;
  /**
   * False only when a retried acquire finds its grant already released: the call completes with a
   * SessionLock that is no longer owned.
   */
  readonly held: boolean;
}
export interface WaitingResult {
  readonly kind: 'waiting';
  readonly name: string;
}
export interface UnlockedResult {
  readonly kind: 'unlocked';
  /** S6: whether the session owned the lock. */
  readonly owned: boolean;
}
export interface CancelledResult {
  readonly kind: 'cancelled';
  /** `withdrawn`: the wait was removed; `released`: the grant had won and is released; `none`: neither. */
  readonly outcome: 'withdrawn' | 'released' | 'none';
}
export interface ErrorResult {
  readonly kind: 'error';
  readonly code: ErrorCode;
  readonly message: string;
}

export type Result =
  | OpenedResult
  | DoneResult
  | IgnoredResult
  | GrantedResult
  | WaitingResult
  | UnlockedResult
  | CancelledResult
  | ErrorResult;

// --- Effects (a flat list per applied entry, in the order they happened) ----------------------

export type ReleaseReason = 'unlock' | 'sessionClosed' | 'sessionExpired' | 'connectionLost' | 'cancelled';
export type WaitEndReason = 'cancelled' | 'timeout' | 'connectionLost' | 'sessionClosed' | 'sessionExpired';
export type SessionEndReason = 'closed' | 'expired';

export interface GrantedEffect {
  readonly kind: 'granted';
  readonly session: SessionId;
  readonly name: string;
  readonly sequence: number;
  readonly scope: SessionLockScope;
  /** Every acquire request of this session that this grant completes (S4). */
  readonly requestNos: readonly number[];
}
export interface ReleasedEffect {
  readonly kind: 'released';
  readonly session: SessionId;
  readonly name: string;
  readonly sequence: number;
  readonly reason: ReleaseReason;
}
/** S5: a held grant was weakened to UNLOCK_ON_CONNECTION_LOSS by a repeat acquire. */
export interface ScopeChangedEffect {
  readonly kind: 'scopeChanged';
  readonly session: SessionId;
  readonly name: string;
  readonly sequence: number;
  readonly scope: SessionLockScope;
}
export interface WaitingEffect {
  readonly kind: 'waiting';
  readonly session: SessionId;
  readonly name: string;
  readonly requestNo: number;
}
export interface WaitEndedEffect {
  readonly kind: 'waitEnded';
  readonly session: SessionId;
  readonly name: string;
  readonly requestNo: number;
  readonly reason: WaitEndReason;
}
export interface SessionEndedEffect {
  readonly kind: 'sessionEnded';
  readonly session: SessionId;
  readonly reason: SessionEndReason;
}

export type Effect =
  | GrantedEffect
  | ReleasedEffect
  | ScopeChangedEffect
  | WaitingEffect
  | WaitEndedEffect
  | SessionEndedEffect;

export interface ApplyOutput {
  /** One per command of the entry, in order. */
  readonly results: Result[];
  readonly effects: Effect[];
}

// --- Inspection (S15) ----------------------------------------------------------------------------

export interface LockInfo {
  readonly name: string;
  readonly owner: SessionId;
  readonly sequence: number;
  readonly scope: SessionLockScope;
  /** Waiting sessions, earliest first (S7). */
  readonly waiters: readonly SessionId[];
}

export interface SessionInfo {
  readonly id: SessionId;
  readonly principal: string;
  readonly reconnectionWindowMs: number;
  /** Null: every permission. */
  readonly grants: Grants | null;
  readonly connectionEpoch: number;
  readonly connected: boolean;
  /** Leader time of the connectionLost that disconnected it; null while connected. */
  readonly connectionLostAtMs: number | null;
  readonly locks: readonly { name: string; sequence: number; scope: SessionLockScope }[];
  readonly waits: readonly { name: string; requestNos: readonly number[] }[];
}

export interface ListLocksOptions {
  /** Only names starting with this. */
  readonly prefix?: string;
  /** Only names after this one (for paging). */
  readonly after?: string;
  /** At most this many; defaults to and is capped by `listLocksMax`. */
  readonly limit?: number;
}
