// A cluster of real `raftlock start` processes whose peer links all run through LinkProxy, one proxy per
// directed pair: node i's own cluster file lists node j's peer address as the proxy i→j, so every byte
// between two nodes crosses a proxy the nemesis controls. Clients connect to the nodes directly.
// Each node gets a clock file (src/server/clock.ts) for injected wall-clock steps.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nodeCommand } from '../../src/cli/cluster-up.ts';
import { fetchStatus } from '../../src/cli/status.ts';
import type { NodeStatus } from '../../src/protocol.ts';
import { freePorts } from '../../test/server/harness.ts';
import { type LinkFaults, LinkProxy, noFaults } from './proxy.ts';

export interface ChaosNode {
  readonly id: string;
  readonly url: string;
  readonly peerPort: number;
  readonly file: string;
  readonly clockFile: string;
  process: ChildProcess | null;
  paused: boolean;
  clockOffsetMs: number;
  starts: number;
}

export interface ClusterTiming {
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  readonly connectionTimeoutMs: number;
  readonly snapshotEveryEntries: number;
  readonly snapshotKeepEntries: number;
}

export class ChaosCluster {
  readonly nodes: ChaosNode[] = [];
  /** Keyed `${dialer}>${target}`: the proxy the dialer uses to reach the target. */
  private readonly proxies = new Map<string, LinkProxy>();
  exits: { id: string; code: number | null; signal: string | null; expected: boolean }[] = [];

  private constructor(
    readonly dir: string,
    private readonly clockMode: 'monotonic' | 'wall',
  ) {}

  static async create(options: {
    readonly dir: string;
    readonly size: number;
    readonly timing: ClusterTiming;
    readonly random: () => number;
    readonly clockMode: 'monotonic' | 'wall';
  }): Promise<ChaosCluster> {
    const { dir, size } = options;
    mkdirSync(dir, { recursive: true });
    const cluster = new ChaosCluster(dir, options.clockMode);
    const ports = await freePorts(size * 2);
    const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    const peerPorts = ids.map((_, i) => ports[size + i]!);
    for (const [i, dialer] of ids.entries()) {
      for (const [j, target] of ids.entries()) {
        if (i === j) continue;
        const proxy = await LinkProxy.start({ targetPort: peerPorts[j]!, random: options.random });
        cluster.proxies.set(`${dialer}>${target}`, proxy);
      }
    }
    for (const [i, id] of ids.entries()) {
      const file = join(dir, `${id}.cluster.json`);
      const nodes = ids.map((other, j) => ({
        id: other,
        url: `ws://127.0.0.1:${ports[j]}`,
        peerUrl:
          other === id
            ? `ws://127.0.0.1:${peerPorts[j]}`
            : `ws://127.0.0.1:${cluster.proxies.get(`${id}>${other}`)!.port}`,
        dataDir: other,
      }));
      writeFileSync(
        file,
        JSON.stringify({
          clusterId: 'chaos',
          clusterSecret: 'chaos-secret-0123456789abcdef',
          timing: options.timing,
          nodes,
        }),
      );
      const clockFile = join(dir, `${id}.clock`);
      writeFileSync(clockFile, '0');
      cluster.nodes.push({
        id,
        url: `ws://127.0.0.1:${ports[i]}`,
        peerPort: peerPorts[i]!,
        file,
        clockFile,
        process: null,
        paused: false,
        clockOffsetMs: 0,
        starts: 0,
      });
    }
    for (const node of cluster.nodes) cluster.start(node.id);
    return cluster;
  }

  get urls(): string[] {
    return this.nodes.map((node) => node.url);
  }

  get ids(): string[] {
    return this.nodes.map((node) => node.id);
  }

