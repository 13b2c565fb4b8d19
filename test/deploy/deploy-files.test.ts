// The deployment files under deploy/ hold command lines that docs/operations.md shows: these tests read
// them as systemd and Kubernetes would (specifiers, environment, $(VAR) expansion), parse the result with
// `raftlock start`'s own parser, and run the systemd unit's exact flags as a 3-node cluster on loopback —
// so neither the files nor the docs can drift from what `raftlock start` accepts (C1, C5).

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'raftlock';
import { afterAll, describe, expect, it } from 'vitest';
import { parseStartArgs } from '../../src/cli/start.ts';
import { fetchStatus } from '../../src/cli/status.ts';
import { createCertificateAuthority, issueCertificate } from '../../src/security/certs.ts';
import { freePorts } from '../server/harness.ts';

const root = join(import.meta.dirname, '../..');
const bin = join(root, 'bin/raftlock.js');
const unit = readFileSync(join(root, 'deploy/systemd/raftlock@.service'), 'utf8');
const envExample = readFileSync(join(root, 'deploy/systemd/raftlock.env.example'), 'utf8');
const manifest = readFileSync(join(root, 'deploy/kubernetes/raftlock.yaml'), 'utf8');

/** KEY=VALUE lines, as systemd's EnvironmentFile= reads them (no quoting used in ours). */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const at = trimmed.indexOf('=');
    env[trimmed.slice(0, at)] = trimmed.slice(at + 1);
  }
  return env;
}

/** A [Service] setting; continuation lines joined. */
function unitSetting(text: string, key: string): string | undefined {
  const joined = text.replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .find((line) => line.startsWith(`${key}=`))
    ?.slice(key.length + 1)
    .trim();
}

/** ExecStart= as systemd expands it: `%i` is the instance, `${VAR}` one word from the environment. */
function execStart(instance: string, env: Record<string, string>): string[] {
  const line = unitSetting(unit, 'ExecStart');
  if (line === undefined) throw new Error('no ExecStart');
  return line
    .split(/\s+/)
    .filter((word) => word !== '')
    .map((word) => {
      const expanded = word.replace(/%i/g, instance).replace(/\$\{(\w+)\}/g, (_, name: string) => {
        const value = env[name];
        if (value === undefined) throw new Error(`ExecStart uses \${${name}}, which the env file lacks`);
        return value;
      });
      if (expanded.includes('$') || expanded.includes('%')) throw new Error(`unexpanded word ${word}`);
      return expanded;
    });
}

/** The container's args of the StatefulSet, with Kubernetes' $(VAR) expansion. */
function containerArgs(env: Record<string, string>): string[] {
  const lines = manifest.split('\n');
  const start = lines.findIndex((line) => /^\s+args:\s*$/.test(line));
  expect(start).toBeGreaterThan(0);
  const args: string[] = [];
  for (const line of lines.slice(start + 1)) {
    const match = /^\s+- ("(?:[^"\\]|\\.)*")\s*$/.exec(line);
    if (match === null) break;
    args.push(JSON.parse(match[1]!) as string);
  }
  return args.map((arg) =>
    arg.replace(/\$\((\w+)\)/g, (_, name: string) => {
      const value = env[name];
      if (value === undefined) throw new Error(`args use $(${name}), which is not set`);
      return value;
    }),
  );
}

