// The client API (`raftlock`): connect() → Session → SessionLock, named after Diffusion's session locks.
// docs/client.md documents every method, option, event and error code.

export * from '../errors.ts';
export type { LockView, MembersResult, MemberView } from '../protocol.ts';
export { ConnectionPool } from './pool.ts';
export {
  type ConnectOptions,
  connect,
  type LockEndReason,
  type LockOptions,
  Session,
  type SessionEvents,
  SessionLock,
  SessionLockScope,
} from './session.ts';
