// Membership tests with real processes: nodes that join a TestCluster with `raftlock start --join`, the
// `raftlock` CLI, and a lock workload whose history the checks at the end judge.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Session } from 'raftlock';
import { expect } from 'vitest';
import { nodeCommand } from '../../src/cli/cluster-up.ts';
import { type Run, runRaftlock } from '../cli/run-cli.ts';
import { freePorts, type TestCluster, type TestNode } from './harness.ts';

export const clusterSecret = 'integration-test-secret-0123456789';
export const admin = { principal: 'control', password: 'password' } as const;
export const worker = { principal: 'worker', password: 'worker-password' } as const;

/** A users file with an admin (`control`) and a user without `admin` (`worker`), plaintext. */
export function writeUsersFile(dir: string): string {
  const file = join(dir, 'users.json');
  writeFileSync(
    file,
    JSON.stringify({
      users: [
        { principal: admin.principal, password: admin.password, roles: ['admin'] },
        { principal: worker.principal, password: worker.password, roles: ['client'] },
      ],
    }),
  );
  return file;
}

/** Runs the `raftlock` CLI with the admin's password in its environment. */
export function raftlock(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return runRaftlock(args, {
    env: { RAFTLOCK_PRINCIPAL: admin.principal, RAFTLOCK_PASSWORD: admin.password, ...env },
  });
}

export interface Joiner {
  readonly node: TestNode;
  readonly peerAddress: string;
  readonly dataDir: string;
  /** Starts (or restarts) the process with the same command line. */
  start(): void;
}

/**
 * A node that joins `cluster` by `raftlock start --join`, registered in `cluster.nodes` so that its
 * status, kill and destroy work like the others'.
 */
export async function joiner(
  cluster: TestCluster,
  id: string,
  usersFile: string,
  extraArgs: readonly string[] = [],
): Promise<Joiner> {
  const [clientPort, peerPort] = await freePorts(2);
  const url = `ws://127.0.0.1:${clientPort}`;
  const peerAddress = `127.0.0.1:${peerPort}`;
  const dataDir = join(cluster.dir, id);
  const node: TestNode = { id, url, process: null };
  cluster.nodes.push(node);
  const args = [
    ...nodeCommand(cluster.file, id, []).slice(0, 3),
    'start',
    '--id',
    id,
    '--listen',
    `127.0.0.1:${clientPort}`,
    '--peer-listen',
    peerAddress,
    '--join',
    cluster.nodes
      .filter((other) => other.id !== id)
      .map((other) => other.url)
      .join(','),
    '--data-dir',
    dataDir,
    '--cluster-id',
    'it',
    '--users',
    usersFile,
    '--log-format',
    'json',
    ...extraArgs,
  ];
  const start = () => {
    if (node.process !== null) throw new Error(`${id} is running`);
    const log = createWriteStream(join(cluster.dir, `${id}.log`), { flags: 'a' });
    const child: ChildProcess = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        RAFTLOCK_CLUSTER_SECRET: clusterSecret,
        RAFTLOCK_PRINCIPAL: admin.principal,
        RAFTLOCK_PASSWORD: admin.password,
      },
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    child.on('exit', () => {
      if (node.process === child) node.process = null;
    });
    node.process = child;
  };
  return { node, peerAddress, dataDir, start };
}

/** Waits until the running `members` view of the leader shows exactly these voters and learners. */
export async function waitForMembers(
  cluster: TestCluster,
  voters: readonly string[],
  timeoutMs: number,
): Promise<void> {
  const want = [...voters].sort().join(',');
  let last = '';
  await cluster
    .waitFor(
      async () => {
        for (const node of cluster.nodes) {
          if (node.process === null) continue;
          const status = await cluster.status(node.id);
          if (status?.role !== 'leader') continue;
          last = [...status.voters].sort().join(',');
          return last === want;
        }
        return false;
      },
      timeoutMs,
      `voters ${want}`,
    )
    .catch((error: unknown) => {
      throw new Error(`${(error as Error).message} (last seen: ${last})`);
    });
}

