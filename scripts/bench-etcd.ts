// The etcd side of `npm run bench -- --vs etcd`: a 3-node etcd cluster on loopback (fsync on, etcd's
// default heartbeat 100 ms / election 1 s, like raftlock's defaults), driven through etcd's own lock
// service (v3lock Lock/Unlock, one lease per session kept alive) over its JSON gRPC gateway with Node's
// built-in fetch (undici, keep-alive): no npm dependency.
//
// etcd comes from Debian's `etcd-server` package (`apt-get install -y etcd-server`); `etcdInstallHint`
// says so when `etcd` is not on PATH, and the bench skips the comparison.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep } from './bench-cluster.ts';
import type { BenchCluster, BenchSession, BenchTarget } from './bench-types.ts';

export const etcdInstallHint =
  'etcd is not on PATH: install it (Debian/Ubuntu: `apt-get install -y etcd-server`) to compare with etcd';

/** `etcd --version`'s first line, or null when etcd is not on PATH. */
export function etcdVersion(): string | null {
  const result = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) return null;
  return result.stdout.split('\n')[0]?.trim() ?? 'etcd';
}

interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** POSTs a JSON body to the gRPC gateway; throws on HTTP or gRPC errors (with `code` from etcd). */
async function call<T>(endpoint: string, path: string, body: unknown, timeoutMs?: number): Promise<T> {
  const response = await fetch(`${endpoint}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(timeoutMs === undefined ? {} : { signal: AbortSignal.timeout(timeoutMs) }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`etcd ${path}: HTTP ${response.status} ${text.slice(0, 200)}`);
  // Streaming endpoints (keepalive) answer one JSON object per line; the first is enough.
  const first = text.split('\n')[0] ?? '';
  const value = JSON.parse(first) as T & { error?: unknown; result?: T };
  if (value.error !== undefined) throw new Error(`etcd ${path}: ${JSON.stringify(value.error)}`);
  return (value.result ?? value) as T;
}

export class EtcdCluster implements BenchCluster {
  readonly system = 'etcd';
  private readonly dir: string;
  private readonly members: EtcdMember[];
  private readonly children: (ChildProcess | null)[];
  private readonly initialCluster: string;

  private constructor(dir: string, members: EtcdMember[]) {
    this.dir = dir;
    this.members = members;
    this.children = members.map(() => null);
    this.initialCluster = members.map((member) => `${member.name}=${member.peerUrl}`).join(',');
  }

  static async start(): Promise<EtcdCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-bench-etcd-'));
    const members: EtcdMember[] = [];
    for (let i = 1; i <= 3; i++) {
      members.push({
        name: `e${i}`,
        clientUrl: `http://127.0.0.1:${await freePort()}`,
        peerUrl: `http://127.0.0.1:${await freePort()}`,
      });
    }
    const cluster = new EtcdCluster(dir, members);
    for (let i = 0; i < members.length; i++) cluster.spawnMember(i, 'new');
    await cluster.waitForLeader(30_000);
    return cluster;
  }

  get size(): number {
    return this.members.length;
  }

  get endpoints(): string[] {
    return this.members.map((member) => member.clientUrl);
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const member = this.members[i]!;
    const child = spawn(
      'etcd',
      [
        '--name',
        member.name,
        '--data-dir',
        join(this.dir, member.name),
        '--listen-client-urls',
        member.clientUrl,
        '--advertise-client-urls',
        member.clientUrl,
        '--listen-peer-urls',
        member.peerUrl,
        '--initial-advertise-peer-urls',
        member.peerUrl,
        '--initial-cluster',
        this.initialCluster,
        '--initial-cluster-state',
        state,
        '--initial-cluster-token',
        'raftlock-bench',
        '--logger',
        'zap',
        '--log-level',
        'error',
      ],
      {
        stdio: ['ignore', 'ignore', process.env.RAFTLOCK_BENCH_VERBOSE === undefined ? 'ignore' : 'inherit'],
      },
    );
    child.on('error', () => undefined);
    this.children[i] = child;
  }

  async leaderIndex(timeoutMs = 500): Promise<number> {
    const statuses = await Promise.all(
      this.members.map((member, i) =>
        this.children[i] === null
          ? null
          : call<{ header: { member_id: string }; leader: string }>(
              member.clientUrl,
              '/v3/maintenance/status',
              {},
              timeoutMs,
            ).catch(() => null),
      ),
    );
    return statuses.findIndex((status) => status !== null && status.leader === status.header.member_id);
  }

  async waitForLeader(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const leader = await this.leaderIndex();
      if (leader >= 0) return leader;
      if (Date.now() > deadline) throw new Error('etcd: no leader');
      await sleep(50);
    }
  }

  async serversLeaderFirst(): Promise<string[]> {
    const leader = await this.waitForLeader(30_000);
    const endpoints = this.endpoints;
    return [endpoints[leader]!, ...endpoints.filter((_, i) => i !== leader)];
  }

  pids(): number[] {
    return this.children.flatMap((child) => (child?.pid === undefined ? [] : [child.pid]));
  }

  kill9(i: number): void {
    this.children[i]?.kill('SIGKILL');
    this.children[i] = null;
  }

  restart(i: number): void {
    if (this.children[i] !== null) throw new Error(`etcd member ${i} is running`);
    this.spawnMember(i, 'existing');
  }

  async stop(): Promise<void> {
    for (const child of this.children) child?.kill('SIGKILL');
    this.children.fill(null);
    await sleep(100);
    rmSync(this.dir, { recursive: true, force: true });
  }

  target(servers: readonly string[]): BenchTarget {
    return new EtcdTarget(servers);
  }
}

