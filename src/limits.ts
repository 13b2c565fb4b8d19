// Every bound in raftlock, in one place. A full queue or an oversized input is rejected with
// LIMIT_EXCEEDED or INVALID_ARGUMENT; nothing grows silently. Relations between bounds are asserted
// when this module loads, so an inconsistent edit fails at startup rather than in production.
// Plain exported consts only: other layers (raft, transport, server) add their own bounds here.

import { assert } from './assert.ts';

// --- Lock table (src/locks) -------------------------------------------------------------------

/** S1: the longest lock name, in UTF-8 bytes. */
export const lockNameBytesMax = 512;

/** The longest principal name a session can be opened with, in UTF-8 bytes. */
export const principalBytesMax = 256;

/** Sessions queued behind one lock's owner. */
export const waitersPerLockMax = 10_000;

/** Locks owned plus pending acquire requests, per session. */
export const locksAndWaitsPerSessionMax = 10_000;

/** Open sessions in the whole cluster. */
export const sessionsMax = 1_000_000;

/** Requests a client may have outstanding on one session at a time (client and gateway enforce it). */
export const requestsInFlightPerSessionMax = 128;

/**
 * Results the table keeps per session to answer retried requests exactly once (C2). A request number
 * older than this window is answered STALE_REQUEST.
 */
export const dedupeResultsPerSessionMax = 256;

/** Commands in one log entry (a batch). */
export const commandsPerBatchMax = 1024;

/** The most bytes one command other than its lock name or principal can take in an encoded entry. */
export const commandOverheadBytesMax = 64;

/** One encoded log entry. */
export const entryBytesMax = 1024 * 1024;

/** The longest reconnection window a session may ask for: one day. */
export const reconnectionWindowMsMax = 24 * 60 * 60 * 1000;

/** Locks returned by one inspect call (S15); callers page with `after`. */
export const listLocksMax = 10_000;

// --- Relations ----------------------------------------------------------------------------------

assert(lockNameBytesMax >= 1 && principalBytesMax >= 1, 'names must be allowed at least one byte');
assert(
  commandsPerBatchMax * (Math.max(lockNameBytesMax, principalBytesMax) + commandOverheadBytesMax) <=
    entryBytesMax,
  'a full batch of maximal commands must fit in one entry',
);
assert(
  requestsInFlightPerSessionMax <= dedupeResultsPerSessionMax,
  'the dedupe window must cover every request a client can have in flight, or retries go stale',
);
assert(waitersPerLockMax <= sessionsMax, 'a lock cannot have more waiting sessions than there are sessions');
assert(locksAndWaitsPerSessionMax >= 1 && sessionsMax >= 1, 'a session must be able to hold a lock');
assert(Number.isSafeInteger(reconnectionWindowMsMax), 'times are safe integers of milliseconds');
assert(listLocksMax >= 1, 'inspect must return at least one lock per page');
