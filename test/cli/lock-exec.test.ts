// `raftlock lock NAME -- CMD` and `raftlock locks` against a real 3-node cluster: the command runs only
// while the lock is held, learns its fencing token, and is told to stop before anyone else can hold it.

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type LockView, type Session } from 'raftlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodeFor, exitLockLost } from '../../src/cli/exit-codes.ts';
import { InvalidArgumentError, TimeoutError } from '../../src/errors.ts';
import { TcpProxy } from '../client/proxy.ts';
import { TestCluster } from '../server/harness.ts';
import { runRaftlock } from './run-cli.ts';

const credentials = { principal: 'control', password: 'password' } as const;

const raftlock = (args: readonly string[], onStdout?: (text: string) => void) =>
  runRaftlock(args, onStdout === undefined ? {} : { onStdout });

/** A `node -e` program as a command after `--`. */
const node = (program: string) => ['--', process.execPath, '-e', program];

describe('raftlock lock and raftlock locks', () => {
  let cluster: TestCluster;
  let observer: Session;
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-lock-exec-'));
  const proxies: TcpProxy[] = [];
  const servers = () => ['--servers', cluster.urls.join(',')];
  const row = async (name: string): Promise<LockView | undefined> =>
    (await observer.listLocks({ prefix: name })).find((lock) => lock.name === name);

  beforeAll(async () => {
    cluster = await TestCluster.create(3);
    await cluster.waitForLeader(15_000);
    observer = await connect({ servers: cluster.urls, ...credentials });
  });

  afterAll(async () => {
    await observer?.close().catch(() => undefined);
    await Promise.all(proxies.map((proxy) => proxy.stop().catch(() => undefined)));
    await cluster?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('S8: the command sees RAFTLOCK_LOCK and RAFTLOCK_SEQUENCE, its exit status is passed on, and the lock is released after', async () => {
    const run = await raftlock([
      'lock',
      'exec-env',
      ...servers(),
      ...node(
        'process.stdout.write(process.env.RAFTLOCK_LOCK + " " + process.env.RAFTLOCK_SEQUENCE); process.exit(7)',
      ),
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(7);
    const [name, sequence] = run.stdout.split(' ');
    expect(name).toBe('exec-env');
    expect(Number(sequence)).toBeGreaterThan(0);
    expect(await row('exec-env')).toBeUndefined();
  });

  it('S1, S8: two commands on one lock never run at once, and the second sees a greater sequence', async () => {
    const log = join(dir, 'mutex.log');
    const program = `
      const fs = require('node:fs');
      fs.appendFileSync(${JSON.stringify(log)}, 'start ' + process.env.RAFTLOCK_SEQUENCE + '\\n');
      setTimeout(() => fs.appendFileSync(${JSON.stringify(log)}, 'end ' + process.env.RAFTLOCK_SEQUENCE + '\\n'), 400);`;
    const runs = await Promise.all(
      [0, 1].map(() => raftlock(['lock', 'exec-mutex', ...servers(), ...node(program)])),
    );
    expect(runs.map((run) => run.code)).toEqual([0, 0]);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(4);
    const [s1, e1, s2, e2] = lines.map((line) => line.split(' '));
    expect([s1![0], e1![0], s2![0], e2![0]]).toEqual(['start', 'end', 'start', 'end']);
    expect(s1![1]).toBe(e1![1]);
    expect(s2![1]).toBe(e2![1]);
    expect(Number(s2![1])).toBeGreaterThan(Number(s1![1]));
  });

  it('S10: when ownership ends, the command gets SIGTERM before anyone else holds the lock, and raftlock exits 3', async () => {
    const proxy = await TcpProxy.start(cluster.node(await cluster.waitForLeader()).url);
    proxies.push(proxy);
    const marker = join(dir, 'terminated');
    const program = `
      process.on('SIGTERM', () => { require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'term'); process.exit(0); });
      process.stdout.write('running\\n');
      setInterval(() => {}, 1000);`;
    let running: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      running = resolve;
    });
    const run = raftlock(
      ['lock', 'exec-lost', '--scope', 'connection', '--servers', proxy.url, ...node(program)],
      (stdout) => {
        if (stdout.includes('running')) running();
      },
    );
    await started; // the command runs and has its SIGTERM handler
    const held = (await row('exec-lost'))!;
    const next = observer.lock('exec-lost'); // waits behind the command's session
    await proxy.stop(); // the command's only way to the cluster is gone
    const nextLock = await next;
    const grantedAtMs = Date.now();
    const result = await run;
    // raftlock does not wait out the reconnection window of a session it cannot reach.
    expect(Date.now() - grantedAtMs).toBeLessThan(10_000);
    expect(result.code).toBe(exitLockLost);
    expect(result.stderr).toContain('ownership of exec-lost ended');
    expect(readFileSync(marker, 'utf8')).toBe('term');
    expect(statSync(marker).mtimeMs).toBeLessThan(grantedAtMs);
    expect(nextLock.getSequence()).toBeGreaterThan(held.sequence);
    await nextLock.unlock();
  });

  it('S14: --timeout gives up waiting with TIMEOUT as the exit status; the command never runs', async () => {
    const holder = await observer.lock('exec-busy');
    const marker = join(dir, 'never');
    const run = await raftlock([
      'lock',
      'exec-busy',
      '--timeout',
      '300',
      ...servers(),
      ...node(`require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran')`),
    ]);
    expect(run.code).toBe(exitCodeFor(new TimeoutError('x')));
    expect(run.stderr).toContain('TIMEOUT');
    expect(() => statSync(marker)).toThrow();
    expect((await row('exec-busy'))?.waiters).toEqual([]);
    await holder.unlock();
  });

  it('S15: raftlock locks lists owners, sequences, scopes and waiters', async () => {
    const held = await observer.lock('listed-a');
    const run = await raftlock(['locks', '--prefix', 'listed-', '--json', ...servers()]);
    expect(run.code).toBe(0);
    const rows = JSON.parse(run.stdout) as LockView[];
    expect(rows).toEqual([
      {
        name: 'listed-a',
        owner: observer.sessionId,
        sequence: held.getSequence(),
        scope: 'UNLOCK_ON_SESSION_LOSS',
        waiters: [],
      },
    ]);
    const table = await raftlock(['locks', '--prefix', 'listed-', ...servers()]);
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME\s+OWNER\s+SEQUENCE\s+SCOPE\s+WAITERS$/);
    expect(table.stdout).toContain(`listed-a  ${observer.sessionId}`);
    await held.unlock();
  });

  it('bad input gets a usage error and exit status INVALID_ARGUMENT', async () => {
    for (const args of [
      ['lock', 'x'],
      ['lock', '--', 'true'],
      ['lock', 'x', '--scope', 'forever', '--', 'true'],
    ]) {
      const run = await raftlock([...args, ...servers()]);
      expect(run.code, args.join(' ')).toBe(exitCodeFor(new InvalidArgumentError('x')));
      expect(run.stderr).toContain('INVALID_ARGUMENT');
    }
  });
});
