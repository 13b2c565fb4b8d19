// Named bounds for the node and its client gateway. Kept here rather than in src/limits.ts (owned by the
// lock table's module), like src/transport/limits.ts; relations are asserted at load time below.

import { assert } from '../assert.ts';
import { requestsInFlightPerSessionMax } from '../limits.ts';
import { clientFrameBytesMax } from '../protocol.ts';

export const serverLimits = {
  /** Client commands queued for the next proposal or proposed and not yet applied, over the node. */
  proposalCommandsPendingMax: 200_000,
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
  /** A socket that has not sent a valid hello within this is closed. */
  helloTimeoutMs: 5_000,
  /** Liveness proposals (connectionLost, expireSession) per leader check. */
  livenessProposalsPerCheckMax: 1_000,
  /** A liveness proposal not applied within this is proposed again. */
  livenessRetryMs: 1_000,
  /** Concurrent HTTP requests on the client port. */
  httpRequestsMax: 256,
} as const;

for (const [name, value] of Object.entries(serverLimits)) {
  assert(Number.isSafeInteger(value) && value > 0, `server limits: ${name} must be a positive integer`);
}
assert(
  serverLimits.requestsInFlightPerConnectionMax <= requestsInFlightPerSessionMax,
  'server limits: a connection may not have more requests in flight than the dedupe window covers',
);
