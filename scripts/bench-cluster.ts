// The raftlock side of `npm run bench`: a local 3-node cluster in separate processes on loopback (LevelDB,
// fsync on unless told otherwise), with what the workloads need — the leader's URL, kill -9 of one node,
// restart with its data, RSS — and the client adapter the workloads drive.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeCommand } from '../src/cli/cluster-up.ts';
import { fetchStatus } from '../src/cli/status.ts';
import { ConnectionPool, connect, type Session, type SessionLock } from '../src/client/index.ts';
import type { BenchCluster, BenchSession, BenchTarget } from './bench-types.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RaftlockClusterOptions {
  readonly fsync: boolean;
  /** Extra `node` flags for every node process, e.g. `--cpu-prof`. */
  readonly nodeFlags?: readonly string[];
  /** Extra `raftlock start` options for every node. */
  readonly startArgs?: readonly string[];
  /** Where node stderr goes (default: ignored unless RAFTLOCK_BENCH_VERBOSE is set). */
  readonly verbose?: boolean;
  /** Another checkout's `src/cli/main.ts` to run the nodes from (before/after comparisons). */
  readonly cliMain?: string;
  /**
   * The sessions of one workload share one WebSocket per node (a `ConnectionPool`, docs/protocol.md
   * "Shared connections") instead of one each. Default true; a checkout from before shared connections
   * needs false.
   */
  readonly sharedConnections?: boolean;
}

const ownCliMain = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const ownLoader = fileURLToPath(new URL('../bin/ts-loader.js', import.meta.url));

/**
 * The TypeScript loader another checkout's nodes run through: its own `bin/ts-loader.js`, or tsx for a
 * checkout from before it had one — so a "before" column measures that checkout as it ran.
 */
function loaderOf(cliMain: string): string {
  const own = join(dirname(cliMain), '..', '..', 'bin', 'ts-loader.js');
  return existsSync(own) ? own : import.meta.resolve('tsx');
}

interface NodePlan {
  readonly id: string;
  readonly url: string;
  readonly peerUrl: string;
  readonly dataDir: string;
}

export class RaftlockCluster implements BenchCluster {
  readonly system = 'raftlock';
  readonly dir: string;
  private readonly file: string;
  private readonly plan: NodePlan[];
  private readonly children: (ChildProcess | null)[];
  private readonly options: RaftlockClusterOptions;

  private constructor(dir: string, file: string, plan: NodePlan[], options: RaftlockClusterOptions) {
    this.dir = dir;
    this.file = file;
    this.plan = plan;
    this.options = options;
    this.children = plan.map(() => null);
  }

