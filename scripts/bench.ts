// First load generator: N sessions, each looping lock → unlock on its own name, against a local 3-node
// cluster (started here, fsync on, unless --servers points at a running one). Prints cycles/s and
// p50/p99 latency of one lock+unlock cycle.
//
//   npm run bench -- --sessions 1,32 --seconds 5 [--servers ws://…,…] [--no-fsync]

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { nodeCommand } from '../src/cli/cluster-up.ts';
import { fetchStatus } from '../src/cli/status.ts';
import { connect, type Session } from '../src/client/index.ts';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '1,32' },
    seconds: { type: 'string', default: '5' },
    servers: { type: 'string' },
    'no-fsync': { type: 'boolean' },
  },
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function startCluster(): Promise<{ urls: string[]; stop: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-bench-'));
  const nodes = [];
  for (let i = 1; i <= 3; i++) {
    nodes.push({
      id: `n${i}`,
      url: `ws://127.0.0.1:${await freePort()}`,
      peerUrl: `ws://127.0.0.1:${await freePort()}`,
      dataDir: `n${i}`,
    });
  }
  const file = join(dir, 'cluster.json');
  writeFileSync(file, JSON.stringify({ clusterSecret: 'bench-secret-0123456789abcdef', nodes }));
  const extra = ['--log-level', 'warn', ...(values['no-fsync'] ? ['--no-fsync'] : [])];
  const children: ChildProcess[] = nodes.map((node) =>
    spawn(process.execPath, nodeCommand(file, node.id, extra), { stdio: ['ignore', 'ignore', 'inherit'] }),
  );
  const urls = nodes.map((node) => node.url);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const statuses = await Promise.all(urls.map((url) => fetchStatus(url, 500).catch(() => null)));
    if (statuses.some((status) => status?.role === 'leader')) break;
    if (Date.now() > deadline) throw new Error('no leader');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    urls,
    stop: () => {
      for (const child of children) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function run(urls: readonly string[], sessionCount: number, seconds: number): Promise<void> {
  const sessions: Session[] = await Promise.all(
    Array.from({ length: sessionCount }, () =>
      connect({ servers: urls, principal: 'control', password: 'password' }),
    ),
  );
  const latencies: number[] = [];
  const endAt = performance.now() + seconds * 1000;
  await Promise.all(
    sessions.map(async (session, i) => {
      const name = `bench-${sessionCount}-${i}`;
      while (performance.now() < endAt) {
        const start = performance.now();
        const lock = await session.lock(name);
        await lock.unlock();
        latencies.push(performance.now() - start);
      }
    }),
  );
  await Promise.all(sessions.map((session) => session.close()));
  latencies.sort((a, b) => a - b);
  const rate = latencies.length / seconds;
  console.log(
    `sessions=${String(sessionCount).padStart(3)}  cycles/s=${rate.toFixed(0).padStart(6)}  ` +
      `p50=${percentile(latencies, 50).toFixed(2)} ms  p99=${percentile(latencies, 99).toFixed(2)} ms  ` +
      `cycles=${latencies.length}`,
  );
}

const cluster = values.servers === undefined ? await startCluster() : null;
const urls = cluster?.urls ?? values.servers!.split(',');
try {
  console.log(
    `raftlock bench: 3-node cluster on loopback, fsync ${values['no-fsync'] ? 'off' : 'on'}, ` +
      `${values.seconds}s per run; one cycle = lock + unlock (2 commits)`,
  );
  for (const count of values.sessions.split(',').map(Number)) await run(urls, count, Number(values.seconds));
} finally {
  cluster?.stop();
}
process.exit(0);
