// The CLI's exit status carries the error code (S13): 0 success, 1 usage or unexpected failure, 3 lock
// lost while `raftlock lock` ran its command, and
// 10 + the code's position in `errorCodes` for a RaftlockError, so scripts can tell TIMEOUT from
// PERMISSION_DENIED. Positions never change: codes are only ever appended.

import { errorCodes, isRaftlockError } from '../errors.ts';

export const exitUsage = 1;
/** `raftlock lock`: ownership ended while the command ran. */
export const exitLockLost = 3;
export const exitCodeBase = 10;

export function exitCodeFor(error: unknown): number {
  if (!isRaftlockError(error)) return exitUsage;
  return exitCodeBase + errorCodes.indexOf(error.code);
}
