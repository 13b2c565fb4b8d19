// The client API (`raftlock`): connect() → Session → SessionLock, named after Diffusion's session locks.

export * from '../errors.ts';
export {
  type ConnectOptions,
  connect,
  type LockOptions,
  Session,
  SessionLock,
  SessionLockScope,
} from './session.ts';
