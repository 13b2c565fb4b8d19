// `raftlock user add` and `raftlock cluster up --tls --users FILE`: a local cluster that serves wss://
// with a CA it generated, lets in only the users of the file, and checks their roles (S12, C7).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AuthenticationFailedError,
  connect,
  PermissionDeniedError,
  RaftlockError,
} from '../../src/client/index.ts';
import { freePorts } from '../server/harness.ts';

const bin = join(import.meta.dirname, '../../bin/raftlock.js');

describe('raftlock cluster up --tls --users', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-secure-up-'));
  let child: ChildProcess | null = null;

  afterAll(async () => {
    if (child !== null && child.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGINT');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('S12, C7: serves wss:// with its own CA to the users of the file, with their roles', async () => {
    const users = join(dir, 'users.json');
    const add = (name: string, role: string, password: string) =>
      spawnSync(
        process.execPath,
        [bin, 'user', 'add', name, '--role', role, '--password-stdin', '--file', users],
        {
          input: `${password}\n`,
          encoding: 'utf8',
        },
      );
    expect(add('alice', 'client', 'alice-pw').status).toBe(0);
    expect(add('rita', 'reader', 'rita-pw').status).toBe(0);
    expect(readFileSync(users, 'utf8')).not.toContain('alice-pw'); // stored as a scrypt hash

    const [probe] = await freePorts(1);
    const base = 20_000 + ((probe ?? 0) % 20_000);
    const data = join(dir, 'data');
    child = spawn(
      process.execPath,
      [bin, 'cluster', 'up', '--base-port', String(base), '--data-dir', data, '--tls', '--users', users],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const deadline = Date.now() + 30_000;
    while (!output.includes('leader: n') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(output).toContain(`wss://127.0.0.1:${base}`);
    const servers = [0, 1, 2].map((k) => `wss://127.0.0.1:${base + k}`);
    const ca = readFileSync(join(data, 'tls', 'ca.pem'), 'utf8');

    const alice = await connect({ servers, principal: 'alice', password: 'alice-pw', ca });
    const lock = await alice.lock('secure-a');
    expect(lock.isOwned()).toBe(true);
    const rita = await connect({ servers, principal: 'rita', password: 'rita-pw', ca });
    expect((await rita.listLocks({ prefix: 'secure-' })).map((row) => row.name)).toEqual(['secure-a']);
    await expect(rita.lock('secure-b')).rejects.toBeInstanceOf(PermissionDeniedError);
    expect(await lock.unlock()).toBe(true);
    await Promise.all([alice.close(), rita.close()]);

    const failure = (promise: Promise<unknown>) =>
      promise.then(
        () => null,
        (error: unknown) => error,
      );
    // The default user is not in the file; a client that does not trust the CA never gets to log in.
    expect(
      await failure(connect({ servers, principal: 'control', password: 'password', ca })),
    ).toBeInstanceOf(AuthenticationFailedError);
    const untrusting = await failure(
      connect({ servers, principal: 'alice', password: 'alice-pw', connectDeadlineMs: 1_500 }),
    );
    expect(untrusting).toBeInstanceOf(RaftlockError);
    expect((untrusting as RaftlockError).code).toBe('UNAVAILABLE');
  }, 90_000);
});