/** The files the deployments point at, under `dir` instead of /etc/raftlock and /var/lib/raftlock. */
function fakeFilesystem(dir: string, nodeIds: readonly string[]): (args: string[]) => string[] {
  mkdirSync(join(dir, 'etc/tls'), { recursive: true });
  writeFileSync(
    join(dir, 'etc/users.json'),
    JSON.stringify({ users: [{ principal: 'ops', roles: ['admin'], password: 'ops-pw' }] }),
  );
  const ca = createCertificateAuthority('raftlock test CA');
  writeFileSync(join(dir, 'etc/tls/ca.pem'), ca.certPem);
  for (const id of nodeIds) {
    const cert = issueCertificate(ca, {
      commonName: id,
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    });
    writeFileSync(join(dir, `etc/tls/${id}.pem`), cert.certPem);
    writeFileSync(join(dir, `etc/tls/${id}-key.pem`), cert.keyPem);
  }
  return (args) =>
    args.map((arg) =>
      arg.replace(/^\/etc\/raftlock\//, `${dir}/etc/`).replace(/^\/var\/lib\/raftlock\//, `${dir}/var/`),
    );
}

describe('deploy/ files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-deploy-'));
  const children: ChildProcess[] = [];

  afterAll(async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it('C1: the systemd unit starts raftlock with flags `raftlock start` accepts, the secret from the environment', () => {
    const env = parseEnvFile(envExample);
    const remap = fakeFilesystem(join(dir, 'parse'), ['n1', 'n2', 'n3']);
    const argv = execStart('n2', env);
    expect(argv[0]).toMatch(/\/raftlock$/);
    expect(argv[1]).toBe('start');
    expect(argv).not.toContain('--cluster-secret');
    const saved = process.env.RAFTLOCK_CLUSTER_SECRET;
    process.env.RAFTLOCK_CLUSTER_SECRET = env.RAFTLOCK_CLUSTER_SECRET;
    try {
      const parsed = parseStartArgs(remap(argv.slice(2)));
      expect(parsed).not.toBeNull();
      const { config } = parsed!;
      expect(config.id).toBe('n2');
      expect(config.clusterId).toBe(env.RAFTLOCK_CLUSTER_ID);
      expect(config.members.map((member) => member.id).sort()).toEqual(['n1', 'n2', 'n3']);
      expect(config.members.find((member) => member.id === 'n3')?.peer).toEqual({
        host: 'raftlock-3.example.internal',
        port: 7501,
      });
      // Its own entry of the shared list is where the others reach it.
      expect(config.members.find((member) => member.id === 'n2')?.peer).toEqual({
        host: 'raftlock-2.example.internal',
        port: 7501,
      });
      expect(config.members.find((member) => member.id === 'n2')?.url).toBe(
        'wss://raftlock-2.example.internal:7401',
      );
      expect(config.tls).toBeDefined();
      expect(config.sync).toBe(true);
      expect(config.dataDir).toBe(join(dir, 'parse/var/n2'));
    } finally {
      if (saved === undefined) delete process.env.RAFTLOCK_CLUSTER_SECRET;
      else process.env.RAFTLOCK_CLUSTER_SECRET = saved;
    }
    expect(unitSetting(unit, 'KillSignal')).toBe('SIGTERM');
    expect(unitSetting(unit, 'Restart')).toBe('on-failure');
    expect(Number(unitSetting(unit, 'TimeoutStopSec'))).toBeGreaterThanOrEqual(10);
  });

  it('C1, C5: the StatefulSet args parse, every pod with the same member list', () => {
    expect(manifest).toMatch(/name: RAFTLOCK_CLUSTER_SECRET\n\s+valueFrom: \{ secretKeyRef:/);
    expect(manifest).toMatch(/podManagementPolicy: Parallel/);
    expect(manifest).toMatch(/publishNotReadyAddresses: true/);
    expect(manifest).toMatch(/path: \/healthz/);
    const pods = ['raftlock-0', 'raftlock-1', 'raftlock-2'];
    const remap = fakeFilesystem(join(dir, 'k8s'), pods);
    const saved = process.env.RAFTLOCK_CLUSTER_SECRET;
    process.env.RAFTLOCK_CLUSTER_SECRET = 'a-secret-of-at-least-sixteen-bytes';
    try {
      for (const pod of pods) {
        const args = containerArgs({ POD_NAME: pod, POD_NAMESPACE: 'locks' });
        expect(args[0]).toBe('start');
        const parsed = parseStartArgs(remap(args.slice(1)));
        const config = parsed!.config;
        expect(config.id).toBe(pod);
        expect(config.members.map((member) => member.id).sort()).toEqual(pods);
        const other = pods.find((id) => id !== pod)!;
        expect(config.members.find((member) => member.id === other)?.peer.host).toBe(
          `${other}.raftlock.locks.svc`,
        );
        expect(config.members.find((member) => member.id === pod)?.peer.host).toBe(
          `${pod}.raftlock.locks.svc`,
        );
        expect(config.members.find((member) => member.id === pod)?.url).toBe(
          `wss://${pod}.raftlock.locks.svc:7401`,
        );
        expect(config.dataDir).toBe(join(dir, 'k8s/var/data'));
        expect(config.tls).toBeDefined();
      }
    } finally {
      if (saved === undefined) delete process.env.RAFTLOCK_CLUSTER_SECRET;
      else process.env.RAFTLOCK_CLUSTER_SECRET = saved;
    }
  });

  it('C1: three nodes run with exactly the unit’s flags on loopback, serve a lock over TLS, and SIGTERM hands leadership over', async () => {
    const ids = ['n1', 'n2', 'n3'];
    const base = join(dir, 'run');
    const remap = fakeFilesystem(base, ids);
    const ports = await freePorts(6);
    const client = (i: number) => `127.0.0.1:${ports[i]}`;
    const peer = (i: number) => `127.0.0.1:${ports[3 + i]}`;
    const env: Record<string, string> = {
      ...parseEnvFile(envExample),
      RAFTLOCK_PEERS: ids.map((id, i) => `${id}=${peer(i)}`).join(','),
      RAFTLOCK_CLIENT_URLS: ids.map((id, i) => `${id}=wss://${client(i)}`).join(','),
    };
    const urls = ids.map((_, i) => `wss://${client(i)}`);
    const ca = readFileSync(join(base, 'etc/tls/ca.pem'), 'utf8');
    const nodes = ids.map((id, i) => {
      const argv = remap(execStart(id, env)).map((arg) =>
        arg === '0.0.0.0:7401' ? client(i) : arg === '0.0.0.0:7501' ? peer(i) : arg,
      );
      const log = join(base, `${id}.log`);
      const child = spawn(process.execPath, [bin, ...argv.slice(1)], {
        env: { ...process.env, RAFTLOCK_CLUSTER_SECRET: env.RAFTLOCK_CLUSTER_SECRET },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out = createWriteStream(log);
      child.stdout?.pipe(out);
      child.stderr?.pipe(out);
      children.push(child);
      return { id, url: urls[i]!, child, log };
    });
    const leaderOf = async (candidates: typeof nodes): Promise<string | null> => {
      const statuses = await Promise.all(
        candidates.map((node) => fetchStatus(node.url, 1_000, ca).catch(() => null)),
      );
      return statuses.find((status) => status?.role === 'leader')?.id ?? null;
    };
    const waitForLeader = async (candidates: typeof nodes): Promise<string> => {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        const leader = await leaderOf(candidates);
        if (leader !== null) return leader;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error('no leader');
    };
    const leader = await waitForLeader(nodes);

    const session = await connect({ servers: urls, principal: 'ops', password: 'ops-pw', ca });
    try {
      const first = await session.lock('deploy/check');
      expect(first.isOwned()).toBe(true);
      expect(await first.unlock()).toBe(true);

      const stopping = nodes.find((node) => node.id === leader)!;
      const exited = new Promise<number | null>((resolve) => stopping.child.once('exit', resolve));
      const stoppedAt = Date.now();
      stopping.child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const rest = nodes.filter((node) => node !== stopping);
      const next = await waitForLeader(rest);
      expect(next).not.toBe(leader);
      // Handed over, not elected after a timeout: well within one election timeout plus the shutdown.
      expect(Date.now() - stoppedAt).toBeLessThan(5_000);
      expect(readFileSync(stopping.log, 'utf8')).toMatch(/"event":"leadership_handed_over","ok":true/);
      const second = await session.lock('deploy/check');
      expect(second.getSequence()).toBeGreaterThan(first.getSequence());
    } finally {
      await session.close().catch(() => undefined);
    }
  }, 60_000);
});
