// `raftlock status`: each node's role, term, commit and applied index, leader, session and lock counts,
// from its `GET /status`.

import { get as httpsGet } from 'node:https';
import { parseArgs } from 'node:util';
import { UnavailableError } from '../errors.ts';
import type { NodeStatus } from '../protocol.ts';
import { clientCa, defaultServers } from './client-options.ts';

export const statusUsage = `raftlock status [--servers ws://HOST:PORT,…] [--ca FILE] [--json]
  default servers: ./data/cluster.json's nodes, else ws://127.0.0.1:7401-7403
  --ca: PEM CA for wss:// nodes (default $RAFTLOCK_CA, else ./data/tls/ca.pem when it exists)`;

export function httpUrl(wsUrl: string): string {
  return wsUrl.replace(/^ws(s?):\/\//, 'http$1://').replace(/\/+$/, '');
}

/** `ca`: PEM to trust for a wss:// node (a dev cluster's CA); otherwise the system's (or NODE_EXTRA_CA_CERTS). */
export async function fetchStatus(url: string, timeoutMs: number, ca?: string): Promise<NodeStatus> {
  if (ca !== undefined && url.startsWith('wss://')) return fetchStatusTls(url, timeoutMs, ca);
  const response = await fetch(`${httpUrl(url)}/status`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new UnavailableError(`${url}: HTTP ${response.status}`);
  return (await response.json()) as NodeStatus;
}

function fetchStatusTls(url: string, timeoutMs: number, ca: string): Promise<NodeStatus> {
  return new Promise((resolve, reject) => {
    const request = httpsGet(`${httpUrl(url)}/status`, { ca, timeout: timeoutMs }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        if (response.statusCode !== 200) reject(new UnavailableError(`${url}: HTTP ${response.statusCode}`));
        else
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as NodeStatus);
          } catch (error) {
            reject(new UnavailableError(`${url}: ${(error as Error).message}`));
          }
      });
    });
    request.on('timeout', () => request.destroy(new UnavailableError(`${url}: timed out`)));
    request.on('error', (error) => reject(new UnavailableError(`${url}: ${error.message}`)));
  });
}

export async function runStatus(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      servers: { type: 'string' },
      ca: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${statusUsage}\n`);
    return 0;
  }
  const servers = values.servers?.split(',').map((server) => server.trim()) ?? defaultServers();
  const ca = clientCa(values);
  const results = await Promise.all(
    servers.map(async (url) => {
      try {
        return { url, status: await fetchStatus(url, 2_000, ca), error: null };
      } catch (error) {
        return { url, status: null, error: (error as Error).message };
      }
    }),
  );
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } else {
    const rows = [['NODE', 'URL', 'ROLE', 'TERM', 'LEADER', 'COMMIT', 'APPLIED', 'SESSIONS', 'LOCKS']];
    for (const { url, status, error } of results) {
      if (status === null) rows.push(['?', url, `unreachable (${error})`, '', '', '', '', '', '']);
      else
        rows.push([
          status.id,
          url,
          status.role,
          String(status.term),
          status.leader ?? '-',
          String(status.commitIndex),
          String(status.appliedIndex),
          String(status.sessions),
          String(status.locks),
        ]);
    }
    const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
    for (const row of rows)
      process.stdout.write(
        `${row
          .map((cell, column) => cell.padEnd(widths[column]!))
          .join('  ')
          .trimEnd()}\n`,
      );
  }
  if (results.every((result) => result.status === null)) throw new UnavailableError('no node answered');
  return 0;
}
