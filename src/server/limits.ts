// Named bounds for the node and its client gateway. Kept here rather than in src/limits.ts (owned by the
// lock table's module), like src/transport/limits.ts; relations are asserted at load time below.

import { assert } from '../assert.ts';
import {
  commandOverheadBytesMax,
  commandsPerBatchMax,
  lockNameBytesMax,
  principalBytesMax,
  requestsInFlightPerSessionMax,
} from '../limits.ts';
import { grantEncodedBytesMax } from '../locks/permissions.ts';
import { clientFrameBytesMax } from '../protocol.ts';
import { transportLimits } from '../transport/limits.ts';

export const serverLimits = {
  /** A synced write on the event loop's thread slower than this sends the next ones to the pool … */
  inlineWriteSlowMs: 20,
  /** … for this long (RaftlockNode.writeInline). */
  inlineWritePauseMs: 5_000,
  /** Client commands queued for the next proposal or proposed and not yet applied, over the node. */
  proposalCommandsPendingMax: 200_000,
  /**
   * A turn whose only commands are requests to wait for a lock another session holds is proposed at most
   * this much later, or with the next command that someone is waiting on, whichever comes first (see
   * `deferrable` in node.ts). Such a request is answered only at a grant, so a millisecond costs no one,
   * and its entry rides with the holder's unlock instead of taking a round of its own.
   */
  waitProposalDeferMs: 1,
  /** A request whose deadline is nearer than this is never deferred (S14: a tryLock answers promptly). */
  waitProposalDeferDeadlineMinMs: 100,
  /** Linearizable reads (inspect calls, keepalive confirmations) waiting for their read index. */
  readsPendingMax: 10_000,
  /** Open client WebSockets, with or without a session. */
  clientConnectionsMax: 20_000,
  /** Requests one connection may have unanswered; beyond, LIMIT_EXCEEDED. */
  requestsInFlightPerConnectionMax: requestsInFlightPerSessionMax,
  /** Largest client frame (the WebSocket `maxPayload`). */
  clientFrameBytesMax,
  /** A connection whose outbound buffer passes this is closed: notices are never dropped silently. */
  clientSocketBufferedBytesMax: 16 * 1024 * 1024,
  /** A socket that has not been welcomed within this is closed (C7: unauthenticated sockets go). */
  helloTimeoutMs: 5_000,
  /** C7: frames one client connection may send per second, sustained; beyond, close 4008. */
  clientFramesPerSecondMax: 20_000,
  /** C7: frames one client connection may send in a burst. */
  clientFramesBurstMax: 40_000,
  /** C7: the answer to a failed login waits this long, doubled with each failure from the same address… */
  loginFailureDelayBaseMs: 250,
  /** …up to this. */
  loginFailureDelayMaxMs: 4_000,
  /** Liveness proposals (connectionLost, expireSession) per leader check. */
  livenessProposalsPerCheckMax: 1_000,
  /** A liveness proposal not applied within this is proposed again. */
  livenessRetryMs: 1_000,
  /** Concurrent HTTP requests on the client port. */
  httpRequestsMax: 256,
  /**
   * Client commands a node holds for the leader (forwarded or about to be, waiting to apply here);
   * beyond, UNAVAILABLE.
   */
  forwardCommandsPendingMax: 50_000,
  /** Commands in one forward message (they travel as one entry's worth). */
  forwardBatchCommandsMax: commandsPerBatchMax,
  /** A forwarded command not applied here within this is forwarded again (deduped by the table, C2). */
  forwardRetryMs: 1_000,
  /** A pending command not applied here within this fails OUTCOME_UNKNOWN (the client may retry it). */
  forwardGiveUpMs: 30_000,
  /** A forwarded openSession the leader has not answered within this fails UNAVAILABLE (not retried). */
  openSessionForwardTimeoutMs: 5_000,
  /** Keepalives waiting for a leader-acknowledged liveness report (or a ReadIndex round) to confirm them. */
  keepaliveWaitersMax: 10_000,
  /** A keepalive not confirmed within this is answered `confirmed: false`. */
  keepaliveConfirmTimeoutMs: 750,
  /** Lost connections one liveness report carries; more wait for the next report. */
  livenessLostPerReportMax: 10_000,
} as const;

for (const [name, value] of Object.entries(serverLimits)) {
  assert(Number.isSafeInteger(value) && value > 0, `server limits: ${name} must be a positive integer`);
}
assert(
  serverLimits.requestsInFlightPerConnectionMax <= requestsInFlightPerSessionMax,
  'server limits: a connection may not have more requests in flight than the dedupe window covers',
);
assert(
  serverLimits.loginFailureDelayMaxMs < serverLimits.helloTimeoutMs &&
    serverLimits.loginFailureDelayBaseMs <= serverLimits.loginFailureDelayMaxMs,
  'server limits: a delayed login failure must be answered before the hello timeout closes the socket',
);
assert(
  serverLimits.clientFramesBurstMax >= serverLimits.requestsInFlightPerConnectionMax,
  'server limits: a client must be able to send a full window of requests at once',
);
assert(
  serverLimits.forwardCommandsPendingMax <= serverLimits.proposalCommandsPendingMax,
  'server limits: a leader must be able to queue everything one follower may forward',
);
assert(
  serverLimits.forwardBatchCommandsMax *
    (Math.max(lockNameBytesMax, principalBytesMax + grantEncodedBytesMax) + commandOverheadBytesMax + 9) <=
    transportLimits.appBodyBytesMax,
  'server limits: a full forward batch (openSession commands with grants included) must fit in one app message body',
);
assert(
  9 * 2 * (serverLimits.clientConnectionsMax + serverLimits.livenessLostPerReportMax) + 64 <=
    transportLimits.appBodyBytesMax,
  'server limits: a full liveness report must fit in one app message body',
);
