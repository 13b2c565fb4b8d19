// What the client-side commands (`raftlock lock`, `raftlock locks`) share: which servers, which
// credentials, and a table printer. Secrets never come from the command line, where `ps` shows them:
// the password is read from RAFTLOCK_PASSWORD or a file.

import { existsSync, readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../errors.ts';
import type { ClusterFile } from '../server/config.ts';

export const clientOptionsUsage = `  --servers URLS        client URLs, comma-separated (default: ./data/cluster.json's nodes,
                        else ws://127.0.0.1:7401-7403)
  --principal NAME      default $RAFTLOCK_PRINCIPAL, else control
  --password-file FILE  the password's file (first line); default $RAFTLOCK_PASSWORD, else password
  --ca FILE             PEM CA to trust for wss:// (default $RAFTLOCK_CA, else ./data/tls/ca.pem
                        of a local \`cluster up --tls\` when it exists)`;

export const clientParseOptions = {
  servers: { type: 'string' },
  principal: { type: 'string' },
  'password-file': { type: 'string' },
  ca: { type: 'string' },
} as const;

/** A local `raftlock cluster up --tls` writes its CA here. */
const localCaFile = './data/tls/ca.pem';

/** The CA to trust for wss:// servers: --ca, $RAFTLOCK_CA, or a local dev cluster's; else the system's. */
export function clientCa(values: { ca?: string | undefined }): string | undefined {
  const file = values.ca ?? process.env.RAFTLOCK_CA ?? (existsSync(localCaFile) ? localCaFile : undefined);
  if (file === undefined) return undefined;
  if (!existsSync(file)) throw new InvalidArgumentError(`CA file ${file} does not exist`);
  return readFileSync(file, 'utf8');
}

/** ./data/cluster.json's nodes when it exists (a local `raftlock cluster up`), else the default ports. */
export function defaultServers(): string[] {
  const file = './data/cluster.json';
  if (existsSync(file)) {
    const cluster = JSON.parse(readFileSync(file, 'utf8')) as ClusterFile;
    return cluster.nodes.map((node) => node.url);
  }
  return ['ws://127.0.0.1:7401', 'ws://127.0.0.1:7402', 'ws://127.0.0.1:7403'];
}

export interface ClientCredentials {
  readonly servers: string[];
  readonly principal: string;
  readonly password: string;
  readonly ca?: string;
}

export function clientCredentials(values: {
  servers?: string | undefined;
  principal?: string | undefined;
  'password-file'?: string | undefined;
  ca?: string | undefined;
}): ClientCredentials {
  const servers =
    values.servers
      ?.split(',')
      .map((server) => server.trim())
      .filter((server) => server !== '') ?? defaultServers();
  if (servers.length === 0) throw new InvalidArgumentError('--servers names no server');
  const principal = values.principal ?? process.env.RAFTLOCK_PRINCIPAL ?? 'control';
  let password = process.env.RAFTLOCK_PASSWORD ?? 'password';
  const file = values['password-file'];
  if (file !== undefined) {
    if (!existsSync(file)) throw new InvalidArgumentError(`--password-file ${file} does not exist`);
    password = readFileSync(file, 'utf8').split(/\r?\n/)[0] ?? '';
  }
  const ca = clientCa(values);
  return { servers, principal, password, ...(ca === undefined ? {} : { ca }) };
}

/** Left-aligned columns, two spaces apart, the first row a header. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
