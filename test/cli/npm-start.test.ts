// `npm start` brings up a local 3-node cluster that elects a leader, and Ctrl-C stops every node.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fetchStatus } from '../../src/cli/status.ts';
import type { ClusterFile } from '../../src/server/config.ts';
import { freePorts } from '../server/harness.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-npm-start-'));
  let groupPid = 0;

  afterAll(() => {
    if (groupPid > 0 && alive(groupPid)) process.kill(-groupPid, 'SIGKILL');
    const file = join(dir, 'cluster.json');
    if (existsSync(file)) {
      for (const node of (JSON.parse(readFileSync(file, 'utf8')) as ClusterFile).nodes) {
        if (typeof node.pid === 'number' && alive(node.pid)) process.kill(node.pid, 'SIGKILL');
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs `raftlock cluster up`: 3 nodes elect a leader, cluster.json lists them, Ctrl-C stops them all', async () => {
    // Client ports base..base+2 and peer ports base+100..: a base below Linux's ephemeral range (32768–60999),
    // where the OS hands out the other tests' ports and every outgoing connection's own port.
    const [probe] = await freePorts(1);
    const base = 10_000 + ((probe ?? 0) % 20_000);
    const child = spawn('npm', ['start', '--', '--base-port', String(base), '--data-dir', dir], {
      cwd: join(import.meta.dirname, '..', '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    groupPid = child.pid ?? 0;
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

    const deadline = Date.now() + 30_000;
    while (!output.includes('leader: n') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(output).toContain(`ws://127.0.0.1:${base}`);
    expect(output).toContain(`http://127.0.0.1:${base}/status`);
    const cluster = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as ClusterFile;
    expect(cluster.nodes.map((node) => node.id)).toEqual(['n1', 'n2', 'n3']);
    expect(cluster.nodes[1]?.url).toBe(`ws://127.0.0.1:${base + 1}`);
    const statuses = await Promise.all(cluster.nodes.map((node) => fetchStatus(node.url, 1_000)));
    expect(statuses.filter((status) => status.role === 'leader')).toHaveLength(1);
    const pids = cluster.nodes.map((node) => node.pid as number);
    for (const pid of pids) expect(alive(pid)).toBe(true);

    process.kill(-groupPid, 'SIGINT');
    await exited;
    const stopDeadline = Date.now() + 10_000;
    while (pids.some(alive) && Date.now() < stopDeadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    expect(pids.filter(alive)).toEqual([]);
    expect(output).toContain('cluster stopped');
  });
});
