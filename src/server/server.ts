// Assembles one raftlock node: storage (recovering from disk or bootstrapping), the peer transport, the
// Raft driver with its lock table, and the client gateway; and takes them down again in order.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.ts';
import { UserDirectory } from '../security/users.ts';
import { LevelStorage } from '../storage/level-storage.ts';
import { PeerTransport } from '../transport/peer-transport.ts';
import type { NodeConfig } from './config.ts';
import { DashboardEvents, DashboardViews } from './dashboard.ts';
import { Gateway } from './gateway.ts';
import type { Logger } from './log.ts';
import { MemberDirectory } from './members.ts';
import { NodeMetrics } from './metrics.ts';
import { RaftlockNode } from './node.ts';

export interface RaftlockServer {
  readonly node: RaftlockNode;
  readonly gateway: Gateway;
  /** Graceful: hand leadership over (if leader), close client connections, then peers, then the disk. */
  stop(options?: { readonly transferTimeoutMs?: number }): Promise<void>;
}

export async function startServer(
  config: NodeConfig,
  log: Logger,
  onFatal: (error: unknown) => void,
  hooks: { readonly onRemoved?: () => void } = {},
): Promise<RaftlockServer> {
  mkdirSync(config.dataDir, { recursive: true });
  // A removed node's log ends in its own removal: starting it again would only stop it again, and
  // joining with that data would bring stale state back. Its data directory must be wiped first.
  const removedMarker = join(config.dataDir, 'removed');
  if (existsSync(removedMarker))
    throw new InvalidArgumentError(
      `node ${config.id} was removed from the cluster (${removedMarker}); wipe ${config.dataDir} to join again`,
    );
  // C5: members' addresses — the configuration's, then what this node learned and saved before.
  const directory = new MemberDirectory(config.dataDir);
  for (const member of config.members)
    directory.learn(member.id, { peer: member.peer, clientUrl: member.url });
  if (directory.load())
    log.info(
      { event: 'members_loaded', members: directory.size },
      'member addresses loaded from members.json',
    );
  directory.save();
  const storage = await LevelStorage.open(config.dataDir, { sync: config.sync });
  // A joining node starts with no membership: the leader's bootstrap snapshot and log bring it.
  const voters = config.joining === true ? [] : config.members.map((member) => member.id).sort();
  let state = await storage.load();
  if (state === null) {
    state = await storage.bootstrap({ voters, learners: [] });
    log.info({ event: 'storage_bootstrapped', dataDir: config.dataDir, voters }, 'new data directory');
  } else {
    const info = storage.info();
    log.info(
      {
        event: 'storage_recovered',
        dataDir: config.dataDir,
        snapshotIndex: info.snapshotIndex,
        lastIndex: info.lastIndex,
        term: info.hardState.term,
        commit: info.hardState.commit,
      },
      'recovered from disk',
    );
  }
  const transportLog = log.child({ component: 'transport' });
  const transport = await PeerTransport.listen({
    id: config.id,
    clusterId: config.clusterId,
    secret: config.clusterSecret,
    listen: config.peerListen,
    tls: config.tls,
    // Every known address for now; the node narrows it to the members as soon as it starts.
    peers: new Map(
      [...directory.entries()]
        .filter(([id]) => id !== config.id)
        .map(([id, addresses]) => [id, addresses.peer]),
    ),
    log: ({ level, ...fields }) => transportLog[level](fields, fields.event),
  });
  const node = new RaftlockNode({
    id: config.id,
    storage,
    transport,
    state,
    timing: config.timing,
    diskWrites: config.diskWrites,
    log,
    onFatal,
    directory,
    onRemoved: () => {
      writeFileSync(removedMarker, `removed from cluster ${config.clusterId}\n`);
      // Let the answer to the removal request leave first, then stop taking part.
      setTimeout(() => void stop({ transferTimeoutMs: 0 }).then(() => hooks.onRemoved?.()), 500).unref();
    },
  });
  // One live map: membership changes update it, and NOT_LEADER hints and the dashboard read it.
  const memberUrls = directory.clientUrls;
  const gateway = await Gateway.listen({
    node,
    clusterId: config.clusterId,
    clusterSecret: config.clusterSecret,
    listen: config.listen,
    memberUrls,
    users: new UserDirectory(config.users),
    tls: config.tls === undefined ? undefined : { cert: config.tls.cert, key: config.tls.key },
    reconnectionWindowMs: config.reconnectionWindowMs,
    log,
  });
  const metrics = new NodeMetrics({
    status: () => gateway.status(),
    storage: () => storage.stats(),
    peers: () => transport.stats().peers,
  });
  node.addObserver(metrics);
  gateway.serveMetrics(metrics);
  const dashboardEvents = new DashboardEvents();
  node.addObserver(dashboardEvents);
  gateway.serveDashboard(
    new DashboardViews(dashboardEvents, () => ({
      status: gateway.status(),
      raft: node.raftStatus(),
      table: node.lockTable,
      memberUrls: gateway.memberUrls,
    })),
  );
  node.start();
  log.info(
    {
      event: 'listening',
      client: `${config.listen.host}:${gateway.address.port}`,
      peer: `${config.peerListen.host}:${transport.address.port}`,
    },
    'listening',
  );

  let stopping: Promise<void> | null = null;
  const stop = (options: { readonly transferTimeoutMs?: number } = {}): Promise<void> => {
    stopping ??= (async () => {
      const timing = config.timing;
      const transferTimeoutMs = options.transferTimeoutMs ?? timing.tickMs * timing.electionTimeoutTicks * 2;
      if (node.isLeader) {
        const handed = await node.transferLeadership(transferTimeoutMs);
        log.info({ event: 'leadership_handed_over', ok: handed }, 'leadership transfer finished');
      }
      await gateway.close();
      await node.stop();
      await transport.close();
      await storage.close();
      log.info({ event: 'node_stopped' }, 'stopped');
    })();
    return stopping;
  };
  return { node, gateway, stop };
}
