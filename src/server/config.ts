// A node's configuration: what `raftlock start` builds from a cluster file (`cluster.json`, written by
// `raftlock cluster up`) or from flags, checked in one place with clear errors.

import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.ts';
import type { NodeId } from '../raft/index.ts';
import { checkUsersFile, defaultUsersFile, readUsersFile, type UsersFile } from '../security/users.ts';
import type { PeerAddress } from '../transport/peer-transport.ts';
import { type NodeTiming, nodeTimingDefaults } from './node.ts';

export interface MemberConfig {
  readonly id: NodeId;
  /** Client URL, e.g. ws://127.0.0.1:7401 (leader hints point here). Null when unknown. */
  readonly url: string | null;
  readonly peer: PeerAddress;
}

export interface NodeConfig {
  readonly id: NodeId;
  readonly clusterId: string;
  readonly clusterSecret: string;
  readonly dataDir: string;
  /** Every voter of the initial membership, this node included. */
  readonly members: readonly MemberConfig[];
  /** Client port (WebSocket + HTTP). */
  readonly listen: PeerAddress;
  readonly peerListen: PeerAddress;
  /** Principals, roles and password hashes (docs/security.md). */
  readonly users: UsersFile;
  /** PEM files: `cert`/`key` serve wss:// to clients and identify the node to peers (mutual TLS, `ca`). */
  readonly tls?: TlsFiles | undefined;
  readonly reconnectionWindowMs: number;
  readonly timing: NodeTiming;
  /** fsync every write batch; off only for throwaway benchmarks (it gives up C3). */
  readonly sync: boolean;
  /** Where synced writes run: on the event loop's thread (default) or libuv's pool (docs/storage.md). */
  readonly diskWrites?: DiskWrites | undefined;
  /**
   * C5: this node joins a running cluster (`raftlock start --join`). An empty data directory then starts
   * with no membership at all, and `members` lists the addresses the cluster told it, not voters.
   */
  readonly joining?: boolean | undefined;
}

