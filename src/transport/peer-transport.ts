// Peer links over WebSocket: how Raft messages travel between the nodes of a cluster.
//
// Topology. Every node dials every peer, and *receives* that peer's messages over the connection it
// dialed; it *sends* its own messages over the connections its peers dialed to it. So between two nodes
// there are two sockets, each carrying one direction of traffic. The reason for this (rather than "send
// on what you dial") is hostile input (C7): the listening port is open to anyone who can reach it, and
// with this split it never has to read anything but handshake frames, so its `maxPayload` is a few KiB
// and an unauthenticated stranger can make us buffer at most that per socket. Large frames only arrive
// on connections we opened ourselves, to addresses from our own configuration, after the far end proved
// that it holds the cluster secret.
//
// Handshake: see handshake.ts (mutual HMAC challenge/response; the secret never crosses the wire).
//
// Data frames: one MessagePack array of `Message`s. Everything queued for a peer in one event-loop turn
// leaves in one frame (up to the frame bounds). Each message is encoded once, when queued, so the queue
// knows its exact size in bytes; a frame is the array header followed by those encodings.
//
// Queue policy: a peer we cannot currently send to (no authenticated link) gets nothing queued — the
// message is dropped and counted, since Raft retransmits and anything queued would be stale by the time
// the link returns. With a link up, a message that would overflow the per-peer bounds (messages or bytes)
// is dropped and counted. Writes pause while the socket's `bufferedAmount` is above the high-water mark
// and resume when a write completes.

import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import { Packr } from 'msgpackr';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { assert } from '../assert.ts';
import { writeU32BE } from '../bytes.ts';
import { RaftlockError } from '../errors.ts';
import type { Message, NodeId } from '../raft/types.ts';
import {
  computeProof,
  decodeHandshakeFrame,
  frameVersion,
  newNonce,
  PeerCloseCode,
  type ProofInput,
  parseChallenge,
  parseHello,
  parseWelcome,
  peerPath,
  peerProtocolVersion,
  proofMatches,
} from './handshake.ts';
import {
  checkTransportLimits,
  frameHeaderBytesMax,
  type TransportLimits,
  transportLimits,
} from './limits.ts';
import { type AppMessage, messageProblem, validateAppMessage, validateMessage } from './validate-message.ts';

export type { AppMessage } from './validate-message.ts';

export interface PeerAddress {
  readonly host: string;
  readonly port: number;
}

export interface TransportLogEvent {
  readonly level: 'debug' | 'info' | 'warn';
  /** snake_case event name, for example `peer_auth_failed`. */
  readonly event: string;
  readonly peer?: NodeId;
  readonly remote?: string;
  readonly code?: number;
  readonly detail?: string;
}

export interface PeerTransportOptions {
  readonly id: NodeId;
  /** Names the cluster; a peer of another cluster is refused even if it shares the secret. */
  readonly clusterId: string;
  /** The shared cluster secret, at least `clusterSecretBytesMin` bytes. */
  readonly secret: string | Uint8Array;
  /** Where to listen; port 0 picks a free one (see `address`). */
  readonly listen: PeerAddress;
  /** The other members; can be changed later with `setPeers`. */
  readonly peers?: ReadonlyMap<NodeId, PeerAddress>;
  /** Overrides of `transportLimits`, for tests and tuning. */
  readonly limits?: Partial<TransportLimits>;
  /** Uniform in [0, 1), for reconnect jitter. Default `Math.random`. */
  readonly random?: () => number;
  readonly log?: (event: TransportLogEvent) => void;
  /**
   * Mutual TLS (PEM): links use wss://, both ends present a certificate signed by `ca`, and a dialer
   * without one is refused in the TLS handshake (logged as `peer_tls_refused`). The HMAC handshake
   * runs inside as before.
   */
  readonly tls?: PeerTls | undefined;
}

export interface PeerTls {
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

export interface PeerLinkStats {
  /** We hold an authenticated link to send to this peer. */
  readonly sending: boolean;
  /** Our dialed link from this peer is authenticated: we can hear it. */
  readonly receiving: boolean;
  readonly queueMessages: number;
  readonly queueBytes: number;
  readonly framesSent: number;
  readonly bytesSent: number;
  readonly messagesSent: number;
  readonly framesReceived: number;
  readonly bytesReceived: number;
  readonly messagesReceived: number;
  /** Frames that did not decode or were not a bounded message list (the link is then closed). */
  readonly framesInvalid: number;
  /** Messages dropped by validation; the rest of their frame is delivered. */
  readonly messagesInvalid: number;
  readonly dropsQueueFull: number;
  readonly dropsDisconnected: number;
  readonly dropsOversize: number;
  /** Times a sending / receiving link came up. */
  readonly sendLinksUp: number;
  readonly receiveLinksUp: number;
  /** This peer failed our check of its proof, or refused ours. */
  readonly authFailures: number;
}

export interface TransportStats {
  readonly peers: Readonly<Record<NodeId, PeerLinkStats>>;
  /** Inbound handshakes refused: bad frames, unknown peers, wrong cluster, wrong proof. */
  readonly handshakesRejected: number;
  readonly handshakesTimedOut: number;
  /** Inbound sockets refused because `handshakesPendingMax` were already in progress. */
  readonly handshakesRefused: number;
  readonly handshakesPending: number;
  /** Messages addressed to a node that is not a configured peer. */
  readonly dropsUnknownPeer: number;
}

export type MessagesHandler = (messages: Message[], from: NodeId) => void;
/** Application messages of one frame, in order, all from `from`; bodies are unchecked bytes. */
export type AppMessagesHandler = (messages: AppMessage[], from: NodeId) => void;
/** The close reason a node gives a peer outside its configuration (with `PeerCloseCode.unknownPeer`). */
export const notMemberReason = 'not a member';

export type PeerHandler = (peer: NodeId) => void;
/** A peer's verdict on our link to it: it took us as a member (link up), or refused us as none. */
export type PeerVerdictHandler = (peer: NodeId, member: boolean) => void;

/** The options cannot work (short secret, bad id): an operator's mistake, reported before anything starts. */
export class TransportConfigError extends RaftlockError {
  override readonly name = 'TransportConfigError';

