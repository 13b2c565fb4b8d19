// Named bounds for peer links. Kept apart from src/limits.ts (owned by another module); the node
// asserts the relations with the Raft config: appendBytesMax and snapshotChunkBytesMax, plus framing
// overhead, must fit in peerFrameBytesMax, or such messages are dropped as oversize.

import { assert } from '../assert.ts';

export interface TransportLimits {
  /** Largest data frame we build or accept (the dialer's `maxPayload`). */
  readonly peerFrameBytesMax: number;
  /** Largest handshake frame; the listening port's `maxPayload`, since it never receives anything else. */
  readonly handshakeFrameBytesMax: number;
  /** Messages in one data frame. */
  readonly frameMessagesMax: number;
  /** Entries in one append message. */
  readonly appendEntriesMax: number;
  /** Per-peer send queue bounds; a message that does not fit is dropped and counted. */
  readonly sendQueueMessagesMax: number;
  readonly sendQueueBytesMax: number;
  /** Above this many bytes waiting in the socket's buffer, we stop writing frames until it drains. */
  readonly socketBufferedBytesHighWater: number;
  readonly reconnectBackoffBaseMs: number;
  readonly reconnectBackoffMaxMs: number;
  /** A socket that has not completed the handshake by then is closed. Also the dialer's HTTP upgrade timeout. */
  readonly authTimeoutMs: number;
  /** Inbound sockets still in their handshake; more are refused at once. */
  readonly handshakesPendingMax: number;
  /** The dialer pings this often; either end closes a link silent for `linkIdleTimeoutMs`. */
  readonly pingIntervalMs: number;
  readonly linkIdleTimeoutMs: number;
  /** How long close() waits for a peer to answer our close frame before dropping the socket. */
  readonly closeTimeoutMs: number;
  readonly nodeIdBytesMax: number;
  readonly clusterIdBytesMax: number;
  readonly clusterSecretBytesMin: number;
  /** Members (voters plus learners) named in one snapshot's membership. */
  readonly confMembersMax: number;
  readonly readContextBytesMax: number;
  /** The largest snapshot a peer may announce (`totalBytes` of a chunk). */
  readonly snapshotBytesMax: number;
  /** The largest body of one application message (forwarded requests, liveness reports). */
  readonly appBodyBytesMax: number;
  /** The longest `kind` of an application message. */
  readonly appKindBytesMax: number;
}

export const transportLimits: TransportLimits = {
  peerFrameBytesMax: 16 * 1024 * 1024,
  handshakeFrameBytesMax: 4 * 1024,
  frameMessagesMax: 4096,
  appendEntriesMax: 16 * 1024,
  sendQueueMessagesMax: 8192,
  sendQueueBytesMax: 64 * 1024 * 1024,
  socketBufferedBytesHighWater: 8 * 1024 * 1024,
  reconnectBackoffBaseMs: 50,
  reconnectBackoffMaxMs: 2000,
  authTimeoutMs: 2000,
  handshakesPendingMax: 16,
  pingIntervalMs: 500,
  linkIdleTimeoutMs: 3000,
  closeTimeoutMs: 500,
  nodeIdBytesMax: 128,
  clusterIdBytesMax: 128,
  clusterSecretBytesMin: 16,
  confMembersMax: 64,
  readContextBytesMax: 256,
  snapshotBytesMax: 4 * 1024 * 1024 * 1024,
  appBodyBytesMax: 2 * 1024 * 1024,
  appKindBytesMax: 32,
};

/** Framing overhead a data frame adds on top of its encoded messages (the MessagePack array header). */
export const frameHeaderBytesMax = 5;

export function checkTransportLimits(limits: TransportLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    assert(Number.isSafeInteger(value) && value > 0, `transport limits: ${name} must be a positive integer`);
  }
  assert(
    limits.sendQueueBytesMax >= limits.peerFrameBytesMax,
    'transport limits: a send queue must hold at least one full frame',
  );
  assert(
    limits.sendQueueMessagesMax >= 1 && limits.frameMessagesMax <= 0xffff_ffff,
    'transport limits: message counts',
  );
  assert(
    limits.handshakeFrameBytesMax >= 4 * (limits.nodeIdBytesMax + limits.clusterIdBytesMax),
    'transport limits: a hello frame must fit in handshakeFrameBytesMax',
  );
  assert(
    limits.reconnectBackoffBaseMs <= limits.reconnectBackoffMaxMs,
    'transport limits: backoff base > max',
  );
  assert(
    limits.pingIntervalMs * 2 <= limits.linkIdleTimeoutMs,
    'transport limits: idle timeout must span two pings',
  );
}

checkTransportLimits(transportLimits);