  node(id: string): ChaosNode {
    const node = this.nodes.find((candidate) => candidate.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  start(id: string): void {
    const node = this.node(id);
    if (node.process !== null) return;
    const log = createWriteStream(join(this.dir, `${id}.log`), { flags: 'a' });
    // Every other node writes through libuv's pool, the rest on the event loop: both ways face the faults.
    const diskWrites = this.nodes.indexOf(node) % 2 === 1 ? 'pool' : 'inline';
    const args = ['--log-format', 'json', '--disk-writes', diskWrites];
    const child = spawn(process.execPath, nodeCommand(node.file, id, args), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RAFTLOCK_CLOCK_FILE: node.clockFile, RAFTLOCK_CLOCK: this.clockMode },
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    node.starts++;
    node.paused = false;
    const expected = { value: false };
    (child as ChildProcess & { expectedExit?: typeof expected }).expectedExit = expected;
    child.on('exit', (code, signal) => {
      this.exits.push({ id, code, signal, expected: expected.value });
      if (node.process === child) {
        node.process = null;
        node.paused = false;
      }
    });
    node.process = child;
  }

  /** Sends `signal` (SIGKILL: kill -9; SIGTERM: graceful) and waits for the process to be gone. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    const child = node.process;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    (child as ChildProcess & { expectedExit?: { value: boolean } }).expectedExit!.value = true;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (node.paused) child.kill('SIGCONT');
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  pause(id: string): void {
    const node = this.node(id);
    if (node.process === null || node.paused) return;
    node.process.kill('SIGSTOP');
    node.paused = true;
  }

  resume(id: string): void {
    const node = this.node(id);
    if (node.process === null || !node.paused) return;
    node.process.kill('SIGCONT');
    node.paused = false;
  }

  /** Steps node `id`'s wall clock by `deltaMs` (through its clock file and SIGUSR2). */
  jumpClock(id: string, deltaMs: number): void {
    const node = this.node(id);
    node.clockOffsetMs += deltaMs;
    writeFileSync(node.clockFile, String(node.clockOffsetMs));
    if (node.process !== null) node.process.kill('SIGUSR2');
  }

  /** The directed message link from → to: the connection `to` dialed to `from` (see proxy.ts). */
  private link(from: string, to: string): LinkProxy {
    return this.proxies.get(`${to}>${from}`)!;
  }

  setLink(from: string, to: string, faults: LinkFaults): void {
    this.link(from, to).faults = faults;
  }

  /** Blocks every directed link for which `cut(from, to)` is true; every other link is healed. */
  partition(cut: (from: string, to: string) => boolean): void {
    for (const from of this.ids)
      for (const to of this.ids) {
        if (from === to) continue;
        this.setLink(from, to, cut(from, to) ? { ...noFaults, blocked: true } : noFaults);
      }
  }

  /** Applies `faults` to every link. */
  degrade(faults: LinkFaults): void {
    for (const proxy of this.proxies.values()) proxy.faults = faults;
  }

  /** Heals the network: every link clean. Processes are not touched. */
  healNetwork(): void {
    for (const proxy of this.proxies.values()) proxy.faults = noFaults;
  }

  linkStats(): { passed: number; dropped: number; delayed: number; connections: number } {
    let passed = 0;
    let dropped = 0;
    let delayed = 0;
    let connections = 0;
    for (const proxy of this.proxies.values()) {
      passed += proxy.stats.framesPassed;
      dropped += proxy.stats.framesDropped;
      delayed += proxy.stats.framesDelayed;
      connections += proxy.stats.connections;
    }
    return { passed, dropped, delayed, connections };
  }

  async status(id: string, timeoutMs = 500): Promise<NodeStatus | null> {
    const node = this.node(id);
    if (node.process === null || node.paused) return null;
    try {
      return await fetchStatus(node.url, timeoutMs);
    } catch {
      return null;
    }
  }

  async statuses(): Promise<(NodeStatus | null)[]> {
    return Promise.all(this.ids.map((id) => this.status(id)));
  }

  /** The node that calls itself leader with the highest term, if any answers. */
  async leader(): Promise<string | null> {
    const statuses = await this.statuses();
    let best: NodeStatus | null = null;
    for (const status of statuses)
      if (status?.role === 'leader' && (best === null || status.term > best.term)) best = status;
    return best?.id ?? null;
  }

  async waitForLeader(timeoutMs: number): Promise<string | null> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const leader = await this.leader();
      if (leader !== null) return leader;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return null;
  }

  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((node) => this.kill(node.id)));
    await Promise.all([...this.proxies.values()].map((proxy) => proxy.close()));
  }
}