/** Waits until every running node has applied the same index as the leader's commit. */
export async function waitForConvergence(cluster: TestCluster, timeoutMs: number): Promise<number> {
  let applied = -1;
  let seen = '';
  await cluster
    .waitFor(
      async () => {
        const running = cluster.nodes.filter((node) => node.process !== null);
        const statuses = await Promise.all(running.map((node) => cluster.status(node.id)));
        seen = statuses
          .map((status, i) => `${running[i]!.id}:${status?.appliedIndex}/${status?.commitIndex}`)
          .join(' ');
        if (statuses.some((status) => status === null)) return false;
        const indexes = new Set(statuses.map((status) => status!.appliedIndex));
        const commits = new Set(statuses.map((status) => status!.commitIndex));
        applied = statuses[0]!.appliedIndex;
        return indexes.size === 1 && commits.size === 1 && applied === statuses[0]!.commitIndex;
      },
      timeoutMs,
      'replicas to converge',
    )
    .catch((error: unknown) => {
      throw new Error(`${(error as Error).message}: ${seen}`);
    });
  return applied;
}

/** One acknowledged grant: when the client heard it, and when it sent the unlock (Infinity: still held). */
export interface Grant {
  readonly name: string;
  readonly sequence: number;
  readonly worker: number;
  readonly grantedAtMs: number;
  unlockSentAtMs: number;
}

/**
 * Sessions that lock → hold briefly → unlock names from a small set, until stopped, recording every
 * acknowledged grant. Errors on the way (a reconnect, a leader change) are counted, not fatal: the
 * checks judge the history.
 */
export class LockWorkload {
  readonly grants: Grant[] = [];
  errors = 0;
  private running = true;
  private readonly sessions: Session[] = [];
  private readonly loops: Promise<void>[] = [];

  static async start(
    urls: readonly string[],
    workers: number,
    names: readonly string[],
  ): Promise<LockWorkload> {
    const workload = new LockWorkload();
    for (let i = 0; i < workers; i++) {
      const session = await connect({ servers: [...urls], ...worker, reconnectionWindowMs: 60_000 });
      workload.sessions.push(session);
      workload.loops.push(workload.loop(session, i, names));
    }
    return workload;
  }

  private async loop(session: Session, index: number, names: readonly string[]): Promise<void> {
    let k = index;
    while (this.running && !session.isClosed) {
      const name = names[k++ % names.length]!;
      try {
        const lock = await session.lock(name, undefined, { timeoutMs: 10_000 });
        const grant: Grant = {
          name,
          sequence: lock.getSequence(),
          worker: index,
          grantedAtMs: performance.now(),
          unlockSentAtMs: Number.POSITIVE_INFINITY,
        };
        this.grants.push(grant);
        await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
        grant.unlockSentAtMs = performance.now();
        await lock.unlock();
      } catch {
        this.errors++;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /** Stops the loops (every lock released) and closes the sessions. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    for (const session of this.sessions) await session.close().catch(() => undefined);
  }

  grantCount(): number {
    return this.grants.length;
  }
}

/**
 * The history's anomalies: per lock, acknowledged sequences strictly increasing and never repeated;
 * a grant acknowledged only after the previous owner sent its unlock (never two owners at once).
 */
export function historyAnomalies(grants: readonly Grant[]): string[] {
  const anomalies: string[] = [];
  const byName = new Map<string, Grant[]>();
  for (const grant of grants) {
    const list = byName.get(grant.name) ?? [];
    byName.set(grant.name, list);
    list.push(grant);
  }
  for (const [name, list] of byName) {
    list.sort((a, b) => a.sequence - b.sequence);
    for (let i = 1; i < list.length; i++) {
      const previous = list[i - 1]!;
      const grant = list[i]!;
      if (grant.sequence === previous.sequence)
        anomalies.push(`${name}: sequence ${grant.sequence} acknowledged twice`);
      else if (grant.grantedAtMs < previous.unlockSentAtMs)
        anomalies.push(
          `${name}: worker ${grant.worker} got ${grant.sequence} while worker ${previous.worker} still held ${previous.sequence}`,
        );
    }
  }
  return anomalies;
}

/**
 * The end of a membership test: no anomaly in the history, every acknowledged grant survives (a lock taken
 * now gets a sequence above every acknowledged one of its name), and the replicas converge.
 */
export async function expectHistorySound(
  cluster: TestCluster,
  servers: readonly string[],
  workload: LockWorkload,
  names: readonly string[],
): Promise<void> {
  await workload.stop();
  expect(historyAnomalies(workload.grants)).toEqual([]);
  const session = await connect({ servers: [...servers], ...admin });
  try {
    for (const name of names) {
      const acknowledged = Math.max(...workload.grants.filter((g) => g.name === name).map((g) => g.sequence));
      const lock = await session.lock(name, undefined, { timeoutMs: 10_000 });
      expect(lock.getSequence()).toBeGreaterThan(acknowledged);
      await lock.unlock();
    }
  } finally {
    await session.close();
  }
  await waitForConvergence(cluster, 10_000);
}
