// `raftlock backup --out FILE`: the lock table at a linearizable point, from a node's `GET /backup`
// (src/server/backup-endpoint.ts), checked in full and written atomically (temporary file, fsync, rename).
//
// Any node serves a linearizable backup (its ReadIndex barrier asks the leader); this command asks a
// follower first, so that encoding a large table never delays the leader's heartbeats, and falls back
// to the leader and then to any node that answers.

import { closeSync, createWriteStream, existsSync, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import type { BackupHeader } from '../backup/backup-file.ts';
import { readBackupFile } from '../backup/restore.ts';
import {
  errorFromCode,
  InvalidArgumentError,
  isErrorCode,
  isRaftlockError,
  type RaftlockError,
  UnavailableError,
} from '../errors.ts';
import type { NodeStatus } from '../protocol.ts';
import {
  type ClientCredentials,
  clientCredentials,
  clientOptionsUsage,
  clientParseOptions,
} from './client-options.ts';
import { fetchStatus, httpUrl } from './status.ts';

export const backupUsage = `raftlock backup --out FILE [--servers URLS] [--principal NAME] [--password-file FILE] [--ca FILE]
  writes the lock table at a linearizable point to FILE (needs the admin permission; FILE must not exist)
${clientOptionsUsage}`;

/** How long one node may take to answer (the barrier plus encoding a large table) before the next is tried. */
const answerTimeoutMs = 120_000;

/** Servers in the order to ask them: followers that know a leader (most applied first), the leader, the rest. */
export async function backupOrder(servers: readonly string[], ca?: string): Promise<string[]> {
  const statuses = await Promise.all(
    servers.map(async (url) => ({ url, status: await fetchStatus(url, 2_000, ca).catch(() => null) })),
  );
  const rank = (status: NodeStatus | null): number =>
    status === null ? 3 : status.role === 'leader' ? 1 : status.leader !== null ? 0 : 2;
  return statuses
    .map((entry, position) => ({ ...entry, position }))
    .sort(
      (a, b) =>
        rank(a.status) - rank(b.status) ||
        (b.status?.appliedIndex ?? 0) - (a.status?.appliedIndex ?? 0) ||
        a.position - b.position,
    )
    .map((entry) => entry.url);
}

/** Downloads a backup from `server` into `path`; a typed error from the node's answer otherwise. */
export async function downloadBackup(
  server: string,
  credentials: Pick<ClientCredentials, 'principal' | 'password' | 'ca'>,
  path: string,
): Promise<void> {
  const url = new URL(`${httpUrl(server)}/backup`);
  const authorization = `Basic ${Buffer.from(`${credentials.principal}:${credentials.password}`).toString('base64')}`;
  const response = await new Promise<IncomingMessage>((resolvePromise, reject) => {
    const options = { headers: { authorization }, timeout: answerTimeoutMs };
    const request =
      url.protocol === 'https:'
        ? httpsRequest(
            url,
            { ...options, ...(credentials.ca === undefined ? {} : { ca: credentials.ca }) },
            resolvePromise,
          )
        : httpRequest(url, options, resolvePromise);
    request.on('timeout', () =>
      request.destroy(new UnavailableError(`${server}: no answer in ${answerTimeoutMs} ms`)),
    );
    request.on('error', (error) =>
      reject(isRaftlockError(error) ? error : new UnavailableError(`${server}: ${error.message}`)),
    );
    request.end();
  });
  if (response.statusCode !== 200) {
    const chunks: Buffer[] = [];
    for await (const chunk of response) chunks.push(chunk as Buffer);
    throw answerError(server, response.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
  }
  await pipeline(response, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
}

function answerError(server: string, status: number, body: string): RaftlockError {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    const code = parsed.error?.code;
    if (isErrorCode(code)) return errorFromCode(code, `${server}: ${String(parsed.error?.message ?? code)}`);
  } catch {
    // not JSON: fall through
  }
  return new UnavailableError(`${server}: HTTP ${status}`);
}

/** Stops trying other nodes: they would give the same answer. */
function isFinal(error: unknown): boolean {
  return (
    isRaftlockError(error) &&
    (error.code === 'AUTHENTICATION_FAILED' ||
      error.code === 'PERMISSION_DENIED' ||
      error.code === 'PROTOCOL_ERROR')
  );
}

export async function takeBackup(
  out: string,
  credentials: ClientCredentials,
): Promise<{ header: BackupHeader; server: string; bytes: number }> {
  const target = resolve(out);
  if (existsSync(target))
    throw new InvalidArgumentError(`${target} exists; a backup never overwrites a file`);
  if (!existsSync(dirname(target))) throw new InvalidArgumentError(`${dirname(target)} does not exist`);
  const temporary = `${target}.partial-${process.pid}`;
  let lastError: unknown = new UnavailableError('no server to ask');
  for (const server of await backupOrder(credentials.servers, credentials.ca)) {
    rmSync(temporary, { force: true });
    try {
      await downloadBackup(server, credentials, temporary);
      const { header } = readBackupFile(temporary);
      const fd = openSync(temporary, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, target);
      syncDirectory(dirname(target));
      return { header, server, bytes: header.dataBytes };
    } catch (error) {
      rmSync(temporary, { force: true });
      lastError = error;
      if (isFinal(error)) break;
    }
  }
  throw lastError;
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function runBackup(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: { ...clientParseOptions, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${backupUsage}\n`);
    return 0;
  }
  if (values.out === undefined) throw new InvalidArgumentError('backup needs --out FILE');
  const { header, server } = await takeBackup(values.out, clientCredentials(values));
  process.stdout.write(
    `backup of cluster ${header.clusterId} at index ${header.index} (term ${header.term}) from ${header.nodeId} (${server}): ` +
      `${header.locks} locks, ${header.sessions} sessions, last sequence ${header.lastSequence}, ` +
      `${header.dataBytes} bytes, sha256 ${header.dataSha256} -> ${resolve(values.out)}\n`,
  );
  return 0;
}
