// The one error hierarchy of raftlock. A code is API: it travels on the wire, becomes the same class in
// the client and decides the CLI's exit status, so codes are never renamed or reused, only deprecated.
// Every code is documented in docs/errors.md; test/errors.test.ts keeps the two in step.

export const errorCodes = [
  'SESSION_CLOSED',
  'SESSION_NOT_FOUND',
  'CONNECTION_LOST',
  'AUTHENTICATION_FAILED',
  'PERMISSION_DENIED',
  'ABORTED',
  'TIMEOUT',
  'INVALID_ARGUMENT',
  'LIMIT_EXCEEDED',
  'STALE_REQUEST',
  'NOT_LEADER',
  'TRANSFERRING',
  'UNAVAILABLE',
  'OUTCOME_UNKNOWN',
  'PROTOCOL_ERROR',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export interface RaftlockErrorOptions {
  readonly cause?: unknown;
}

export class RaftlockError extends Error {
  override readonly name: string = 'RaftlockError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: RaftlockErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

// One subclass per code so callers can `catch (e) { if (e instanceof TimeoutError) … }` and so the
// client can rebuild the exact class from a code read off the wire (see `errorFromCode`).

export class SessionClosedError extends RaftlockError {
  override readonly name = 'SessionClosedError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('SESSION_CLOSED', message, options);
  }
}
export class SessionNotFoundError extends RaftlockError {
  override readonly name = 'SessionNotFoundError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('SESSION_NOT_FOUND', message, options);
  }
}
export class ConnectionLostError extends RaftlockError {
  override readonly name = 'ConnectionLostError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('CONNECTION_LOST', message, options);
  }
}
export class AuthenticationFailedError extends RaftlockError {
  override readonly name = 'AuthenticationFailedError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('AUTHENTICATION_FAILED', message, options);
  }
}
export class PermissionDeniedError extends RaftlockError {
  override readonly name = 'PermissionDeniedError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('PERMISSION_DENIED', message, options);
  }
}
export class AbortedError extends RaftlockError {
  override readonly name = 'AbortedError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('ABORTED', message, options);
  }
}
export class TimeoutError extends RaftlockError {
  override readonly name = 'TimeoutError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('TIMEOUT', message, options);
  }
}
export class InvalidArgumentError extends RaftlockError {
  override readonly name = 'InvalidArgumentError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
}
export class LimitExceededError extends RaftlockError {
  override readonly name = 'LimitExceededError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('LIMIT_EXCEEDED', message, options);
  }
}
export class StaleRequestError extends RaftlockError {
  override readonly name = 'StaleRequestError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('STALE_REQUEST', message, options);
  }
}
export class NotLeaderError extends RaftlockError {
  override readonly name = 'NotLeaderError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('NOT_LEADER', message, options);
  }
}
export class TransferringError extends RaftlockError {
  override readonly name = 'TransferringError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('TRANSFERRING', message, options);
  }
}
export class UnavailableError extends RaftlockError {
  override readonly name = 'UnavailableError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('UNAVAILABLE', message, options);
  }
}
export class OutcomeUnknownError extends RaftlockError {
  override readonly name = 'OutcomeUnknownError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('OUTCOME_UNKNOWN', message, options);
  }
}
export class ProtocolError extends RaftlockError {
  override readonly name = 'ProtocolError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('PROTOCOL_ERROR', message, options);
  }
}
export class InternalError extends RaftlockError {
  override readonly name = 'InternalError';
  constructor(message: string, options?: RaftlockErrorOptions) {
    super('INTERNAL', message, options);
  }
}

type ErrorClass = new (message: string, options?: RaftlockErrorOptions) => RaftlockError;

// A Record over the union makes the compiler reject a code without a class.
const classByCode: Readonly<Record<ErrorCode, ErrorClass>> = {
  SESSION_CLOSED: SessionClosedError,
  SESSION_NOT_FOUND: SessionNotFoundError,
  CONNECTION_LOST: ConnectionLostError,
  AUTHENTICATION_FAILED: AuthenticationFailedError,
  PERMISSION_DENIED: PermissionDeniedError,
  ABORTED: AbortedError,
  TIMEOUT: TimeoutError,
  INVALID_ARGUMENT: InvalidArgumentError,
  LIMIT_EXCEEDED: LimitExceededError,
  STALE_REQUEST: StaleRequestError,
  NOT_LEADER: NotLeaderError,
  TRANSFERRING: TransferringError,
  UNAVAILABLE: UnavailableError,
  OUTCOME_UNKNOWN: OutcomeUnknownError,
  PROTOCOL_ERROR: ProtocolError,
  INTERNAL: InternalError,
};

const codeSet: ReadonlySet<string> = new Set(errorCodes);

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && codeSet.has(value);
}

/** Builds the subclass for `code`, e.g. from a code read off the wire. */
export function errorFromCode(
  code: ErrorCode,
  message: string,
  options?: RaftlockErrorOptions,
): RaftlockError {
  return new classByCode[code](message, options);
}

export function isRaftlockError(value: unknown): value is RaftlockError {
  return value instanceof RaftlockError;
}
