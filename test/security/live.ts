// In-process raftlock nodes for the security and fuzz suites: real gateways, peer transports and
// LevelDB storage in a temporary directory, with every log record kept for assertions.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createCertificateAuthority, issueCertificate } from '../../src/security/certs.ts';
import type { UsersFile } from '../../src/security/users.ts';
import { defaultUsers, type NodeConfig, type TlsFiles } from '../../src/server/config.ts';
import type { Logger } from '../../src/server/log.ts';
import { nodeTimingDefaults } from '../../src/server/node.ts';
import { type RaftlockServer, startServer } from '../../src/server/server.ts';
import { freePorts } from '../server/harness.ts';

export interface LogRecord {
  readonly level: number;
  readonly event?: string;
  readonly node?: string;
  readonly [key: string]: unknown;
}

export function capturingLogger(records: LogRecord[], base: Record<string, unknown> = {}): Logger {
  return pino(
    { level: 'debug', base },
    {
      write(line: string): void {
        records.push(JSON.parse(line) as LogRecord);
      },
    },
  );
}

export interface LiveCluster {
  readonly servers: RaftlockServer[];
  readonly configs: NodeConfig[];
  readonly urls: string[];
  readonly peerPorts: number[];
  readonly logs: LogRecord[];
  readonly fatal: unknown[];
  readonly dir: string;
  readonly caPem: string | undefined;
  leader(): RaftlockServer | undefined;
  waitForLeader(timeoutMs?: number): Promise<RaftlockServer>;
  stop(): Promise<void>;
}

export const liveSecret = 'security-suite-secret-0123456789';

export function devTls(ids: readonly string[]): { caPem: string; files: Map<string, TlsFiles> } {
  const ca = createCertificateAuthority('raftlock test CA');
  const files = new Map<string, TlsFiles>();
  for (const id of ids) {
    const issued = issueCertificate(ca, {
      commonName: id,
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    });
    files.set(id, { ca: ca.certPem, cert: issued.certPem, key: issued.keyPem });
  }
  return { caPem: ca.certPem, files };
}

export async function startLiveCluster(
  options: {
    readonly size?: number;
    readonly users?: UsersFile;
    readonly tls?: boolean;
    /** fsync on, with the sync log (default off: these suites test the gateway, not the disk). */
    readonly sync?: boolean;
  } = {},
): Promise<LiveCluster> {
  const size = options.size ?? 1;
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-sec-'));
  const ports = await freePorts(size * 2);
  const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
  const tls = options.tls === true ? devTls(ids) : undefined;
  const scheme = tls === undefined ? 'ws' : 'wss';
  const members = ids.map((id, i) => ({
    id,
    url: `${scheme}://127.0.0.1:${ports[i]}`,
    peer: { host: '127.0.0.1', port: ports[size + i] as number },
  }));
  const logs: LogRecord[] = [];
  const fatal: unknown[] = [];
  const configs: NodeConfig[] = ids.map((id, i) => ({
    id,
    clusterId: 'sec',
    clusterSecret: liveSecret,
    dataDir: join(dir, id),
    members,
    listen: { host: '127.0.0.1', port: ports[i] as number },
    peerListen: { host: '127.0.0.1', port: ports[size + i] as number },
    users: options.users ?? defaultUsers,
    tls: tls?.files.get(id),
    reconnectionWindowMs: 30_000,
    timing: { ...nodeTimingDefaults, tickMs: 50 },
    sync: options.sync ?? false,
  }));
  const servers = await Promise.all(
    configs.map((config) =>
      startServer(config, capturingLogger(logs, { node: config.id }), (error) => fatal.push(error)),
    ),
  );
  const leader = () => servers.find((server) => server.node.isLeader);
  return {
    servers,
    configs,
    urls: members.map((member) => member.url),
    peerPorts: configs.map((config) => config.peerListen.port),
    logs,
    fatal,
    dir,
    caPem: tls?.caPem,
    leader,
    async waitForLeader(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = leader();
        if (found !== undefined && servers.every((server) => server.node.softState.leader !== null))
          return found;
        if (Date.now() > deadline) throw new Error('no leader elected');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop() {
      await Promise.all(servers.map((server) => server.stop({ transferTimeoutMs: 0 })));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
