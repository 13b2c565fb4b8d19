// The client gateway: HTTP (`/status`, `/healthz`) and the client WebSocket protocol (docs/protocol.md)
// on the node's client port.
//
// Every node's gateway serves clients, leader or follower: the node hands their commands to the leader
// (src/server/node.ts) and answers them when the entry applies here; a leader change does not touch the
// connections. Only a node that knows no leader refuses a hello (NOT_LEADER). Grants and loss notices are
// pushed by the gateway that holds the connection, from the effects of entries as they apply here —
// never before commit (S9). Answers and notices are written synchronously in apply order.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { Packr, Unpackr } from 'msgpackr';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import { assert } from '../assert.ts';
import {
  AuthenticationFailedError,
  type ErrorCode,
  InvalidArgumentError,
  LimitExceededError,
  NotLeaderError,
  ProtocolError,
  type RaftlockError,
  UnavailableError,
} from '../errors.ts';
import { reconnectionWindowMsMax } from '../limits.ts';
import type { Command, Effect, Entry, GrantedEffect, Result, WaitEndReason } from '../locks/index.ts';
import { coversPrefix, type Grants } from '../locks/permissions.ts';
import { muxProtocol, toNode } from '../mux.ts';
import {
  ClientCloseCode,
  clientProtocolVersion,
  type HelloFrame,
  type NodeStatus,
  type NoticeFrame,
  type RequestFrame,
  type ResultBody,
  type ServerFrame,
  type WireError,
} from '../protocol.ts';
import { clientFrameShape, unpackUntrusted } from '../security/msgpack-guard.ts';
import { LoginThrottle, TokenBucket } from '../security/throttle.ts';
import type { UserDirectory } from '../security/users.ts';
import { BackupEndpoint } from './backup-endpoint.ts';
import { type ChannelHandler, type ClientLink, SharedSocket, SocketLink } from './client-link.ts';
import { nodeClock } from './clock.ts';
import { type DashboardViews, serveDashboard } from './dashboard.ts';
import { serverLimits } from './limits.ts';
import type { Logger } from './log.ts';
import type { Outcome, RaftlockNode } from './node.ts';
import { parseClientFrame } from './validate-frame.ts';

export interface GatewayOptions {
  readonly node: RaftlockNode;
  readonly clusterId: string;
  readonly clusterSecret: string;
  readonly listen: { readonly host: string; readonly port: number };
  /** Client URL of every member, for leader hints. */
  readonly memberUrls: ReadonlyMap<string, string>;
  /** Who may log in, and with which permissions (S12, S15). */
  readonly users: UserDirectory;
  /** Serve `wss://` and `https://` with this certificate (PEM) instead of plain ws/http. */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer } | undefined;
  readonly reconnectionWindowMs: number;
  readonly log: Logger;
}

type ConnectionState = 'hello' | 'authenticating' | 'opening' | 'open' | 'closed';

class ClientConnection {
  state: ConnectionState = 'hello';
  session = 0;
  epoch = 0;
  principal = '';
  /** The session's permissions as the lock table holds them (null: every permission). */
  grants: Grants | null = null;
  inFlight = 0;
  /**
   * `granted` notices of the entry being applied, held back until its answers are out: the answer to the
   * lock request a grant completes reports the same grant, and then the notice is not sent (see holdGrant).
   */
  heldGrants: GrantedEffect[] = [];
  lastHeardMs: number;
  helloTimer: NodeJS.Timeout | null = null;
  /** C7: frames per second this connection may send. */
  readonly frames: TokenBucket;

  constructor(
    readonly link: ClientLink,
    readonly remote: string,
    readonly remoteHost: string,
    nowMs: number,
  ) {
    this.lastHeardMs = nowMs;
    this.frames = new TokenBucket(
      serverLimits.clientFramesPerSecondMax,
      serverLimits.clientFramesBurstMax,
      nowMs,
    );
  }
}

type AdminOp = 'members' | 'addMember' | 'removeMember' | 'transferLeader';

const waitEndCodes: Readonly<Record<WaitEndReason, ErrorCode>> = {
  cancelled: 'ABORTED',
  timeout: 'TIMEOUT',
  connectionLost: 'CONNECTION_LOST',
  sessionClosed: 'SESSION_CLOSED',
  sessionExpired: 'SESSION_CLOSED',
};