export interface TlsFiles {
  /** The CA that signed every node's certificate: peers must present a certificate it signed. */
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** No users file: `control` / `password` with every permission (the local cluster works out of the box). */
export const defaultUsers: UsersFile = defaultUsersFile;
export { readUsersFile };
export const defaultReconnectionWindowMs = 30_000;

/** The file `raftlock cluster up` writes and `raftlock start --config` reads. */
export interface ClusterFile {
  readonly clusterId?: string;
  readonly clusterSecret: string;
  /** Inline users (`{principal, password, roles?}`), or `usersFile`: a users file, relative to this file. */
  readonly users?: readonly {
    readonly principal: string;
    readonly password: string;
    readonly roles?: readonly string[];
  }[];
  readonly roles?: UsersFile['roles'];
  readonly usersFile?: string;
  /** PEM paths relative to this file: the CA, and each node's `<dir>/<id>.pem` / `<dir>/<id>-key.pem`. */
  readonly tls?: { readonly ca: string; readonly dir: string };
  readonly timing?: Partial<NodeTiming> & { readonly reconnectionWindowMs?: number };
  readonly nodes: readonly {
    readonly id: string;
    readonly pid?: number | null;
    readonly url: string;
    readonly peerUrl: string;
    readonly dataDir?: string;
  }[];
}

export function parseHostPort(text: string, what: string): PeerAddress {
  const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text.trim());
  if (match === null)
    throw new InvalidArgumentError(`${what}: expected HOST:PORT, got ${JSON.stringify(text)}`);
  const port = Number(match[2]);
  if (port < 0 || port > 65_535) throw new InvalidArgumentError(`${what}: port ${port} out of range`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

export function parseWsUrl(text: string, what: string): PeerAddress {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidArgumentError(`${what}: not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:')
    throw new InvalidArgumentError(`${what}: expected a ws:// URL, got ${JSON.stringify(text)}`);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) };
}

export function readClusterFile(path: string): ClusterFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new InvalidArgumentError(`cannot read cluster file ${path}: ${(error as Error).message}`);
  }
  const file = raw as ClusterFile;
  if (typeof file !== 'object' || file === null || !Array.isArray(file.nodes) || file.nodes.length === 0)
    throw new InvalidArgumentError(`${path}: expected {"nodes":[…], "clusterSecret": …}`);
  if (typeof file.clusterSecret !== 'string')
    throw new InvalidArgumentError(`${path}: clusterSecret must be a string`);
  return file;
}

export interface NodeConfigOverrides {
  readonly dataDir?: string | undefined;
  readonly users?: UsersFile | undefined;
  readonly tls?: TlsFiles | undefined;
  readonly timing?: Partial<NodeTiming> | undefined;
  readonly reconnectionWindowMs?: number | undefined;
  readonly sync?: boolean | undefined;
  readonly diskWrites?: DiskWrites | undefined;
}

/** `inline`: synced writes block the event loop (fastest); `pool`: libuv's thread pool does them. */
export type DiskWrites = 'inline' | 'pool';
export const diskWritesModes: readonly DiskWrites[] = ['inline', 'pool'];
export const diskWritesDefault: DiskWrites = 'inline';

/** The config of node `id` of a cluster file; relative data dirs resolve against the file's folder. */
export function nodeConfigFromClusterFile(
  path: string,
  id: string,
  overrides: NodeConfigOverrides = {},
): NodeConfig {
  const file = readClusterFile(path);
  const me = file.nodes.find((node) => node.id === id);
  if (me === undefined)
    throw new InvalidArgumentError(
      `${path}: no node ${JSON.stringify(id)} (have ${file.nodes.map((node) => node.id).join(', ')})`,
    );
  const base = resolve(path, '..');
  const dataDir =
    overrides.dataDir ??
    (me.dataDir === undefined
      ? join(base, id)
      : isAbsolute(me.dataDir)
        ? me.dataDir
        : join(base, me.dataDir));
  const users =
    overrides.users ??
    (file.usersFile !== undefined
      ? readUsersFile(isAbsolute(file.usersFile) ? file.usersFile : join(base, file.usersFile))
      : file.users === undefined
        ? defaultUsers
        : checkUsersFile({ roles: file.roles, users: file.users }, `${path}: users`));
  const tls =
    overrides.tls ??
    (file.tls === undefined
      ? undefined
      : {
          ca: readFileSync(join(base, file.tls.ca), 'utf8'),
          cert: readFileSync(join(base, file.tls.dir, `${id}.pem`), 'utf8'),
          key: readFileSync(join(base, file.tls.dir, `${id}-key.pem`), 'utf8'),
        });
  const { reconnectionWindowMs: fileWindow, ...fileTiming } = file.timing ?? {};
  return checkNodeConfig({
    id,
    clusterId: file.clusterId ?? 'raftlock',
    clusterSecret: file.clusterSecret,
    dataDir,
    members: file.nodes.map((node) => ({
      id: node.id,
      url: node.url,
      peer: parseWsUrl(node.peerUrl, `node ${node.id} peerUrl`),
    })),
    listen: parseWsUrl(me.url, `node ${id} url`),
    peerListen: parseWsUrl(me.peerUrl, `node ${id} peerUrl`),
    users,
    tls,
    reconnectionWindowMs: overrides.reconnectionWindowMs ?? fileWindow ?? defaultReconnectionWindowMs,
    timing: { ...nodeTimingDefaults, ...fileTiming, ...overrides.timing },
    sync: overrides.sync ?? true,
    diskWrites: overrides.diskWrites ?? diskWritesDefault,
  });
}

export function checkNodeConfig(config: NodeConfig): NodeConfig {
  const ids = new Set(config.members.map((member) => member.id));
  if (ids.size !== config.members.length) throw new InvalidArgumentError('member ids must be unique');
  if (!ids.has(config.id)) throw new InvalidArgumentError(`node ${config.id} is not among the members`);
  if (config.joining !== true && ![1, 3, 5, 7].includes(config.members.length))
    throw new InvalidArgumentError(`a cluster has 1, 3, 5 or 7 voters, not ${config.members.length}`);
  if (Buffer.byteLength(config.clusterSecret) < 16)
    throw new InvalidArgumentError('the cluster secret must be at least 16 bytes');
  if (config.users.users.length === 0) throw new InvalidArgumentError('at least one user is needed');
  const timing = config.timing;
  for (const [name, value] of Object.entries(timing)) {
    if (!Number.isSafeInteger(value) || value < (name === 'snapshotKeepEntries' ? 0 : 1))
      throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  }
  if (timing.heartbeatIntervalTicks >= timing.electionTimeoutTicks)
    throw new InvalidArgumentError('the heartbeat interval must be shorter than the election timeout');
  if (!Number.isSafeInteger(config.reconnectionWindowMs) || config.reconnectionWindowMs < 1)
    throw new InvalidArgumentError('reconnectionWindowMs must be a positive integer');
  return config;
}
