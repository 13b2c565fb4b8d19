// Real-process clusters for integration tests: one `raftlock start` child per node, on free loopback
// ports, with a temporary data directory. Every child is killed in `destroy()` (call it in afterAll), or
// let `useTestCluster` start one before a file's tests and destroy it after them.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { nodeCommand } from '../../src/cli/cluster-up.ts';
import { fetchStatus } from '../../src/cli/status.ts';
import type { NodeStatus } from '../../src/protocol.ts';

export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((resolve) => {
          const server = createServer();
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as { port: number }).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

export interface TestNode {
  readonly id: string;
  readonly url: string;
  process: ChildProcess | null;
}

export class TestCluster {
  readonly dir: string;
  readonly file: string;
  readonly nodes: TestNode[];

  private constructor(
    dir: string,
    nodes: TestNode[],
    private readonly extraArgs: readonly string[],
  ) {
    this.dir = dir;
    this.file = join(dir, 'cluster.json');
    this.nodes = nodes;
  }

  /** `beforeStart` runs once cluster.json is written, before any node starts (e.g. to seed data dirs). */
  static async create(
    size: number,
    extraArgs: readonly string[] = [],
    options: { beforeStart?: (cluster: TestCluster) => Promise<void> } = {},
  ): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'raftlock-it-'));
    const ports = await freePorts(size * 2);
    const nodes = Array.from({ length: size }, (_, i) => ({
      id: `n${i + 1}`,
      url: `ws://127.0.0.1:${ports[i]}`,
      peerUrl: `ws://127.0.0.1:${ports[size + i]}`,
      dataDir: `n${i + 1}`,
    }));
    writeFileSync(
      join(dir, 'cluster.json'),
      JSON.stringify({ clusterId: 'it', clusterSecret: 'integration-test-secret-0123456789', nodes }),
    );
    const cluster = new TestCluster(
      dir,
      nodes.map((node) => ({ id: node.id, url: node.url, process: null })),
      extraArgs,
    );
    await options.beforeStart?.(cluster);
    for (const node of cluster.nodes) cluster.start(node.id);
    return cluster;
  }

  get urls(): string[] {
    return this.nodes.map((node) => node.url);
  }

  node(id: string): TestNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  start(id: string): void {
    const node = this.node(id);
    if (node.process !== null) throw new Error(`${id} is running`);
    const log = createWriteStream(join(this.dir, `${id}.log`), { flags: 'a' });
    const child = spawn(
      process.execPath,
      nodeCommand(this.file, id, ['--log-format', 'json', ...this.extraArgs]),
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    child.on('exit', () => {
      if (node.process === child) node.process = null;
    });
    node.process = child;
  }

  /** Kills a node's process and waits until it is gone. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    const child = node.process;
    if (child === null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
    node.process = null;
  }

  async status(id: string): Promise<NodeStatus | null> {
    try {
      return await fetchStatus(this.node(id).url, 500);
    } catch {
      return null;
    }
  }

  /** Waits until a running node reports itself leader and every running node agrees; returns its id. */
  async waitForLeader(timeoutMs = 10_000, except: string | null = null): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const running = this.nodes.filter((node) => node.process !== null && node.id !== except);
      const statuses = await Promise.all(running.map((node) => this.status(node.id)));
      const leader = statuses.find((status) => status?.role === 'leader');
      if (leader !== undefined && leader !== null) return leader.id;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`no leader within ${timeoutMs} ms`);
  }

  async waitFor(predicate: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await predicate()) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((node) => this.kill(node.id)));
    if (process.env.KEEP_TEST_DATA === undefined) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One cluster for the test file that calls this (in its `describe`): created with a leader elected before
 * the tests, destroyed after them, once every session in `sessions` is closed.
 */
export function useTestCluster(
  size = 3,
  options: { extraArgs?: readonly string[]; sessions?: readonly { close(): Promise<void> }[] } = {},
): { readonly cluster: TestCluster } {
  let cluster: TestCluster | null = null;
  beforeAll(async () => {
    cluster = await TestCluster.create(size, options.extraArgs);
    await cluster.waitForLeader(15_000);
  });
  afterAll(async () => {
    for (const session of options.sessions ?? []) await session.close().catch(() => undefined);
    await cluster?.destroy();
  });
  return {
    get cluster(): TestCluster {
      if (cluster === null) throw new Error('useTestCluster: the cluster exists only inside tests');
      return cluster;
    },
  };
}