export class Gateway {
  private readonly node: RaftlockNode;
  private readonly options: GatewayOptions;
  private readonly log: Logger;
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  /** Shared connections (src/mux.ts): many sessions' channels on one WebSocket. */
  private readonly sharedWss: WebSocketServer;
  private readonly sharedSockets = new Set<SharedSocket>();
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
  private readonly connections = new Set<ClientConnection>();
  private readonly bySession = new Map<number, ClientConnection>();
  /** Connections with granted notices held back during an entry's apply (see holdGrant). */
  private holding: ClientConnection[] = [];
  private readonly users: UserDirectory;
  private readonly logins = new LoginThrottle({
    baseDelayMs: serverLimits.loginFailureDelayBaseMs,
    maxDelayMs: serverLimits.loginFailureDelayMaxMs,
  });
  private watchdog: NodeJS.Timeout | null = null;
  private httpRequests = 0;
  private metrics: { text(): Promise<string>; readonly contentType: string } | null = null;
  private dashboard: DashboardViews | null = null;
  private readonly backups: BackupEndpoint;
  private closing = false;

  private constructor(options: GatewayOptions) {
    this.options = options;
    this.node = options.node;
    this.log = options.log;
    this.users = options.users;
    this.backups = new BackupEndpoint({
      node: options.node,
      clusterId: options.clusterId,
      users: options.users,
      logins: this.logins,
      log: options.log,
    });
    const onHttp = (request: IncomingMessage, response: ServerResponse) => this.onHttp(request, response);
    this.http =
      options.tls === undefined
        ? createServer(onHttp)
        : createTlsServer({ cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' }, onHttp);
    this.http.on('tlsClientError', (error: Error, socket: { remoteAddress?: string }) =>
      this.log.info(
        { event: 'client_tls_error', remote: socket.remoteAddress, err: error.message },
        'client TLS handshake failed',
      ),
    );
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: serverLimits.clientFrameBytesMax,
    });
    this.sharedWss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: toNode.messageBytesMax,
      handleProtocols: (protocols) => (protocols.has(muxProtocol) ? muxProtocol : false),
    });
    this.http.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(request, socket, head),
    );
    this.node.setListener(
      {
        onApplied: (index, entry, results, effects) => this.onApplied(index, entry, results, effects),
        onAnswered: () => this.releaseHeldGrants(),
        onRoleChanged: () => undefined,
        onTableReplaced: () => this.dropAll(ClientCloseCode.notLeader, 'state replaced by a snapshot'),
      },
      {
        holds: (id, epoch) => {
          const connection = this.bySession.get(id);
          return connection !== undefined && connection.epoch === epoch && connection.state === 'open';
        },
        list: () => {
          const held: [number, number][] = [];
          for (const [id, connection] of this.bySession) {
            if (connection.state === 'open') held.push([id, connection.epoch]);
          }
          return held;
        },
      },
    );
  }

  static async listen(options: GatewayOptions): Promise<Gateway> {
    const gateway = new Gateway(options);
    await new Promise<void>((resolve, reject) => {
      gateway.http.once('error', reject);
      gateway.http.listen(options.listen.port, options.listen.host, () => {
        gateway.http.off('error', reject);
        resolve();
      });
    });
    const tick = Math.max(50, Math.floor(options.node.timing.connectionTimeoutMs / 8));
    gateway.watchdog = setInterval(() => gateway.checkIdle(), tick);
    return gateway;
  }

  get address(): { host: string; port: number } {
    const address = this.http.address();
    assert(address !== null && typeof address === 'object', 'gateway: not listening');
    return { host: address.address, port: address.port };
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Failed logins since start (C7: counted, and each answered only after a growing delay). */
  get loginFailures(): number {
    return this.logins.failures;
  }

  // ---------------------------------------------------------------- HTTP

  status(): NodeStatus {
    const raft = this.node.raftStatus();
    const table = this.node.lockTable;
    return {
      id: raft.id,
      role: raft.role,
      term: raft.term,
      leader: raft.leader,
      leaderUrl: raft.leader === null ? null : (this.options.memberUrls.get(raft.leader) ?? null),
      commitIndex: raft.commit,
      appliedIndex: raft.applied,
      snapshotIndex: raft.snapshotIndex,
      firstIndex: raft.firstIndex,
      lastIndex: raft.lastIndex,
      voters: raft.conf.voters,
      learners: raft.conf.learners,
      sessions: table.sessionCount,
      locks: table.lockCount,
      waiters: table.waiterCount,
      clientConnections: this.connections.size,
    };
  }

  /** Serves `GET /metrics` from these (src/server/metrics.ts). */
  serveMetrics(metrics: { text(): Promise<string>; readonly contentType: string }): void {
    this.metrics = metrics;
  }

  /** Serves `GET /` and `GET /dashboard.json` from these (src/server/dashboard.ts). */
  serveDashboard(views: DashboardViews): void {
    this.dashboard = views;
  }

  /** What the dashboard lists next to the lock table: the members' client URLs. */
  get memberUrls(): ReadonlyMap<string, string> {
    return this.options.memberUrls;
  }

  private onHttp(request: IncomingMessage, response: ServerResponse): void {
    if (this.httpRequests >= serverLimits.httpRequestsMax) {
      response.writeHead(503).end();
      return;
    }
    this.httpRequests++;
    response.on('close', () => this.httpRequests--);
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET') {
      sendJson(response, 405, { error: { code: 'INVALID_ARGUMENT', message: 'only GET' } });
      return;
    }
    switch (path) {
      case '/status':
        sendJson(response, 200, this.status());
        return;
      case '/metrics': {
        const metrics = this.metrics;
        if (metrics === null) {
          sendJson(response, 404, { error: { code: 'INVALID_ARGUMENT', message: 'metrics are off' } });
          return;
        }
        metrics.text().then(
          (text) => response.writeHead(200, { 'content-type': metrics.contentType }).end(text),
          (error: unknown) => {
            this.log.warn({ event: 'metrics_failed', err: String(error) }, 'metrics failed');
            response.writeHead(500).end();
          },
        );
        return;
      }
      case '/':
      case '/dashboard.json': {
        const views = this.dashboard;
        if (views === null) {
          sendJson(response, 404, { error: { code: 'INVALID_ARGUMENT', message: 'the dashboard is off' } });
          return;
        }
        serveDashboard({ views, users: this.users, logins: this.logins }, request, response, path);
        return;
      }
      case '/backup':
        this.backups.serve(request, response);
        return;
      case '/healthz': {
        const status = this.status();
        const healthy = status.leader !== null && !this.closing;
        sendJson(response, healthy ? 200 : 503, {
          ok: healthy,
          id: status.id,
          role: status.role,
          leader: status.leader,
        });
        return;
      }
      default:
        sendJson(response, 404, { error: { code: 'INVALID_ARGUMENT', message: `no such path ${path}` } });
    }
  }

  // ---------------------------------------------------------------- connections

  private onUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closing || this.connections.size >= serverLimits.clientConnectionsMax) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
      return;
    }
    const offered = request.headers['sec-websocket-protocol'];
    const shared = offered?.split(',').some((name) => name.trim() === muxProtocol) ?? false;
    if (shared) this.sharedWss.handleUpgrade(request, socket, head, (ws) => this.onSharedSocket(ws, request));
    else this.wss.handleUpgrade(request, socket, head, (ws) => this.onConnection(ws, request));
  }

  private onConnection(ws: WebSocket, request: IncomingMessage): void {
    const { remote, remoteHost } = remoteOf(request);
    const connection = this.accept(new SocketLink(ws), remote, remoteHost);
    ws.on('message', (data: RawData, isBinary: boolean) => this.onFrame(connection, data, isBinary));
    // Only a client that said goodbye (close code 1000/1001) knows its connection is gone; otherwise it
    // may still count itself owner until its own loss bound (S10), so the liveness clock decides.
    ws.on('close', (code: number) => this.onClose(connection, code === 1000 || code === 1001));
    ws.on('error', (error) => {
      this.log.debug({ event: 'client_socket_error', remote, err: error.message }, 'client socket error');
    });
  }

  /** A shared WebSocket: each channel is a client connection of its own, as `onConnection` makes one. */
  private onSharedSocket(ws: WebSocket, request: IncomingMessage): void {
    const { remote, remoteHost } = remoteOf(request);
    const shared = new SharedSocket(ws, {
      idleMs: serverLimits.helloTimeoutMs,
      terminating: (reason) =>
        this.log.info(
          { event: 'client_shared_socket_closed', remote, reason },
          'shared client socket closed',
        ),
      open: (link): ChannelHandler | null => {
        if (this.closing || this.connections.size >= serverLimits.clientConnectionsMax) {
          link.close(ClientCloseCode.overloaded, 'too many client connections');
          return null;
        }
        const connection = this.accept(link, remote, remoteHost);
        return {
          frame: (data) => this.onFrame(connection, data, true),
          closed: (goodbye) => this.onClose(connection, goodbye),
        };
      },
    });
    this.sharedSockets.add(shared);
    ws.on('close', () => this.sharedSockets.delete(shared));
    ws.on('error', (error) => {
      this.log.debug({ event: 'client_socket_error', remote, err: error.message }, 'client socket error');
    });
  }

  private accept(link: ClientLink, remote: string, remoteHost: string): ClientConnection {
    const connection = new ClientConnection(link, remote, remoteHost, nodeClock.now());
    this.connections.add(connection);
    connection.helloTimer = setTimeout(
      () => this.fail(connection, ClientCloseCode.helloTimeout, new ProtocolError('no hello in time')),
      serverLimits.helloTimeoutMs,
    );
    return connection;
  }

  private onFrame(connection: ClientConnection, data: RawData, isBinary: boolean): void {
    if (connection.state === 'closed') return;
    const nowMs = nodeClock.now();
    if (!connection.frames.take(nowMs)) {
      this.fail(
        connection,
        ClientCloseCode.overloaded,
        new LimitExceededError(`more than ${serverLimits.clientFramesPerSecondMax} frames per second`),
      );
      return;
    }
    connection.lastHeardMs = nowMs;
    if (connection.state === 'open') this.node.touchSession(connection.session);
    if (!isBinary) {
      this.fail(connection, ClientCloseCode.protocolError, new ProtocolError('frames must be binary'));
      return;
    }
    let value: unknown;
    try {
      // C7: depth, value count and every declared length are checked before msgpackr allocates.
      value = unpackUntrusted(this.unpackr, toBuffer(data), clientFrameShape);
    } catch (error) {
      this.fail(connection, ClientCloseCode.protocolError, error as RaftlockError);
      return;
    }
    const parsed = parseClientFrame(value);
    if (!parsed.ok) {
      if (parsed.id !== null && connection.state === 'open') {
        this.respondError(connection, parsed.id, parsed.error);
        return;
      }
      this.fail(connection, ClientCloseCode.protocolError, parsed.error);
      return;
    }
    const frame = parsed.frame;
    if (frame.t === 'hello') {
      if (connection.state !== 'hello') {
        this.fail(connection, ClientCloseCode.protocolError, new ProtocolError('hello sent twice'));
        return;
      }
      this.onHello(connection, frame);
      return;
    }
    if (connection.state !== 'open') {
      this.fail(connection, ClientCloseCode.protocolError, new ProtocolError('request before welcome'));
      return;
    }
    this.onRequest(connection, frame);
  }

  private onHello(connection: ClientConnection, hello: HelloFrame): void {
    if (hello.v !== clientProtocolVersion) {
      this.fail(
        connection,
        ClientCloseCode.protocolError,
        new ProtocolError(
          `protocol version ${hello.v} unsupported; this node speaks ${clientProtocolVersion}`,
        ),
      );
      return;
    }
    // Frames that arrive while the password is checked close the socket (request before welcome).
    connection.state = 'authenticating';
    this.users.authenticate(hello.principal, hello.password).then(
      (auth) => {
        if (connection.state !== 'authenticating') return;
        if (auth.ok) {
          this.logins.succeed(connection.remoteHost);
          this.afterLogin(connection, hello, auth.grants);
          return;
        }
        if (auth.reason === 'busy') {
          this.fail(connection, ClientCloseCode.overloaded, new UnavailableError('too many logins at once'));
          return;
        }
        // C7: a failure is counted and answered late, later with every failure from the same address.
        const delayMs = this.logins.fail(connection.remoteHost, nodeClock.now());
        this.log.warn(
          {
            event: 'client_auth_failed',
            remote: connection.remote,
            principal: hello.principal,
            failures: this.logins.failuresOf(connection.remoteHost, nodeClock.now()),
            delayMs,
          },
          'authentication failed',
        );
        setTimeout(
          () =>
            this.fail(
              connection,
              ClientCloseCode.authenticationFailed,
              new AuthenticationFailedError('unknown principal or wrong password'),
            ),
          delayMs,
        ).unref();
      },
      (error: unknown) => {
        this.log.error({ event: 'client_auth_error', err: String(error) }, 'password check failed');
        this.fail(connection, ClientCloseCode.overloaded, new UnavailableError('password check failed'));
      },
    );
  }

  private afterLogin(connection: ClientConnection, hello: HelloFrame, grants: Grants): void {
    connection.state = 'opening';
    connection.principal = hello.principal;
    if (hello.session === undefined) {
      const window = hello.reconnectionWindowMs ?? this.options.reconnectionWindowMs;
      if (window < 1 || window > reconnectionWindowMsMax) {
        this.fail(
          connection,
          ClientCloseCode.protocolError,
          new InvalidArgumentError(`reconnectionWindowMs must be in [1, ${reconnectionWindowMsMax}]`),
        );
        return;
      }
      this.node.submit(
        { type: 'openSession', principal: hello.principal, reconnectionWindowMs: window, grants },
        (outcome) => {
          if (!outcome.ok) return this.failOutcome(connection, outcome.error);
          if (outcome.result.kind !== 'opened') return this.failResult(connection, outcome.result);
          this.welcome(connection, outcome.result.session, 0, false);
        },
      );
      return;
    }
    const { id, token } = hello.session;
    if (!tokensEqual(token, this.sessionToken(id))) {
      this.fail(
        connection,
        ClientCloseCode.authenticationFailed,
        new AuthenticationFailedError('wrong session token'),
      );
      return;
    }
    const info = this.node.lockTable.getSession(id);
    if (info !== null && info.principal !== hello.principal) {
      this.fail(
        connection,
        ClientCloseCode.authenticationFailed,
        new AuthenticationFailedError('the session belongs to another principal'),
      );
      return;
    }
    this.resume(connection, id, 1);
  }

  private resume(connection: ClientConnection, id: number, attempt: number): void {
    const epoch = (this.node.sessions.get(id)?.epoch ?? 0) + attempt;
    this.node.submit({ type: 'reconnect', session: id, epoch }, (outcome) => {
      if (!outcome.ok) return this.failOutcome(connection, outcome.error);
      const result = outcome.result;
      // A concurrent reconnect took our epoch: try once more above it.
      if (result.kind === 'error' && result.code === 'STALE_REQUEST' && attempt < 3) {
        if (connection.state === 'opening') this.resume(connection, id, attempt + 1);
        return;
      }
      if (result.kind !== 'done') return this.failResult(connection, result);
      this.welcome(connection, id, epoch, true);
    });
  }

  /** Runs inside the apply of the entry that opened or resumed the session: state and notices line up. */
  private welcome(connection: ClientConnection, session: number, epoch: number, resumed: boolean): void {
    if (connection.state !== 'opening') {
      // The client left before its session was ready: report the connection lost at once.
      this.node.connectionClosed(session, epoch);
      return;
    }
    if (connection.helloTimer !== null) clearTimeout(connection.helloTimer);
    connection.helloTimer = null;
    const previous = this.bySession.get(session);
    if (previous !== undefined && previous !== connection) {
      this.bySession.delete(session);
      this.closeConnection(previous, ClientCloseCode.replaced, 'session resumed on a newer connection');
    }
    connection.state = 'open';
    connection.session = session;
    connection.epoch = epoch;
    connection.lastHeardMs = nodeClock.now();
    this.bySession.set(session, connection);
    this.node.touchSession(session);
    const info = this.node.lockTable.getSession(session);
    assert(info !== null, `gateway: session ${session} vanished while being welcomed`);
    connection.grants = info.grants;
    this.send(connection, {
      t: 'welcome',
      v: clientProtocolVersion,
      node: this.node.id,
      session: {
        id: session,
        token: this.sessionToken(session),
        epoch,
        principal: info.principal,
        reconnectionWindowMs: info.reconnectionWindowMs,
      },
      resumed,
      connectionTimeoutMs: this.node.timing.connectionTimeoutMs,
      locks: info.locks,
      waits: info.waits,
    });
    this.log.info(
      { event: resumed ? 'session_resumed' : 'session_opened', session, epoch, remote: connection.remote },
      resumed ? 'session resumed' : 'session opened',
    );
  }

  private onRequest(connection: ClientConnection, frame: RequestFrame): void {
    if (connection.inFlight >= serverLimits.requestsInFlightPerConnectionMax) {
      this.respondError(connection, frame.id, {
        code: 'LIMIT_EXCEEDED',
        message: `at most ${serverLimits.requestsInFlightPerConnectionMax} requests in flight`,
      });
      return;
    }
    const session = connection.session;
    switch (frame.op) {
      case 'ping':
        this.track(connection, frame.id, (done) =>
          this.node.confirmKeepalive().then((confirmed) => done({ kind: 'pong', confirmed })),
        );
        return;
      case 'status':
        if (connection.grants !== null && !connection.grants.admin) {
          this.respondError(connection, frame.id, {
            code: 'PERMISSION_DENIED',
            message: `principal ${connection.principal} lacks the admin permission`,
          });
          return;
        }
        this.respond(connection, frame.id, { kind: 'status', status: this.status() });
        return;
      case 'locks':
        // S15: the session's read patterns must cover every name the listing could return.
        if (connection.grants !== null && !coversPrefix(connection.grants.read, frame.prefix ?? '')) {
          this.respondError(connection, frame.id, {
            code: 'PERMISSION_DENIED',
            message: `principal ${connection.principal} may not read locks with prefix ${JSON.stringify(frame.prefix ?? '')}`,
          });
          return;
        }
        this.track(connection, frame.id, (done, failed) =>
          this.node.readBarrier().then(
            () =>
              done({
                kind: 'locks',
                locks: this.node.lockTable.listLocks({
                  prefix: frame.prefix,
                  after: frame.after,
                  limit: frame.limit,
                }),
              }),
            (error: RaftlockError) => failed(this.wireError(error)),
          ),
        );
        return;
      case 'lock': {
        const deadlineMs = frame.timeoutMs === undefined ? undefined : nodeClock.now() + frame.timeoutMs;
        this.propose(connection, frame.id, {
          type: 'acquire',
          session,
          requestNo: frame.requestNo,
          name: frame.name,
          scope: frame.scope,
          deadlineMs,
        });
        return;
      }
      case 'unlock':
        this.propose(connection, frame.id, {
          type: 'release',
          session,
          requestNo: frame.requestNo,
          name: frame.name,
          sequence: frame.sequence,
        });
        return;
      case 'cancel':
        this.propose(connection, frame.id, { type: 'cancel', session, requestNo: frame.requestNo });
        return;
      case 'close':
        this.propose(connection, frame.id, { type: 'closeSession', session });
        return;
      case 'members':
      case 'addMember':
      case 'removeMember':
      case 'transferLeader':
        this.onAdminRequest(connection, frame);
        return;
      default:
        frame satisfies never;
    }
  }

  /**
   * C5 membership requests, each needing `admin` (S12). The list is this node's view; changes run on the
   * leader — a follower hands them over the peer link and relays the leader's answer.
   */
  private onAdminRequest(connection: ClientConnection, frame: RequestFrame & { op: AdminOp }): void {
    if (connection.grants !== null && !connection.grants.admin) {
      this.respondError(connection, frame.id, {
        code: 'PERMISSION_DENIED',
        message: `principal ${connection.principal} lacks the admin permission`,
      });
      return;
    }
    const membership = this.node.membership;
    if (frame.op === 'members') {
      const status = this.node.raftStatus();
      this.respond(connection, frame.id, {
        kind: 'members',
        node: this.node.id,
        leader: status.leader,
        members: membership.list(),
      });
      return;
    }
    this.log.info(
      { event: 'admin_request', op: frame.op, member: frame.member, principal: connection.principal },
      'membership request',
    );
    const work =
      frame.op === 'addMember'
        ? membership.change(frame.op, frame.member, frame.peerAddress, frame.clientUrl)
        : membership.change(frame.op, frame.member);
    this.track(connection, frame.id, (done, failed) =>
      work.then(
        () => done({ kind: 'done' }),
        (error: RaftlockError) => failed(this.wireError(error)),
      ),
    );
  }

  private track(
    connection: ClientConnection,
    id: number,
    work: (done: (result: ResultBody) => void, failed: (error: WireError) => void) => void,
  ): void {
    connection.inFlight++;
    let answered = false;
    const finish = () => {
      assert(!answered, 'gateway: request answered twice');
      answered = true;
      connection.inFlight--;
    };
    work(
      (result) => {
        finish();
        this.respond(connection, id, result);
      },
      (error) => {
        finish();
        this.respondError(connection, id, error);
      },
    );
  }

  /**
   * `track` for a lock command, written out: this runs for every lock and unlock, and `track`'s named
   * closures cost an allocation and (under tsx's keepNames) a defineProperty each, per request.
   */
  private propose(connection: ClientConnection, id: number, command: Command): void {
    connection.inFlight++;
    let answered = false;
    this.node.submit(command, (outcome: Outcome) => {
      assert(!answered, 'gateway: request answered twice');
      answered = true;
      connection.inFlight--;
      if (outcome.ok && connection.heldGrants.length > 0)
        this.answerReplacesGrant(connection, command, outcome.result);
      this.answerOutcome(connection, id, outcome);
    });
  }

  private answerOutcome(connection: ClientConnection, id: number, outcome: Outcome): void {
    if (!outcome.ok) {
      this.respondError(connection, id, this.wireError(outcome.error));
      return;
    }
    const result = outcome.result;
    if (result.kind === 'error') {
      this.respondError(connection, id, { code: result.code, message: result.message });
    } else if (result.kind === 'opened' || result.kind === 'ignored') {
      this.respondError(connection, id, { code: 'INTERNAL', message: `unexpected result ${result.kind}` });
    } else {
      this.respond(connection, id, result);
    }
  }

  // ---------------------------------------------------------------- applied entries → notices

  private onApplied(_index: number, entry: Entry, results: readonly Result[], effects: readonly Effect[]) {
    if (this.bySession.size === 0) return;
    this.pushNotices(effects);
    for (let i = 0; i < entry.commands.length; i++) {
      const command = entry.commands[i]!;
      if (command.type !== 'connectionLost' || results[i]?.kind !== 'done') continue;
      // The leader declared this connection lost (it stopped hearing of it through this node's reports):
      // after its loss notices, the client must resume on a new connection.
      const connection = this.bySession.get(command.session);
      if (connection === undefined || connection.epoch !== command.epoch || connection.state !== 'open')
        continue;
      this.closeConnection(connection, ClientCloseCode.idle, 'connection declared lost by the leader');
    }
  }

  private pushNotices(effects: readonly Effect[]): void {
    for (const effect of effects) {
      const connection = this.bySession.get(effect.session);
      if (connection === undefined || connection.state !== 'open') continue;
      if (effect.kind === 'granted' && effect.requestNos.length === 1) {
        this.holdGrant(connection, effect);
        continue;
      }
      if (effect.kind === 'released' && effect.reason === 'unlock') {
        // The session's own unlock: its answer reports the release; nothing else the client hears may
        // overtake a grant held before it.
        this.sendHeldGrants(connection);
        continue;
      }
      const notice = noticeFor(effect);
      if (notice !== null) this.send(connection, notice);
      if (effect.kind === 'sessionEnded') {
        this.bySession.delete(effect.session);
        connection.state = 'closed';
        this.closeConnection(connection, ClientCloseCode.sessionEnded, `session ${effect.reason}`);
      }
    }
  }

  // ---------------------------------------------------------------- output

  /**
   * A grant that completes one lock request waits for the entry's answers. If the answer to that request
   * goes to this connection (see answerOutcome), it reports the grant and the notice is dropped: one frame
   * to encode, send and decode instead of two for every immediate grant. Whatever else this connection is
   * sent first (another notice, another answer) sends the held grants before it, so the client hears
   * everything in the order the table decided it; `onAnswered` sends those whose answer went elsewhere —
   * to a connection that closed, or to none, as for a request answered before with its outcome unknown.
   */
  private holdGrant(connection: ClientConnection, effect: GrantedEffect): void {
    if (connection.heldGrants.length === 0) this.holding.push(connection);
    connection.heldGrants.push(effect);
  }

  /** The answer `result` to `command` reports a held grant: that grant's notice is not sent. */
  private answerReplacesGrant(connection: ClientConnection, command: Command, result: Result): void {
    if (command.type !== 'acquire' || result.kind !== 'granted') return;
    const held = connection.heldGrants;
    const at = held.findIndex(
      (grant) => grant.requestNos[0] === command.requestNo && grant.sequence === result.sequence,
    );
    if (at < 0) return;
    held.splice(at, 1);
  }

  private sendHeldGrants(connection: ClientConnection): void {
    const held = connection.heldGrants;
    if (held.length === 0) return;
    connection.heldGrants = [];
    for (const grant of held) this.send(connection, noticeFor(grant)!);
  }

  private releaseHeldGrants(): void {
    if (this.holding.length === 0) return;
    const holding = this.holding;
    this.holding = [];
    for (const connection of holding) {
      if (connection.state === 'open') this.sendHeldGrants(connection);
      else connection.heldGrants = [];
    }
  }

  private send(connection: ClientConnection, frame: ServerFrame): void {
    if (connection.heldGrants.length > 0) this.sendHeldGrants(connection);
    const link = connection.link;
    if (!link.open) return;
    link.send(this.packr.pack(frame));
    if (link.bufferedAmount > serverLimits.clientSocketBufferedBytesMax) {
      this.log.warn({ event: 'client_slow', remote: connection.remote }, 'client too slow; closing');
      this.closeConnection(connection, ClientCloseCode.slowConsumer, 'too slow to read');
    }
  }

  private respond(connection: ClientConnection, id: number, result: ResultBody): void {
    this.send(connection, { t: 'res', id, ok: true, result });
  }

  private respondError(connection: ClientConnection, id: number, error: WireError): void {
    this.send(connection, { t: 'res', id, ok: false, error });
  }

  private wireError(error: RaftlockError): WireError {
    const code = typeof error.code === 'string' ? error.code : 'INTERNAL';
    if (code !== 'NOT_LEADER' && code !== 'TRANSFERRING') return { code, message: error.message };
    const leader = this.node.softState.leader;
    return {
      code,
      message: error.message,
      leader: leader ?? undefined,
      leaderUrl: leader === null ? undefined : this.options.memberUrls.get(leader),
    };
  }

  private failNotLeader(connection: ClientConnection): void {
    this.fail(
      connection,
      ClientCloseCode.notLeader,
      new NotLeaderError(`node ${this.node.id} is not the leader`),
    );
  }

  private failOutcome(connection: ClientConnection, error: RaftlockError): void {
    this.fail(
      connection,
      error.code === 'NOT_LEADER' ? ClientCloseCode.notLeader : ClientCloseCode.overloaded,
      error,
    );
  }

  private failResult(connection: ClientConnection, result: Result): void {
    const error =
      result.kind === 'error'
        ? { code: result.code, message: result.message }
        : { code: 'INTERNAL' as const, message: `unexpected result ${result.kind}` };
    this.sendError(connection, error);
    this.closeConnection(connection, ClientCloseCode.sessionEnded, error.code);
  }

  /** Sends an error frame, then closes. */
  private fail(connection: ClientConnection, closeCode: number, error: RaftlockError): void {
    if (connection.state === 'closed') return;
    this.sendError(connection, this.wireError(error));
    this.closeConnection(connection, closeCode, error.code);
  }

  private sendError(connection: ClientConnection, error: WireError): void {
    this.send(connection, { t: 'error', ...error });
  }

  private closeConnection(connection: ClientConnection, code: number, reason: string): void {
    connection.link.close(code, reason);
    this.onClose(connection, false);
  }

  private onClose(connection: ClientConnection, clientSaidGoodbye: boolean): void {
    if (!this.connections.delete(connection)) return;
    if (connection.helloTimer !== null) clearTimeout(connection.helloTimer);
    connection.helloTimer = null;
    const wasOpen = connection.state === 'open';
    connection.state = 'closed';
    if (!wasOpen) return;
    if (this.bySession.get(connection.session) === connection) this.bySession.delete(connection.session);
    // Without a goodbye, the leader releases after the connection-loss bound counted from the last time
    // it heard from the client — never before the client's own isOwned() deadline.
    if (clientSaidGoodbye) this.node.connectionClosed(connection.session, connection.epoch);
    this.log.info(
      { event: 'client_disconnected', session: connection.session, epoch: connection.epoch },
      'client disconnected',
    );
  }

  private checkIdle(): void {
    const nowMs = nodeClock.now();
    const timeoutMs = this.node.timing.connectionTimeoutMs;
    for (const connection of [...this.connections]) {
      if (connection.state !== 'open' || nowMs - connection.lastHeardMs < timeoutMs) continue;
      this.log.info({ event: 'client_idle', session: connection.session }, 'client connection idle');
      this.closeConnection(connection, ClientCloseCode.idle, 'idle');
    }
  }

  private dropAll(code: number, reason: string): void {
    for (const connection of [...this.connections]) this.closeConnection(connection, code, reason);
  }

  // ---------------------------------------------------------------- auth

  /** A session's reconnect token: only members of the cluster (holders of its secret) can mint one. */
  private sessionToken(id: number): string {
    return createHmac('sha256', this.options.clusterSecret)
      .update(`raftlock/session-token/v1\0${this.options.clusterId}\0${id}`)
      .digest('base64url');
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    const leader = this.node.softState.leader;
    for (const connection of [...this.connections]) {
      if (leader !== null && leader !== this.node.id) this.failNotLeader(connection);
      else this.closeConnection(connection, ClientCloseCode.shuttingDown, 'shutting down');
    }
    for (const shared of this.sharedSockets) shared.terminate(ClientCloseCode.shuttingDown, 'shutting down');
    this.wss.close();
    this.sharedWss.close();
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}

