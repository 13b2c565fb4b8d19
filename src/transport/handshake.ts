// The peer handshake: mutual challenge/response over HMAC-SHA256 with the cluster secret.
//
//   dialer                                   listener
//            <- { t: 'challenge', v, nonce: nL }
//   { t: 'hello', v, cluster, from, to, nonce: nD, proof: H('hello', …) } ->
//            <- { t: 'welcome', v, proof: H('welcome', …) }
//
// H(label, …) = HMAC-SHA256(secret, JSON [label, cluster, from, to, hex nL, hex nD]). The secret never
// crosses the wire; both nonces are fresh 32 random bytes, so a recorded exchange cannot be replayed, and
// the label keeps one side's proof from being reflected as the other's. Each side proves it holds the
// secret before the other sends it a single Raft message.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Unpackr } from 'msgpackr';
import type { NodeId } from '../raft/types.ts';
import { handshakeFrameShape, msgpackProblem } from '../security/msgpack-guard.ts';
import type { TransportLimits } from './limits.ts';

export const peerProtocolVersion = 1;
/** The WebSocket path of the peer port: a client of the lock service dialling it by mistake gets a 400. */
export const peerPath = `/raftlock/peer/v${peerProtocolVersion}`;
export const nonceBytes = 32;
export const proofBytes = 32;

/** Close codes (4000–4999 is the application range). Stable: they appear in both peers' logs. */
export const PeerCloseCode = {
  authFailed: 4001,
  authTimeout: 4002,
  unknownPeer: 4003,
  protocolError: 4004,
  replaced: 4005,
  peerRemoved: 4006,
  idleTimeout: 4007,
  versionMismatch: 4008,
  tooManyHandshakes: 4009,
  shuttingDown: 1001,
} as const;
export type PeerCloseCode = (typeof PeerCloseCode)[keyof typeof PeerCloseCode];

export interface ChallengeFrame {
  readonly t: 'challenge';
  readonly v: number;
  readonly nonce: Uint8Array;
}

export interface HelloFrame {
  readonly t: 'hello';
  readonly v: number;
  readonly cluster: string;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly nonce: Uint8Array;
  readonly proof: Uint8Array;
}

export interface WelcomeFrame {
  readonly t: 'welcome';
  readonly v: number;
  readonly proof: Uint8Array;
}

export interface ProofInput {
  readonly cluster: string;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly listenerNonce: Uint8Array;
  readonly dialerNonce: Uint8Array;
}

export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(nonceBytes));
}

export function computeProof(secret: Uint8Array, label: 'hello' | 'welcome', input: ProofInput): Uint8Array {
  const transcript = JSON.stringify([
    `raftlock-peer/${peerProtocolVersion}/${label}`,
    input.cluster,
    input.from,
    input.to,
    Buffer.from(input.listenerNonce).toString('hex'),
    Buffer.from(input.dialerNonce).toString('hex'),
  ]);
  return new Uint8Array(createHmac('sha256', secret).update(transcript).digest());
}

export function proofMatches(expected: Uint8Array, received: Uint8Array): boolean {
  return received.byteLength === expected.byteLength && timingSafeEqual(expected, received);
}

const handshakeUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * Decodes a handshake frame from a stranger (C7): a flat map of a few fields, so anything nested,
 * long-listed or using extension types is refused before msgpackr allocates. Undefined when refused.
 */
export function decodeHandshakeFrame(bytes: Uint8Array): unknown {
  if (msgpackProblem(bytes, handshakeFrameShape) !== null) return undefined;
  try {
    return handshakeUnpackr.unpack(bytes);
  } catch {
    return undefined;
  }
}

function isMap(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function isBoundedString(value: unknown, bytesMax: number): value is string {
  return typeof value === 'string' && value.length > 0 && Buffer.byteLength(value) <= bytesMax;
}

function isBytes(value: unknown, length: number): value is Uint8Array {
  return value instanceof Uint8Array && value.byteLength === length;
}

/** The frame's protocol version, when it is a handshake frame at all (to tell "old peer" from "garbage"). */
export function frameVersion(value: unknown): number | undefined {
  return isMap(value) && typeof value.v === 'number' ? value.v : undefined;
}

export function parseChallenge(value: unknown): ChallengeFrame | undefined {
  if (!isMap(value) || value.t !== 'challenge' || value.v !== peerProtocolVersion) return undefined;
  if (!isBytes(value.nonce, nonceBytes)) return undefined;
  return { t: 'challenge', v: peerProtocolVersion, nonce: value.nonce };
}

export function parseHello(value: unknown, limits: TransportLimits): HelloFrame | undefined {
  if (!isMap(value) || value.t !== 'hello' || value.v !== peerProtocolVersion) return undefined;
  const { cluster, from, to, nonce, proof } = value;
  if (!isBoundedString(cluster, limits.clusterIdBytesMax)) return undefined;
  if (!isBoundedString(from, limits.nodeIdBytesMax) || !isBoundedString(to, limits.nodeIdBytesMax))
    return undefined;
  if (!isBytes(nonce, nonceBytes) || !isBytes(proof, proofBytes)) return undefined;
  return { t: 'hello', v: peerProtocolVersion, cluster, from, to, nonce, proof };
}

export function parseWelcome(value: unknown): WelcomeFrame | undefined {
  if (!isMap(value) || value.t !== 'welcome' || value.v !== peerProtocolVersion) return undefined;
  if (!isBytes(value.proof, proofBytes)) return undefined;
  return { t: 'welcome', v: peerProtocolVersion, proof: value.proof };
}