  constructor(message: string) {
    super('INVALID_ARGUMENT', `peer transport: ${message}`);
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Counters = Mutable<Omit<PeerLinkStats, 'sending' | 'receiving' | 'queueMessages' | 'queueBytes'>>;

function newCounters(): Counters {
  return {
    framesSent: 0,
    bytesSent: 0,
    messagesSent: 0,
    framesReceived: 0,
    bytesReceived: 0,
    messagesReceived: 0,
    framesInvalid: 0,
    messagesInvalid: 0,
    dropsQueueFull: 0,
    dropsDisconnected: 0,
    dropsOversize: 0,
    sendLinksUp: 0,
    receiveLinksUp: 0,
    authFailures: 0,
  };
}

/** A socket a peer (or a stranger) opened to our listening port. */
interface Accepted {
  readonly ws: WebSocket;
  readonly remote: string;
  readonly nonce: Uint8Array;
  authTimer: NodeJS.Timeout | null;
  /** Set once the dialer proved itself: from then on this socket is our sending link to it. */
  peer: NodeId | null;
  lastHeardMs: number;
  /** We refused it and sent a close frame; anything it still says is ignored. */
  rejected: boolean;
}

type DialState = 'idle' | 'awaitingChallenge' | 'awaitingWelcome' | 'open';

interface Peer {
  readonly id: NodeId;
  address: PeerAddress;
  readonly counters: Counters;
  // Sending side.
  sendLink: Accepted | null;
  queue: Uint8Array[];
  queueHead: number;
  queueBytes: number;
  flushScheduled: boolean;
  // Receiving side: the connection we dial.
  dialSocket: WebSocket | null;
  dialState: DialState;
  dialNonce: Uint8Array | null;
  dialAuthTimer: NodeJS.Timeout | null;
  dialRetryTimer: NodeJS.Timeout | null;
  dialAttempt: number;
  dialLastHeardMs: number;
  /** We closed the dial socket ourselves (so its close code is ours, not the peer's verdict). */
  dialClosedLocally: boolean;
}

export class PeerTransport {
  readonly id: NodeId;
  private readonly clusterId: string;
  private readonly secret: Buffer;
  private readonly limits: TransportLimits;
  private readonly random: () => number;
  private readonly log: (event: TransportLogEvent) => void;
  // One encoder for every frame; plain MessagePack maps so no state is shared between frames.
  private readonly packr = new Packr({ useRecords: false, mapsAsObjects: true });
  private readonly server: WebSocketServer;
  private readonly tls: PeerTls | undefined;
  private readonly tlsServer: TlsServer | null;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly handshaking = new Set<Accepted>();
  private readonly messageHandlers = new Set<MessagesHandler>();
  private readonly appHandlers = new Set<AppMessagesHandler>();
  private readonly disconnectHandlers = new Set<PeerHandler>();
  private readonly verdictHandlers = new Set<PeerVerdictHandler>();
  /** The welcome proof each dial socket expects, computed when we answered its challenge. */
  private readonly pendingWelcome = new WeakMap<WebSocket, Uint8Array>();
  private readonly pingTimer: NodeJS.Timeout;
  private readonly global = {
    handshakesRejected: 0,
    handshakesTimedOut: 0,
    handshakesRefused: 0,
    dropsUnknownPeer: 0,
  };
  private closing = false;

  private constructor(
    options: PeerTransportOptions,
    limits: TransportLimits,
    server: WebSocketServer,
    tlsServer: TlsServer | null,
  ) {
    this.id = options.id;
    this.tls = options.tls;
    this.tlsServer = tlsServer;
    this.clusterId = options.clusterId;
    this.secret = Buffer.from(options.secret);
    this.limits = limits;
    this.random = options.random ?? Math.random;
    this.log = options.log ?? (() => {});
    this.server = server;
    server.on('connection', (ws, request) => this.accept(ws, request.socket.remoteAddress ?? 'unknown'));
    this.pingTimer = setInterval(() => this.checkLinks(), limits.pingIntervalMs);
    this.pingTimer.unref();
  }

  /** Validates the options, starts listening, and starts dialling the peers. */
  static async listen(options: PeerTransportOptions): Promise<PeerTransport> {
    const limits: TransportLimits = { ...transportLimits, ...options.limits };
    checkTransportLimits(limits);
    checkNodeId(options.id, limits, 'id');
    if (options.clusterId.length === 0 || Buffer.byteLength(options.clusterId) > limits.clusterIdBytesMax) {
      throw new TransportConfigError(`clusterId must be 1..${limits.clusterIdBytesMax} bytes`);
    }
    if (Buffer.byteLength(options.secret) < limits.clusterSecretBytesMin) {
      throw new TransportConfigError(
        `the cluster secret must be at least ${limits.clusterSecretBytesMin} bytes`,
      );
    }
    // Mutual TLS: a dialer without a certificate signed by our CA never reaches the WebSocket layer.
    const tlsServer =
      options.tls === undefined
        ? null
        : createTlsServer({
            ca: options.tls.ca,
            cert: options.tls.cert,
            key: options.tls.key,
            requestCert: true,
            rejectUnauthorized: true,
            minVersion: 'TLSv1.2',
          });
    const server = new WebSocketServer({
      ...(tlsServer === null
        ? { host: options.listen.host, port: options.listen.port }
        : { server: tlsServer }),
      path: peerPath,
      perMessageDeflate: false,
      // The listening side only ever reads handshake frames; see the topology note at the top.
      maxPayload: limits.handshakeFrameBytesMax,
      clientTracking: false,
    });
    await new Promise<void>((resolve, reject) => {
      const listening = tlsServer ?? server;
      listening.once('listening', resolve);
      listening.once('error', reject);
      tlsServer?.listen(options.listen.port, options.listen.host);
    });
    const transport = new PeerTransport(options, limits, server, tlsServer);
    tlsServer?.on('tlsClientError', (error: Error, socket: { remoteAddress?: string }) =>
      transport.log({
        level: 'warn',
        event: 'peer_tls_refused',
        remote: socket.remoteAddress ?? 'unknown',
        detail: error.message,
      }),
    );
    server.on('error', (error) =>
      transport.log({ level: 'warn', event: 'peer_server_error', detail: error.message }),
    );
    if (options.peers !== undefined) transport.setPeers(options.peers);
    return transport;
  }

  /** The address actually bound (the port, when listening on port 0). */
  get address(): PeerAddress {
    const address = this.server.address();
    assert(typeof address === 'object' && address !== null, 'transport: server has no address');
    return { host: address.address, port: address.port };
  }

  /**
   * Replaces the set of peers (membership change, or addresses learned late). New peers are dialled,
   * removed ones disconnected, moved ones redialled. Only peers in this set may connect to us.
   */
  setPeers(peers: ReadonlyMap<NodeId, PeerAddress>): void {
    assert(!this.closing, 'transport: setPeers after close');
    for (const id of peers.keys()) {
      checkNodeId(id, this.limits, 'peer id');
      if (id === this.id) throw new TransportConfigError(`peer list includes this node (${id})`);
    }
    for (const [id, peer] of this.peers) {
      if (!peers.has(id)) this.removePeer(peer);
    }
    for (const [id, address] of peers) {
      const peer = this.peers.get(id);
      if (peer === undefined) {
        const added = this.newPeer(id, address);
        this.peers.set(id, added);
        this.dial(added);
      } else if (peer.address.host !== address.host || peer.address.port !== address.port) {
        peer.address = address;
        this.stopDialling(peer, PeerCloseCode.shuttingDown, 'peer moved');
        peer.dialAttempt = 0;
        this.dial(peer);
      }
    }
  }

  /** Queues messages for their `to` peers; they leave at the end of this event-loop turn. Never blocks. */
  send(messages: readonly Message[]): void {
    for (const message of messages) {
      assert(message.from === this.id, `transport: sending a message from ${message.from}, not ${this.id}`);
      assert(message.to !== this.id, 'transport: sending a message to ourselves');
      // The same checks a receiver applies: a malformed message is our bug, found here, not at the peer.
      const problem = messageProblem(message, { from: this.id, to: message.to }, this.limits);
      assert(problem === null, `transport: refusing to send an invalid ${message.type}: ${problem}`);
      const peer = this.peers.get(message.to);
      if (peer === undefined) {
        this.global.dropsUnknownPeer += 1;
        continue;
      }
      this.enqueue(peer, message);
    }
  }

  /**
   * Queues one application message (request forwarding, liveness reports: the server's own protocol,
   * `body` already encoded by it). Same queue, frames and drop policy as Raft messages: returns false
   * when it was dropped (unknown peer, no link, queue full, oversize), so the caller knows to retry.
   */
  sendApp(to: NodeId, kind: string, body: Uint8Array): boolean {
    assert(to !== this.id, 'transport: sending an app message to ourselves');
    const message: AppMessage = { type: 'app', from: this.id, to, term: 0, kind, body };
    const check = validateAppMessage(message, { from: this.id, to }, this.limits);
    assert(check.ok, `transport: refusing to send an invalid app message: ${check.ok ? '' : check.reason}`);
    const peer = this.peers.get(to);
    if (peer === undefined) {
      this.global.dropsUnknownPeer += 1;
      return false;
    }
    return this.enqueue(peer, message);
  }

  /** Called with each received frame's valid app messages (Raft messages go to `onMessages`). */
  onAppMessages(handler: AppMessagesHandler): () => void {
    this.appHandlers.add(handler);
    return () => this.appHandlers.delete(handler);
  }

  /** Called with each received frame's valid messages, all from one authenticated peer, to this node. */
  onMessages(handler: MessagesHandler): () => void {
    this.messageHandlers.add(handler);
    return () => this.messageHandlers.delete(handler);
  }

  /**
   * Called when the link over which a peer talks to us goes down (closed, refused, or silent past
   * `linkIdleTimeoutMs`): the node may treat a leader it no longer hears as gone at once.
   */
  onPeerDisconnected(handler: PeerHandler): () => void {
    this.disconnectHandlers.add(handler);
    return () => this.disconnectHandlers.delete(handler);
  }

  /**
   * Called when a peer accepts the link we dial to it (true), and when it refuses that link because we
   * are not a member of its configuration (false): what a node removed while it was down hears.
   */
  onPeerVerdict(handler: PeerVerdictHandler): () => void {
    this.verdictHandlers.add(handler);
    return () => this.verdictHandlers.delete(handler);
  }

  /** Whether messages sent to this peer now can go out (an authenticated sending link is up). */
  peerConnected(id: NodeId): boolean {
    return this.peers.get(id)?.sendLink != null;
  }

  /** Whether we currently hear this peer (our dialed link to it is authenticated). */
  peerReachable(id: NodeId): boolean {
    return this.peers.get(id)?.dialState === 'open';
  }

  stats(): TransportStats {
    const peers: Record<NodeId, PeerLinkStats> = {};
    for (const [id, peer] of this.peers) {
      peers[id] = {
        ...peer.counters,
        sending: peer.sendLink !== null,
        receiving: peer.dialState === 'open',
        queueMessages: peer.queue.length - peer.queueHead,
        queueBytes: peer.queueBytes,
      };
    }
    return { peers, ...this.global, handshakesPending: this.handshaking.size };
  }

  /** Closes every link (peers see code 1001) and the listening port. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.pingTimer);
    const closed: Promise<void>[] = [];
    for (const peer of this.peers.values()) {
      closed.push(...this.disconnectPeer(peer, PeerCloseCode.shuttingDown, 'shutting down'));
    }
    for (const accepted of this.handshaking) {
      closed.push(this.closeSocket(accepted.ws, PeerCloseCode.shuttingDown, 'shutting down'));
    }
    await Promise.all(closed);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    const tlsServer = this.tlsServer;
    if (tlsServer !== null) {
      await new Promise<void>((resolve) => {
        tlsServer.close(() => resolve());
        tlsServer.closeAllConnections();
      });
    }
  }

  // ---- sending ----

  private enqueue(peer: Peer, message: Message | AppMessage): boolean {
    if (peer.sendLink === null) {
      peer.counters.dropsDisconnected += 1;
      return false;
    }
    const encoded = this.packr.pack(message);
    if (encoded.byteLength + frameHeaderBytesMax > this.limits.peerFrameBytesMax) {
      peer.counters.dropsOversize += 1;
      this.log({
        level: 'warn',
        event: 'peer_message_oversize',
        peer: peer.id,
        detail: `${message.type} of ${encoded.byteLength} bytes exceeds peerFrameBytesMax`,
      });
      return false;
    }
    const depth = peer.queue.length - peer.queueHead;
    if (
      depth >= this.limits.sendQueueMessagesMax ||
      peer.queueBytes + encoded.byteLength > this.limits.sendQueueBytesMax
    ) {
      peer.counters.dropsQueueFull += 1;
      return false;
    }
    peer.queue.push(encoded);
    peer.queueBytes += encoded.byteLength;
    this.scheduleFlush(peer);
    return true;
  }

  /**
   * Sends what is queued now instead of at the end of the event-loop turn. The node calls it once a turn's
   * work is done (so the turn's messages still share frames) and before it waits on its disk: a leader's
   * appends then leave while its own fsync runs, not one loop iteration later.
   */
  flushQueued(): void {
    for (const peer of this.peers.values()) {
      if (peer.queueHead < peer.queue.length) this.flush(peer);
    }
  }

  private scheduleFlush(peer: Peer): void {
    if (peer.flushScheduled) return;
    peer.flushScheduled = true;
    // setImmediate, not a microtask: everything the node sends in this turn joins one frame.
    setImmediate(() => {
      peer.flushScheduled = false;
      this.flush(peer);
    });
  }

  private flush(peer: Peer): void {
    const link = peer.sendLink;
    if (link === null || link.ws.readyState !== WebSocket.OPEN) return;
    const ws = link.ws;
    while (
      peer.queueHead < peer.queue.length &&
      ws.bufferedAmount < this.limits.socketBufferedBytesHighWater
    ) {
      const frame = this.takeFrame(peer);
      peer.counters.framesSent += 1;
      peer.counters.bytesSent += frame.bytes.byteLength;
      peer.counters.messagesSent += frame.count;
      ws.send(frame.bytes, { binary: true }, (error) => {
        // A completed write is the moment the buffer has drained a little: resume if we paused.
        if (error === undefined || error === null) {
          if (peer.queueHead < peer.queue.length) this.scheduleFlush(peer);
        }
      });
    }
  }

  /** Takes queued messages up to the frame bounds and frames them as one MessagePack array. */
  private takeFrame(peer: Peer): { bytes: Buffer; count: number } {
    const start = peer.queueHead;
    let end = start;
    let payloadBytes = 0;
    const payloadBytesMax = this.limits.peerFrameBytesMax - frameHeaderBytesMax;
    while (end < peer.queue.length && end - start < this.limits.frameMessagesMax) {
      const next = peer.queue[end]!.byteLength;
      if (end > start && payloadBytes + next > payloadBytesMax) break;
      payloadBytes += next;
      end += 1;
    }
    const count = end - start;
    assert(count > 0 && payloadBytes <= payloadBytesMax, 'transport: frame bounds');
    const header = arrayHeader(count);
    const bytes = Buffer.allocUnsafe(header.byteLength + payloadBytes);
    bytes.set(header, 0);
    let offset = header.byteLength;
    for (let k = start; k < end; k++) {
      const encoded = peer.queue[k]!;
      bytes.set(encoded, offset);
      offset += encoded.byteLength;
    }
    peer.queueHead = end;
    peer.queueBytes -= payloadBytes;
    // Reclaim the consumed prefix now and then, so the array does not grow with history.
    if (peer.queueHead === peer.queue.length) {
      peer.queue = [];
      peer.queueHead = 0;
    } else if (peer.queueHead > 1024 && peer.queueHead * 2 > peer.queue.length) {
      peer.queue = peer.queue.slice(peer.queueHead);
      peer.queueHead = 0;
    }
    return { bytes, count };
  }

  private dropQueue(peer: Peer): void {
    peer.counters.dropsDisconnected += peer.queue.length - peer.queueHead;
    peer.queue = [];
    peer.queueHead = 0;
    peer.queueBytes = 0;
  }

  // ---- the listening side: handshakes, then our sending links ----

  private accept(ws: WebSocket, remote: string): void {
    ws.on('error', (error) =>
      this.log({ level: 'debug', event: 'peer_socket_error', remote, detail: error.message }),
    );
    if (this.closing) {
      ws.terminate();
      return;
    }
    if (this.handshaking.size >= this.limits.handshakesPendingMax) {
      this.global.handshakesRefused += 1;
      this.log({ level: 'warn', event: 'peer_handshakes_full', remote });
      void this.closeSocket(ws, PeerCloseCode.tooManyHandshakes, 'too many handshakes');
      return;
    }
    const accepted: Accepted = {
      ws,
      remote,
      nonce: newNonce(),
      authTimer: null,
      peer: null,
      lastHeardMs: performance.now(),
      rejected: false,
    };
    this.handshaking.add(accepted);
    accepted.authTimer = setTimeout(() => {
      this.global.handshakesTimedOut += 1;
      this.log({ level: 'warn', event: 'peer_auth_timeout', remote });
      this.reject(accepted, PeerCloseCode.authTimeout, 'authentication timeout', false);
    }, this.limits.authTimeoutMs);
    ws.on('message', (data, isBinary) => this.onAcceptedMessage(accepted, data, isBinary));
    ws.on('ping', () => {
      accepted.lastHeardMs = performance.now();
    });
    ws.on('close', () => this.onAcceptedClose(accepted));
    ws.send(this.packr.pack({ t: 'challenge', v: peerProtocolVersion, nonce: accepted.nonce }), {
      binary: true,
    });
  }

  private onAcceptedMessage(accepted: Accepted, data: RawData, isBinary: boolean): void {
    if (accepted.rejected) return;
    if (accepted.peer !== null) {
      // The dialer receives on this link; it never sends a frame after its hello.
      const peer = this.peers.get(accepted.peer);
      if (peer !== undefined) peer.counters.framesInvalid += 1;
      this.log({
        level: 'warn',
        event: 'peer_protocol_error',
        peer: accepted.peer,
        detail: 'frame on a sending link',
      });
      void this.closeSocket(accepted.ws, PeerCloseCode.protocolError, 'unexpected frame');
      return;
    }
    const verdict = this.checkHello(accepted, data, isBinary);
    if (!verdict.ok) {
      if (verdict.code === PeerCloseCode.authFailed)
        this.peers.get(verdict.peer!)!.counters.authFailures += 1;
      this.reject(accepted, verdict.code, verdict.reason, true, verdict.peer);
      return;
    }
    const { peer, input } = verdict;
    this.handshaking.delete(accepted);
    clearTimeout(accepted.authTimer!);
    accepted.authTimer = null;
    accepted.peer = peer.id;
    accepted.lastHeardMs = performance.now();
    accepted.ws.send(
      this.packr.pack({
        t: 'welcome',
        v: peerProtocolVersion,
        proof: computeProof(this.secret, 'welcome', input),
      }),
      {
        binary: true,
      },
    );
    const previous = peer.sendLink;
    peer.sendLink = accepted;
    // A peer that restarted dials again while its old socket may linger half-open: the newest wins.
    if (previous !== null) void this.closeSocket(previous.ws, PeerCloseCode.replaced, 'replaced');
    peer.counters.sendLinksUp += 1;
    this.log({ level: 'info', event: 'peer_send_link_up', peer: peer.id, remote: accepted.remote });
  }

  /** Decides whether a dialer's first frame proves it is the member it claims to be. */
  private checkHello(
    accepted: Accepted,
    data: RawData,
    isBinary: boolean,
  ):
    | { readonly ok: true; readonly peer: Peer; readonly input: ProofInput }
    | { readonly ok: false; readonly code: PeerCloseCode; readonly reason: string; readonly peer?: NodeId } {
    if (!isBinary) return { ok: false, code: PeerCloseCode.protocolError, reason: 'text frame' };
    const value = decodeHandshakeFrame(rawBytes(data));
    const hello = parseHello(value, this.limits);
    if (hello === undefined) {
      const version = frameVersion(value);
      if (version !== undefined && version !== peerProtocolVersion) {
        return { ok: false, code: PeerCloseCode.versionMismatch, reason: `protocol version ${version}` };
      }
      return { ok: false, code: PeerCloseCode.protocolError, reason: 'malformed hello' };
    }
    if (hello.cluster !== this.clusterId)
      return { ok: false, code: PeerCloseCode.unknownPeer, reason: 'wrong cluster' };
    if (hello.to !== this.id)
      return { ok: false, code: PeerCloseCode.unknownPeer, reason: 'hello for another node' };
    const peer = this.peers.get(hello.from);
    if (peer === undefined) return { ok: false, code: PeerCloseCode.unknownPeer, reason: notMemberReason };
    const input: ProofInput = {
      cluster: this.clusterId,
      from: hello.from,
      to: this.id,
      listenerNonce: accepted.nonce,
      dialerNonce: hello.nonce,
    };
    if (!proofMatches(computeProof(this.secret, 'hello', input), hello.proof)) {
      return { ok: false, code: PeerCloseCode.authFailed, reason: 'authentication failed', peer: peer.id };
    }
    return { ok: true, peer, input };
  }

  private reject(
    accepted: Accepted,
    code: PeerCloseCode,
    reason: string,
    counted = true,
    peer?: NodeId,
  ): void {
    if (accepted.rejected) return;
    accepted.rejected = true;
    if (counted) this.global.handshakesRejected += 1;
    if (code !== PeerCloseCode.authTimeout) {
      this.log({
        level: 'warn',
        event: 'peer_handshake_rejected',
        remote: accepted.remote,
        peer,
        code,
        detail: reason,
      });
    }
    void this.closeSocket(accepted.ws, code, reason);
  }

  private onAcceptedClose(accepted: Accepted): void {
    if (accepted.authTimer !== null) clearTimeout(accepted.authTimer);
    this.handshaking.delete(accepted);
    if (accepted.peer === null) return;
    const peer = this.peers.get(accepted.peer);
    if (peer === undefined || peer.sendLink !== accepted) return;
    peer.sendLink = null;
    this.dropQueue(peer);
    this.log({ level: 'info', event: 'peer_send_link_down', peer: peer.id });
  }

  // ---- the dialling side: our receiving links ----

  private newPeer(id: NodeId, address: PeerAddress): Peer {
    return {
      id,
      address,
      counters: newCounters(),
      sendLink: null,
      queue: [],
      queueHead: 0,
      queueBytes: 0,
      flushScheduled: false,
      dialSocket: null,
      dialState: 'idle',
      dialNonce: null,
      dialAuthTimer: null,
      dialRetryTimer: null,
      dialAttempt: 0,
      dialLastHeardMs: 0,
      dialClosedLocally: false,
    };
  }

  private dial(peer: Peer): void {
    assert(peer.dialSocket === null, `transport: already dialling ${peer.id}`);
    peer.dialRetryTimer = null;
    const host = peer.address.host.includes(':') ? `[${peer.address.host}]` : peer.address.host;
    const scheme = this.tls === undefined ? 'ws' : 'wss';
    const ws = new WebSocket(`${scheme}://${host}:${peer.address.port}${peerPath}`, {
      perMessageDeflate: false,
      maxPayload: this.limits.peerFrameBytesMax,
      handshakeTimeout: this.limits.authTimeoutMs,
      ...(this.tls === undefined ? {} : { ca: this.tls.ca, cert: this.tls.cert, key: this.tls.key }),
    });
    peer.dialSocket = ws;
    peer.dialState = 'awaitingChallenge';
    peer.dialNonce = newNonce();
    peer.dialLastHeardMs = performance.now();
    peer.dialClosedLocally = false;
    peer.dialAuthTimer = setTimeout(() => {
      this.log({ level: 'warn', event: 'peer_dial_auth_timeout', peer: peer.id });
      ws.terminate();
    }, this.limits.authTimeoutMs);
    ws.on('error', (error) => {
      // A certificate the CA did not sign (or no certificate) is a refusal worth an operator's attention.
      const tlsRefused =
        this.tls !== undefined && /certificate|self.signed|handshake|alert/i.test(error.message);
      this.log({
        level: tlsRefused ? 'warn' : 'debug',
        event: tlsRefused ? 'peer_tls_refused' : 'peer_dial_error',
        peer: peer.id,
        detail: error.message,
      });
    });
    ws.on('pong', () => {
      peer.dialLastHeardMs = performance.now();
    });
    ws.on('message', (data, isBinary) => {
      if (peer.dialSocket === ws) this.onDialMessage(peer, ws, data, isBinary);
    });
    ws.on('close', (code, reason) => {
      if (peer.dialSocket === ws) this.onDialClose(peer, code, reason.toString());
    });
  }

  private onDialMessage(peer: Peer, ws: WebSocket, data: RawData, isBinary: boolean): void {
    peer.dialLastHeardMs = performance.now();
    const bytes = rawBytes(data);
    // Until the far end has proved the secret, its frames are handshake frames and checked as such (C7).
    const value = !isBinary
      ? undefined
      : peer.dialState === 'open'
        ? this.decode(bytes)
        : decodeHandshakeFrame(bytes);
    switch (peer.dialState) {
      case 'awaitingChallenge': {
        const challenge = parseChallenge(value);
        if (challenge === undefined) {
          this.dialProtocolError(peer, ws, 'malformed challenge');
          return;
        }
        const input = {
          cluster: this.clusterId,
          from: this.id,
          to: peer.id,
          listenerNonce: challenge.nonce,
          dialerNonce: peer.dialNonce!,
        };
        peer.dialNonce = null;
        peer.dialState = 'awaitingWelcome';
        this.pendingWelcome.set(ws, computeProof(this.secret, 'welcome', input));
        const hello = {
          t: 'hello',
          v: peerProtocolVersion,
          cluster: this.clusterId,
          from: this.id,
          to: peer.id,
          nonce: input.dialerNonce,
          proof: computeProof(this.secret, 'hello', input),
        };
        ws.send(this.packr.pack(hello), { binary: true });
        return;
      }
      case 'awaitingWelcome': {
        const welcome = parseWelcome(value);
        const expected = this.pendingWelcome.get(ws);
        this.pendingWelcome.delete(ws);
        if (welcome === undefined || expected === undefined) {
          this.dialProtocolError(peer, ws, 'malformed welcome');
          return;
        }
        if (!proofMatches(expected, welcome.proof)) {
          // Whoever answers at this address does not hold the secret: never accept a Raft message from it.
          peer.counters.authFailures += 1;
          this.log({
            level: 'warn',
            event: 'peer_auth_failed',
            peer: peer.id,
            detail: 'the peer failed to prove the secret',
          });
          peer.dialClosedLocally = true;
          void this.closeSocket(ws, PeerCloseCode.authFailed, 'authentication failed');
          return;
        }
        clearTimeout(peer.dialAuthTimer!);
        peer.dialAuthTimer = null;
        peer.dialState = 'open';
        peer.dialAttempt = 0;
        peer.counters.receiveLinksUp += 1;
        this.log({ level: 'info', event: 'peer_receive_link_up', peer: peer.id });
        for (const handler of this.verdictHandlers) handler(peer.id, true);
        return;
      }
      case 'open':
        this.receiveFrame(peer, ws, value, bytes.byteLength);
        return;
      case 'idle':
        assert(false, `transport: message on idle dial link to ${peer.id}`);
    }
  }

  private receiveFrame(peer: Peer, ws: WebSocket, value: unknown, frameBytes: number): void {
    peer.counters.framesReceived += 1;
    peer.counters.bytesReceived += frameBytes;
    if (!Array.isArray(value) || value.length > this.limits.frameMessagesMax) {
      // An authenticated peer sending garbage is broken or the stream is damaged: start the link afresh.
      this.dialProtocolError(peer, ws, 'frame is not a bounded message list');
      return;
    }
    const messages: Message[] = [];
    const apps: AppMessage[] = [];
    let firstReason: string | undefined;
    const expected = { from: peer.id, to: this.id };
    for (const item of value) {
      // Only the discriminant is peeked at here; each validator checks the whole shape.
      const isApp = typeof item === 'object' && item !== null && (item as { type?: unknown }).type === 'app';
      const result = isApp
        ? validateAppMessage(item, expected, this.limits)
        : validateMessage(item, expected, this.limits);
      if (result.ok) {
        const message = result.message;
        if (message.type === 'app') apps.push(message);
        else messages.push(message);
      } else {
        peer.counters.messagesInvalid += 1;
        firstReason ??= result.reason;
      }
    }
    if (firstReason !== undefined) {
      this.log({
        level: 'warn',
        event: 'peer_message_invalid',
        peer: peer.id,
        detail: `${value.length - messages.length - apps.length} dropped; first: ${firstReason}`,
      });
    }
    peer.counters.messagesReceived += messages.length + apps.length;
    if (messages.length > 0) for (const handler of this.messageHandlers) handler(messages, peer.id);
    if (apps.length > 0) for (const handler of this.appHandlers) handler(apps, peer.id);
  }

  private dialProtocolError(peer: Peer, ws: WebSocket, detail: string): void {
    peer.counters.framesInvalid += 1;
    this.log({ level: 'warn', event: 'peer_protocol_error', peer: peer.id, detail });
    peer.dialClosedLocally = true;
    void this.closeSocket(ws, PeerCloseCode.protocolError, 'protocol error');
  }

  private onDialClose(peer: Peer, code: number, reason: string): void {
    const wasOpen = peer.dialState === 'open';
    if (peer.dialAuthTimer !== null) clearTimeout(peer.dialAuthTimer);
    peer.dialAuthTimer = null;
    peer.dialSocket = null;
    peer.dialState = 'idle';
    peer.dialNonce = null;
    const refused =
      code === PeerCloseCode.authFailed ||
      code === PeerCloseCode.unknownPeer ||
      code === PeerCloseCode.versionMismatch;
    if (refused && !peer.dialClosedLocally) {
      if (code === PeerCloseCode.authFailed) peer.counters.authFailures += 1;
      this.log({ level: 'warn', event: 'peer_refused_us', peer: peer.id, code, detail: reason });
      if (code === PeerCloseCode.unknownPeer && reason === notMemberReason)
        for (const handler of this.verdictHandlers) handler(peer.id, false);
    }
    if (wasOpen) {
      this.log({ level: 'info', event: 'peer_receive_link_down', peer: peer.id, code, detail: reason });
      for (const handler of this.disconnectHandlers) handler(peer.id);
    }
    if (!this.closing && this.peers.get(peer.id) === peer) this.scheduleRedial(peer);
  }

  private scheduleRedial(peer: Peer): void {
    // Equal jitter: half the exponential delay fixed, half random, so restarted peers do not redial in step.
    const ceilingMs = Math.min(
      this.limits.reconnectBackoffMaxMs,
      this.limits.reconnectBackoffBaseMs * 2 ** Math.min(peer.dialAttempt, 30),
    );
    const delayMs = ceilingMs / 2 + this.random() * (ceilingMs / 2);
    peer.dialAttempt += 1;
    peer.dialRetryTimer = setTimeout(() => this.dial(peer), delayMs);
  }

  private stopDialling(peer: Peer, code: PeerCloseCode, reason: string): Promise<void> {
    if (peer.dialRetryTimer !== null) clearTimeout(peer.dialRetryTimer);
    peer.dialRetryTimer = null;
    const ws = peer.dialSocket;
    if (ws === null) return Promise.resolve();
    // Detach first, so the close does not schedule a redial or report a disconnect for an old address.
    const wasOpen = peer.dialState === 'open';
    if (peer.dialAuthTimer !== null) clearTimeout(peer.dialAuthTimer);
    peer.dialAuthTimer = null;
    peer.dialSocket = null;
    peer.dialState = 'idle';
    if (wasOpen && !this.closing) for (const handler of this.disconnectHandlers) handler(peer.id);
    return this.closeSocket(ws, code, reason);
  }

  private removePeer(peer: Peer): void {
    this.peers.delete(peer.id);
    void Promise.all(this.disconnectPeer(peer, PeerCloseCode.peerRemoved, 'removed from the cluster'));
  }

  private disconnectPeer(peer: Peer, code: PeerCloseCode, reason: string): Promise<void>[] {
    const closed = [this.stopDialling(peer, code, reason)];
    const link = peer.sendLink;
    if (link !== null) {
      peer.sendLink = null;
      this.dropQueue(peer);
      closed.push(this.closeSocket(link.ws, code, reason));
    }
    return closed;
  }

  // ---- liveness ----

  /** Pings our dialed links and drops links silent for longer than `linkIdleTimeoutMs`. */
  private checkLinks(): void {
    const now = performance.now();
    for (const peer of this.peers.values()) {
      const ws = peer.dialSocket;
      if (ws !== null && peer.dialState === 'open') {
        if (now - peer.dialLastHeardMs > this.limits.linkIdleTimeoutMs) {
          this.log({ level: 'warn', event: 'peer_link_idle', peer: peer.id, detail: 'no pong' });
          ws.terminate();
        } else {
          ws.ping();
        }
      }
      const link = peer.sendLink;
      if (link !== null && now - link.lastHeardMs > this.limits.linkIdleTimeoutMs) {
        this.log({ level: 'warn', event: 'peer_link_idle', peer: peer.id, detail: 'no ping' });
        link.ws.terminate();
      }
    }
  }

  // ---- helpers ----

  private decode(data: RawData | Uint8Array): unknown {
    try {
      return this.packr.unpack(rawBytes(data));
    } catch {
      // Garbage, truncated, too deep: all the same to us — not a frame.
      return undefined;
    }
  }

  /** Sends a close frame; drops the socket if the other end has not answered within `closeTimeoutMs`. */
  private closeSocket(ws: WebSocket, code: number, reason: string): Promise<void> {
    if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => ws.terminate(), this.limits.closeTimeoutMs);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    });
  }
}

function checkNodeId(id: string, limits: TransportLimits, what: string): void {
  if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > limits.nodeIdBytesMax) {
    throw new TransportConfigError(`${what} must be a string of 1..${limits.nodeIdBytesMax} bytes`);
  }
}

function rawBytes(data: RawData | Uint8Array): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return new Uint8Array(data);
}

/** The MessagePack header of an array of `count` items. */
function arrayHeader(count: number): Uint8Array {
  if (count < 16) return Uint8Array.of(0x90 | count);
  if (count <= 0xffff) return Uint8Array.of(0xdc, count >> 8, count & 0xff);
  const header = new Uint8Array(5);
  header[0] = 0xdd;
  writeU32BE(header, 1, count);
  return header;
}
