// Every example in examples/ runs as its own process, the way a user runs it, against a real 3-node
// cluster, with the server URLs on its command line.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { useTestCluster } from '../server/harness.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

function runExample(
  file: string,
  servers: readonly string[],
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `examples/${file}`, ...servers], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on('exit', (code) => resolve({ code, output }));
  });
}

function sequenceIn(output: string, pattern: RegExp): number {
  const match = pattern.exec(output);
  if (match === null) throw new Error(`no ${pattern} in:\n${output}`);
  return Number(match[1]);
}

describe('examples/', () => {
  const suite = useTestCluster(3);

  it('S3, S7, S8: two-sessions — session 2 waits for lockA and gets it after session 1 releases, with a greater sequence', async () => {
    const { code, output } = await runExample('two-sessions.ts', suite.cluster.urls);
    expect(code, output).toBe(0);
    const lines = output.trim().split('\n');
    // Session 2 is granted only once session 1 asked to release (its grant notice may reach session 2
    // before session 1 hears the answer to its unlock, so the two lines after that can come either way).
    const requested2 = lines.indexOf('Requesting lock 2...');
    const releasing1 = lines.indexOf('Requesting lock 1 release...');
    const acquired2 = lines.findIndex((line) => line.startsWith('Lock 2 has been acquired'));
    expect(requested2).toBeGreaterThan(-1);
    expect(releasing1).toBeGreaterThan(requested2);
    expect(acquired2).toBeGreaterThan(releasing1);
    expect(output).toContain('Lock 1 has been released (was owned: true).');
    expect(output).toContain('Lock 2 has been released (was owned: true).');
    expect(output).toContain('Sessions 1 and 2 have been closed.');
    const sequence1 = sequenceIn(output, /Lock 1 has been acquired \(sequence (\d+)\)/);
    const sequence2 = sequenceIn(output, /Lock 2 has been acquired \(sequence (\d+)\)/);
    expect(sequence2).toBeGreaterThan(sequence1);
  });

  it('S8: fenced-resource — the store rejects the late write that carries the older sequence', async () => {
    const { code, output } = await runExample('fenced-resource.ts', suite.cluster.urls);
    expect(code, output).toBe(0);
    const tokenA = sequenceIn(output, /A holds the lock with token (\d+)/);
    const tokenB = sequenceIn(output, /B holds the lock with token (\d+)/);
    expect(tokenB).toBeGreaterThan(tokenA);
    expect(output).toContain('its lock is owned: false');
    expect(output).toContain(`A's late write was rejected: token ${tokenA} is older than ${tokenB}`);
    expect(output).toContain('the store holds: written by B');
  });

  it('S2, S7: housekeeping-election — one worker at a time runs the task; each successor has a greater sequence', async () => {
    const { code, output } = await runExample('housekeeping-election.ts', suite.cluster.urls);
    expect(code, output).toBe(0);
    expect(output).toContain('3 terms, 0 overlaps, sequences increasing: true');
    // The rounds of one term are never interleaved with another worker's.
    const workers = [...output.matchAll(/worker (\d+): housekeeping round/g)].map((match) => match[1]);
    expect(workers).toHaveLength(6);
    for (let i = 0; i < workers.length; i += 2) expect(workers[i]).toBe(workers[i + 1]);
    expect(new Set(workers).size).toBe(3);
  });

  it('every example runs from the command line through `raftlock`, the package entry', async () => {
    const { code, output } = await runExample('run-all.ts', suite.cluster.urls);
    expect(code, output).toBe(0);
    expect(output).toContain('--- housekeeping-election');
  });
});