/** Lease TTL of a bench session; kept alive every third of it. */
const leaseTtlSeconds = 10;

class EtcdTarget implements BenchTarget {
  readonly system = 'etcd';
  private readonly endpoints: readonly string[];

  constructor(endpoints: readonly string[]) {
    this.endpoints = endpoints;
  }

  async open(): Promise<BenchSession> {
    const session = new EtcdBenchSession(this.endpoints);
    await session.start();
    return session;
  }
}

/**
 * One etcd "session": a lease kept alive, locks taken with v3lock under it. A request that fails on
 * a connection error (the member died) is retried on the next endpoint: Lock with the same lease is
 * idempotent (the lock key is `name/lease`), and Unlock deletes that key.
 */
class EtcdBenchSession implements BenchSession {
  private readonly endpoints: readonly string[];
  private current = 0;
  private lease = '';
  private keepalive: NodeJS.Timeout | null = null;
  private readonly keys = new Map<string, string>();
  private closed = false;

  constructor(endpoints: readonly string[]) {
    this.endpoints = endpoints;
  }

  async start(): Promise<void> {
    const granted = await this.retry<{ ID: string }>('/v3/lease/grant', { TTL: leaseTtlSeconds });
    this.lease = granted.ID;
    this.keepalive = setInterval(
      () => {
        void this.retry('/v3/lease/keepalive', { ID: this.lease }, 2_000).catch(() => undefined);
      },
      (leaseTtlSeconds * 1000) / 3,
    );
  }

  private async retry<T>(path: string, body: unknown, timeoutMs?: number): Promise<T> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 200 && !this.closed; attempt++) {
      const endpoint = this.endpoints[this.current % this.endpoints.length]!;
      try {
        return await call<T>(endpoint, path, body, timeoutMs);
      } catch (error) {
        lastError = error;
        const message = String((error as Error)?.message ?? error);
        // A gRPC-level refusal from a live member (not a lost connection) is a real answer.
        if (message.startsWith('etcd ') && !/leader|unavailable|timed out|stopped/i.test(message))
          throw error;
        this.current++;
        await sleep(attempt < 3 ? 0 : 20);
      }
    }
    throw lastError;
  }

  async lock(name: string): Promise<void> {
    const result = await this.retry<{ key: string }>('/v3/lock/lock', { name: b64(name), lease: this.lease });
    this.keys.set(name, result.key);
  }

  async unlock(name: string): Promise<void> {
    const key = this.keys.get(name);
    if (key === undefined) throw new Error(`unlock ${name}: not held`);
    this.keys.delete(name);
    await this.retry('/v3/lock/unlock', { key });
  }

  async close(): Promise<void> {
    if (this.keepalive !== null) clearInterval(this.keepalive);
    this.keepalive = null;
    await this.retry('/v3/lease/revoke', { ID: this.lease }, 2_000).catch(() => undefined);
    this.closed = true;
  }
}