function noticeFor(effect: Effect): NoticeFrame | null {
  switch (effect.kind) {
    case 'granted':
      return {
        t: 'notice',
        notice: 'granted',
        name: effect.name,
        sequence: effect.sequence,
        scope: effect.scope,
        requestNos: effect.requestNos,
      };
    case 'released':
      return {
        t: 'notice',
        notice: 'lost',
        name: effect.name,
        sequence: effect.sequence,
        reason: effect.reason,
      };
    case 'scopeChanged':
      return {
        t: 'notice',
        notice: 'scopeChanged',
        name: effect.name,
        sequence: effect.sequence,
        scope: effect.scope,
      };
    case 'waitEnded':
      return {
        t: 'notice',
        notice: 'waitEnded',
        name: effect.name,
        requestNo: effect.requestNo,
        reason: effect.reason,
        code: waitEndCodes[effect.reason],
      };
    case 'sessionEnded':
      return { t: 'notice', notice: effect.reason === 'expired' ? 'sessionExpired' : 'sessionClosed' };
    case 'waiting':
      return null;
    default:
      return effect satisfies never;
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function tokensEqual(a: string, b: string): boolean {
  const left = digest(a);
  const right = digest(b);
  return timingSafeEqual(left, right);
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  response.end(text);
}

function remoteOf(request: IncomingMessage): { remote: string; remoteHost: string } {
  const remoteHost = request.socket.remoteAddress ?? '?';
  return { remote: `${remoteHost}:${request.socket.remotePort ?? '?'}`, remoteHost };
}