  static async start(options: RaftlockClusterOptions): Promise<RaftlockCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-bench-'));
    const plan: NodePlan[] = [];
    for (let i = 1; i <= 3; i++) {
      plan.push({
        id: `n${i}`,
        url: `ws://127.0.0.1:${await freePort()}`,
        peerUrl: `ws://127.0.0.1:${await freePort()}`,
        dataDir: `n${i}`,
      });
    }
    const file = join(dir, 'cluster.json');
    writeFileSync(file, JSON.stringify({ clusterSecret: 'bench-secret-0123456789abcdef', nodes: plan }));
    const cluster = new RaftlockCluster(dir, file, plan, options);
    for (let i = 0; i < plan.length; i++) cluster.spawnNode(i);
    await cluster.waitForLeader(20_000);
    return cluster;
  }

  get urls(): string[] {
    return this.plan.map((node) => node.url);
  }

  get size(): number {
    return this.plan.length;
  }

  private spawnNode(i: number): void {
    const extra = [
      '--log-level',
      'warn',
      ...(this.options.fsync ? [] : ['--no-fsync']),
      ...(this.options.startArgs ?? []),
    ];
    const verbose = this.options.verbose ?? process.env.RAFTLOCK_BENCH_VERBOSE !== undefined;
    const cliMain = this.options.cliMain;
    const command = nodeCommand(this.file, this.plan[i]!.id, extra).map((arg) => {
      if (cliMain === undefined) return arg;
      if (arg === ownCliMain) return cliMain;
      return arg === ownLoader ? loaderOf(cliMain) : arg;
    });
    const child = spawn(process.execPath, [...(this.options.nodeFlags ?? []), ...command], {
      cwd: this.dir,
      stdio: ['ignore', 'ignore', verbose ? 'inherit' : 'ignore'],
    });
    this.children[i] = child;
  }

  /** Index of the node that leads now, asking every live node; -1 when none claims it. */
  async leaderIndex(timeoutMs = 500): Promise<number> {
    const statuses = await Promise.all(
      this.plan.map((node, i) =>
        this.children[i] === null ? null : fetchStatus(node.url, timeoutMs).catch(() => null),
      ),
    );
    let best = -1;
    let bestTerm = -1;
    statuses.forEach((status, i) => {
      if (status?.role === 'leader' && status.term > bestTerm) {
        best = i;
        bestTerm = status.term;
      }
    });
    return best;
  }

  async waitForLeader(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const leader = await this.leaderIndex();
      if (leader >= 0) return leader;
      if (Date.now() > deadline) throw new Error('raftlock: no leader');
      await sleep(50);
    }
  }

  /** The client URL list with the leader first, so sessions start on the leader. */
  async serversLeaderFirst(): Promise<string[]> {
    const leader = await this.waitForLeader(20_000);
    const urls = this.urls;
    return [urls[leader]!, ...urls.filter((_, i) => i !== leader)];
  }

  pids(): number[] {
    return this.children.flatMap((child) => (child?.pid === undefined ? [] : [child.pid]));
  }

  pid(i: number): number | null {
    return this.children[i]?.pid ?? null;
  }

  kill9(i: number): void {
    this.children[i]?.kill('SIGKILL');
    this.children[i] = null;
  }

  restart(i: number): void {
    if (this.children[i] !== null) throw new Error(`node ${i} is running`);
    this.spawnNode(i);
  }

  /** Status of node i (applied index etc.), or null when it does not answer. */
  async status(i: number, timeoutMs = 500) {
    return fetchStatus(this.plan[i]!.url, timeoutMs).catch(() => null);
  }

  /** Resident set size of node i in bytes, from /proc. */
  rssBytes(i: number): number {
    const pid = this.pid(i);
    if (pid === null) return Number.NaN;
    const statm = readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ');
    return Number(statm[1]) * 4096;
  }

  /** Stops every node: SIGTERM (so `--cpu-prof` writes its profile), then SIGKILL after `graceMs`. */
  async stop(graceMs = 0): Promise<void> {
    const live = this.children.filter((child): child is ChildProcess => child !== null);
    if (graceMs > 0) {
      await Promise.all(
        live.map(
          (child) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                child.kill('SIGKILL');
                resolve();
              }, graceMs);
              child.once('exit', () => {
                clearTimeout(timer);
                resolve();
              });
              child.kill('SIGTERM');
            }),
        ),
      );
    } else for (const child of live) child.kill('SIGKILL');
    this.children.fill(null);
    rmSync(this.dir, { recursive: true, force: true });
  }

  target(servers: readonly string[]): BenchTarget {
    return new RaftlockTarget(
      servers,
      this.options.sharedConnections === false ? undefined : new ConnectionPool(),
    );
  }
}

class RaftlockTarget implements BenchTarget {
  readonly system = 'raftlock';
  private readonly servers: readonly string[];
  private readonly pool: ConnectionPool | undefined;

  constructor(servers: readonly string[], pool: ConnectionPool | undefined) {
    this.servers = servers;
    this.pool = pool;
  }

  async open(): Promise<BenchSession> {
    const session = await connect({
      servers: [...this.servers],
      principal: 'control',
      password: 'password',
      connectDeadlineMs: 30_000,
      ...(this.pool === undefined ? {} : { pool: this.pool }),
    });
    return new RaftlockBenchSession(session);
  }
}

class RaftlockBenchSession implements BenchSession {
  private readonly session: Session;
  private readonly held = new Map<string, SessionLock>();

  constructor(session: Session) {
    this.session = session;
  }

  async lock(name: string): Promise<void> {
    this.held.set(name, await this.session.lock(name));
  }

  async unlock(name: string): Promise<void> {
    const lock = this.held.get(name);
    if (lock === undefined) throw new Error(`unlock ${name}: not held`);
    this.held.delete(name);
    await lock.unlock();
  }

  async close(): Promise<void> {
    await this.session.close().catch(() => undefined);
  }
}
