// `GET /backup` on a node's client port: the lock table at a linearizable point, as a backup file
// (src/backup/backup-file.ts), for `raftlock backup`.
//
// Why HTTP rather than a request on the client WebSocket: a table of a million locks is tens of MB, far
// past the 64 KiB client frame bound (src/protocol.ts), and HTTP streams it with back-pressure and a
// Content-Length for free. Authentication is the dashboard's: HTTP Basic credentials of a user with
// the `admin` permission, checked against the same users with the same throttle on failures.
//
// Linearizable: a ReadIndex barrier first (on a follower it asks the leader), so the table served
// includes every write acknowledged before the request arrived; then the table is encoded at the
// node's applied index in one synchronous step. Encoding blocks this node's event loop as long as a
// periodic snapshot does (docs/operations.md, Sizing); `raftlock backup` prefers a follower so the
// leader's heartbeats never wait for it. One backup at a time per node bounds the memory it holds.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { backupHeaderFor, encodeBackupPrefix } from '../backup/backup-file.ts';
import type { RaftlockError } from '../errors.ts';
import type { LoginThrottle } from '../security/throttle.ts';
import type { UserDirectory } from '../security/users.ts';
import { nodeClock } from './clock.ts';
import { parseBasicAuth } from './dashboard.ts';
import type { Logger } from './log.ts';
import type { RaftlockNode } from './node.ts';

export interface BackupEndpointOptions {
  readonly node: RaftlockNode;
  readonly clusterId: string;
  readonly users: UserDirectory;
  readonly logins: LoginThrottle;
  readonly log: Logger;
}

/** Backups a node serves at once; another request meanwhile gets 503 UNAVAILABLE. */
export const backupsInFlightMax = 1;

const jsonHeaders = {
  'content-type': 'application/json',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

export class BackupEndpoint {
  private inFlight = 0;

  constructor(private readonly options: BackupEndpointOptions) {}

  serve(request: IncomingMessage, response: ServerResponse): void {
    const remoteHost = request.socket.remoteAddress ?? '?';
    const credentials = parseBasicAuth(request.headers.authorization);
    if (credentials === null) {
      challenge(response, 'credentials required');
      return;
    }
    const { users, logins } = this.options;
    users.authenticate(credentials.principal, credentials.password).then(
      (auth) => {
        if (auth.ok && auth.grants.admin) {
          logins.succeed(remoteHost);
          this.send(credentials.principal, remoteHost, response);
          return;
        }
        if (auth.ok) {
          sendError(response, 403, 'PERMISSION_DENIED', 'a backup needs the admin permission');
          return;
        }
        if (auth.reason === 'busy') {
          sendError(response, 503, 'UNAVAILABLE', 'too many logins at once');
          return;
        }
        // C7: as for a hello, a failure is counted and answered late.
        const delayMs = logins.fail(remoteHost, nodeClock.now());
        setTimeout(() => challenge(response, 'authentication failed'), delayMs).unref();
      },
      () => sendError(response, 500, 'INTERNAL', 'authentication failed to run'),
    );
  }

  private send(principal: string, remote: string, response: ServerResponse): void {
    if (this.inFlight >= backupsInFlightMax) {
      sendError(response, 503, 'UNAVAILABLE', 'a backup is already being served by this node');
      return;
    }
    this.inFlight++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.inFlight--;
    };
    response.on('close', finish);
    const { node, log } = this.options;
    node.readBarrier().then(
      () => {
        if (response.destroyed) return finish();
        const startMs = performance.now();
        const { index, term, table } = node.appliedTable();
        const data = table.snapshot();
        const header = backupHeaderFor({
          clusterId: this.options.clusterId,
          nodeId: node.id,
          index,
          term,
          createdAt: new Date(),
          table,
          data,
        });
        const prefix = encodeBackupPrefix(header);
        log.info(
          {
            event: 'backup_served',
            principal,
            remote,
            index,
            term,
            bytes: prefix.byteLength + data.byteLength,
            locks: header.locks,
            sessions: header.sessions,
            encodeMs: Math.round(performance.now() - startMs),
          },
          'backup served',
        );
        response.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': String(prefix.byteLength + data.byteLength),
          'content-disposition': `attachment; filename="raftlock-${this.options.clusterId}-${index}.backup"`,
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
          'x-raftlock-index': String(index),
        });
        response.write(prefix);
        response.end(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      },
      (error: RaftlockError) => {
        finish();
        const code = typeof error.code === 'string' ? error.code : 'UNAVAILABLE';
        sendError(response, 503, code, `no linearizable point: ${error.message}`);
      },
    );
  }
}

function challenge(response: ServerResponse, message: string): void {
  if (response.writableEnded || response.destroyed) return;
  response.setHeader('www-authenticate', 'Basic realm="raftlock backup", charset="UTF-8"');
  sendError(response, 401, 'AUTHENTICATION_FAILED', message);
}

function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  if (response.writableEnded || response.destroyed) return;
  response.writeHead(status, jsonHeaders).end(JSON.stringify({ error: { code, message } }));
}
