// `raftlock start`: run one node, from a cluster file (`--config FILE --node ID`) or entirely by flags.

import { existsSync, readFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '../errors.ts';
import {
  checkNodeConfig,
  type DiskWrites,
  defaultReconnectionWindowMs,
  defaultUsers,
  diskWritesDefault,
  diskWritesModes,
  type MemberConfig,
  type NodeConfig,
  nodeConfigFromClusterFile,
  parseHostPort,
  parseWsUrl,
  readUsersFile,
} from '../server/config.ts';
import { serverLimits } from '../server/limits.ts';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../server/log.ts';
import { checkClientUrl, formatPeerAddress, parsePeerAddress } from '../server/members.ts';
import { type NodeTiming, nodeTimingDefaults } from '../server/node.ts';
import { startServer } from '../server/server.ts';
import { type ClientCredentials, clientCredentials } from './client-options.ts';
import { listMembers, onLeader } from './members.ts';

export const startUsage = `raftlock start --config FILE --node ID [--data-dir DIR] [options]
raftlock start --id ID --listen HOST:PORT --peer-listen HOST:PORT --peers ID=HOST:PORT,… --data-dir DIR
               --cluster-secret SECRET (or env RAFTLOCK_CLUSTER_SECRET) [--client-urls ID=ws://HOST:PORT,…]
raftlock start --id ID --listen HOST:PORT --peer-listen HOST:PORT --join URLS --data-dir DIR
               --cluster-secret SECRET [--peer-url HOST:PORT] [--client-url URL]
               [--principal NAME] [--password-file FILE] [--ca FILE]
  --join: a new node asks the cluster (client URLs, an admin login) to add it as a learner, catches up
  and is promoted; a restart with the same data directory needs no second join (C5). --peer-url and
  --client-url are the addresses the others reach it at (default: --peer-listen and ws://--listen).

options:
  --users FILE                 users, roles and scrypt password hashes (raftlock user add); default user control/password
  --tls-cert FILE --tls-key FILE --tls-ca FILE
                               PEM: serve wss:// to clients and use mutual TLS with peers (certificates signed by the CA)
  --cluster-id NAME            (flags mode) default raftlock
  --tick-ms N                  default ${nodeTimingDefaults.tickMs}
  --election-ticks N           default ${nodeTimingDefaults.electionTimeoutTicks}
  --heartbeat-ticks N          default ${nodeTimingDefaults.heartbeatIntervalTicks}
  --connection-timeout-ms N    default ${nodeTimingDefaults.connectionTimeoutMs}
  --reconnection-window-ms N   default ${defaultReconnectionWindowMs}
  --snapshot-every N           entries between snapshots, default ${nodeTimingDefaults.snapshotEveryEntries}
  --snapshot-keep N            entries kept behind a snapshot, default ${nodeTimingDefaults.snapshotKeepEntries}
  --no-fsync                   benchmarks only: gives up durability across kill -9
  --disk-writes inline|pool    where synced writes run: on the event loop (default; after a write slower
                               than ${serverLimits.inlineWriteSlowMs} ms, the pool for ${serverLimits.inlineWritePauseMs / 1000} s) or always in libuv's thread pool
  --log-format json|text       default text
  --log-level LEVEL            debug|info|warn|error, default info`;

const options = {
  config: { type: 'string' },
  node: { type: 'string' },
  'data-dir': { type: 'string' },
  id: { type: 'string' },
  listen: { type: 'string' },
  'peer-listen': { type: 'string' },
  peers: { type: 'string' },
  'client-urls': { type: 'string' },
  'cluster-secret': { type: 'string' },
  'cluster-id': { type: 'string' },
  users: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tick-ms': { type: 'string' },
  'election-ticks': { type: 'string' },
  'heartbeat-ticks': { type: 'string' },
  'connection-timeout-ms': { type: 'string' },
  'reconnection-window-ms': { type: 'string' },
  'snapshot-every': { type: 'string' },
  'snapshot-keep': { type: 'string' },
  'no-fsync': { type: 'boolean' },
  'disk-writes': { type: 'string' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
  join: { type: 'string' },
  'peer-url': { type: 'string' },
  'client-url': { type: 'string' },
  principal: { type: 'string' },
  'password-file': { type: 'string' },
  ca: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** What `--join` needs: where the cluster is, how to log in, and where others reach this node. */
export interface JoinPlan {
  readonly credentials: ClientCredentials;
  readonly peerAddress: string;
  readonly clientUrl: string;
}

function integer(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isSafeInteger(number)) throw new InvalidArgumentError(`--${name}: not an integer: ${value}`);
  return number;
}

function pairs(text: string | undefined, what: string): Map<string, string> {
  const map = new Map<string, string>();
  if (text === undefined || text.trim() === '') return map;
  for (const part of text.split(',')) {
    const at = part.indexOf('=');
    if (at <= 0) throw new InvalidArgumentError(`--${what}: expected ID=VALUE, got ${JSON.stringify(part)}`);
    map.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
  }
  return map;
}

export function parseStartArgs(argv: readonly string[]): {
  config: NodeConfig;
  logFormat: LogFormat;
  logLevel: LogLevel;
  join?: JoinPlan;
} | null {
  const { values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
  if (values.help === true) return null;
  const timing: Partial<NodeTiming> = {};
  const set = (key: keyof NodeTiming, flag: keyof typeof values) => {
    const value = integer(values[flag] as string | undefined, flag);
    if (value !== undefined) (timing as Record<string, number>)[key] = value;
  };
  set('tickMs', 'tick-ms');
  set('electionTimeoutTicks', 'election-ticks');
  set('heartbeatIntervalTicks', 'heartbeat-ticks');
  set('connectionTimeoutMs', 'connection-timeout-ms');
  set('snapshotEveryEntries', 'snapshot-every');
  set('snapshotKeepEntries', 'snapshot-keep');
  const reconnectionWindowMs = integer(values['reconnection-window-ms'], 'reconnection-window-ms');
  const users = values.users === undefined ? undefined : readUsersFile(values.users);
  const sync = values['no-fsync'] === true ? false : undefined;
  const diskWrites = values['disk-writes'] as DiskWrites | undefined;
  if (diskWrites !== undefined && !diskWritesModes.includes(diskWrites))
    throw new InvalidArgumentError(`--disk-writes must be ${diskWritesModes.join(' or ')}`);
  const tlsFlags = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  if (tlsFlags.some((flag) => flag !== undefined) && !tlsFlags.every((flag) => flag !== undefined))
    throw new InvalidArgumentError('TLS needs all three of --tls-cert, --tls-key and --tls-ca');
  const tls =
    values['tls-cert'] === undefined
      ? undefined
      : {
          cert: readFileSync(values['tls-cert'], 'utf8'),
          key: readFileSync(values['tls-key'] as string, 'utf8'),
          ca: readFileSync(values['tls-ca'] as string, 'utf8'),
        };
  const logFormat = (values['log-format'] ?? 'text') as LogFormat;
  if (logFormat !== 'json' && logFormat !== 'text')
    throw new InvalidArgumentError('--log-format must be json or text');
  const logLevel = (values['log-level'] ?? 'info') as LogLevel;

  if (values.config !== undefined) {
    if (values.node === undefined) throw new InvalidArgumentError('--config needs --node ID');
    if (values.join !== undefined)
      throw new InvalidArgumentError('--join works in flags mode (--id, --listen, …), not with --config');
    const config = nodeConfigFromClusterFile(values.config, values.node, {
      dataDir: values['data-dir'],
      users,
      tls,
      timing,
      reconnectionWindowMs,
      sync,
      diskWrites,
    });
    return { config, logFormat, logLevel };
  }

  const id = values.id;
  if (id === undefined) throw new InvalidArgumentError('give --config FILE --node ID, or --id and the flags');
  if (values.listen === undefined || values['peer-listen'] === undefined || values['data-dir'] === undefined)
    throw new InvalidArgumentError('flags mode needs --listen, --peer-listen and --data-dir');
  const secret = values['cluster-secret'] ?? process.env.RAFTLOCK_CLUSTER_SECRET;
  if (secret === undefined)
    throw new InvalidArgumentError('flags mode needs --cluster-secret or RAFTLOCK_CLUSTER_SECRET');
  const listen = parseHostPort(values.listen, '--listen');
  const peerListen = parseHostPort(values['peer-listen'], '--peer-listen');
  const clientUrls = pairs(values['client-urls'], 'client-urls');
  for (const [peer, url] of clientUrls) parseWsUrl(url, `--client-urls ${peer}`);
  const selfClientUrl =
    values['client-url'] ??
    clientUrls.get(id) ??
    `${tls === undefined ? 'ws' : 'wss'}://${listen.host}:${listen.port}`;
  const peerList = pairs(values.peers, 'peers');
  const listedSelf = peerList.get(id);
  const selfPeer =
    values['peer-url'] !== undefined
      ? parsePeerAddress(values['peer-url'])
      : listedSelf !== undefined
        ? parseHostPort(listedSelf, `--peers ${id}`)
        : peerListen;
  checkClientUrl(selfClientUrl);
  const members: MemberConfig[] = [{ id, url: selfClientUrl, peer: selfPeer }];
  for (const [peer, address] of peerList) {
    // Every node may be given the same full list (a StatefulSet's args, one config template): its own
    // entry is where the others reach it (unless --peer-url says otherwise), not a peer to dial.
    if (peer === id) continue;
    members.push({
      id: peer,
      url: clientUrls.get(peer) ?? null,
      peer: parseHostPort(address, `--peers ${peer}`),
    });
  }
  const config = checkNodeConfig({
    id,
    clusterId: values['cluster-id'] ?? 'raftlock',
    clusterSecret: secret,
    dataDir: values['data-dir'],
    members,
    listen,
    peerListen,
    users: users ?? defaultUsers,
    tls,
    reconnectionWindowMs: reconnectionWindowMs ?? defaultReconnectionWindowMs,
    timing: { ...nodeTimingDefaults, ...timing },
    sync: sync ?? true,
    diskWrites: diskWrites ?? diskWritesDefault,
    joining: values.join !== undefined,
  });
  if (values.join === undefined) return { config, logFormat, logLevel };
  // A TLS node trusts its cluster's CA for the join too, unless told otherwise.
  const credentials = clientCredentials({
    ...values,
    servers: values.join,
    ca: values.ca ?? process.env.RAFTLOCK_CA ?? values['tls-ca'],
  });
  return {
    config,
    logFormat,
    logLevel,
    join: { credentials, peerAddress: formatPeerAddress(selfPeer), clientUrl: selfClientUrl },
  };
}

/**
 * `--join`, before the node starts: a node that never started here learns every member's addresses from
 * the cluster (they go to its members.json). A restart finds them on disk and asks nothing.
 */
async function learnClusterMembers(config: NodeConfig, plan: JoinPlan, log: Logger): Promise<NodeConfig> {
  if (existsSync(joinPath(config.dataDir, 'members.json'))) return config;
  const result = await listMembers(plan.credentials);
  const members: MemberConfig[] = [...config.members];
  for (const member of result.members) {
    if (member.id === config.id || member.peerAddress === null) continue;
    members.push({ id: member.id, url: member.clientUrl, peer: parsePeerAddress(member.peerAddress) });
  }
  log.info({ event: 'join_members_learned', members: members.map((m) => m.id) }, 'learned the members');
  return { ...config, members };
}

/** `--join`, once the node runs: unless the cluster lists it already, ask the leader to add it. */
async function askToJoin(config: NodeConfig, plan: JoinPlan, log: Logger): Promise<void> {
  const result = await listMembers(plan.credentials);
  const me = result.members.find((member) => member.id === config.id);
  if (me !== undefined) {
    log.info({ event: 'join_not_needed', role: me.role }, `already a member (${me.role}); not joining again`);
    return;
  }
  log.info({ event: 'join_requested', peer: plan.peerAddress, client: plan.clientUrl }, 'asking to join');
  await onLeader(plan.credentials, (session) =>
    session.addMember({ id: config.id, peerAddress: plan.peerAddress, clientUrl: plan.clientUrl }),
  );
  log.info({ event: 'joined', as: 'learner' }, 'added as a learner; promotion follows once caught up');
}

export async function runStart(argv: readonly string[]): Promise<number> {
  const parsed = parseStartArgs(argv);
  if (parsed === null) {
    process.stdout.write(`${startUsage}\n`);
    return 0;
  }
  const { logFormat, logLevel, join } = parsed;
  let config = parsed.config;
  const log = createLogger({ format: logFormat, level: logLevel, base: { node: config.id } });
  const me = config.members.find((member) => member.id === config.id);
  if (me !== undefined && (me.peer.host === '0.0.0.0' || me.peer.host === '::'))
    log.warn(
      { event: 'peer_address_unspecified', peer: formatPeerAddress(me.peer) },
      'members will list this node at an unspecified address; pass --peer-url HOST:PORT (C5)',
    );
  if (join !== undefined) config = await learnClusterMembers(config, join, log);
  if (config.users === defaultUsers)
    log.warn({ event: 'default_users' }, 'no users file: accepting the default user control/password');
  const plaintext = config.users.users.filter((user) => !user.password.startsWith('scrypt$'));
  if (plaintext.length > 0 && config.users !== defaultUsers)
    log.warn(
      { event: 'plaintext_passwords', principals: plaintext.map((user) => user.principal) },
      'users file holds plaintext passwords; store scrypt hashes (raftlock user add)',
    );
  if (config.tls === undefined && config.listen.host !== '127.0.0.1' && config.listen.host !== 'localhost')
    log.warn({ event: 'tls_off' }, 'TLS is off: clients and peers talk in the clear (docs/security.md)');
  if (!config.sync)
    log.warn({ event: 'fsync_off' }, 'fsync is off: acknowledged writes may be lost on a crash');
  let removed: () => void = () => undefined;
  const server = await startServer(
    config,
    log,
    (error) => {
      log.flush?.();
      process.stderr.write(`raftlock ${config.id}: fatal: ${String((error as Error)?.stack ?? error)}\n`);
      process.exit(70);
    },
    { onRemoved: () => removed() },
  );
  if (join !== undefined) {
    try {
      await askToJoin(config, join, log);
    } catch (error) {
      log.error({ event: 'join_failed', err: String(error) }, 'could not join the cluster; stopping');
      await server.stop({ transferTimeoutMs: 0 });
      throw error;
    }
  }
  await new Promise<void>((resolve) => {
    removed = resolve;
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({ event: 'signal', signal }, 'shutting down');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      server.stop().then(resolve, (error: unknown) => {
        log.error({ event: 'stop_failed', err: error }, 'stop failed');
        resolve();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  return 0;
}
