// `raftlock cluster up`: a local cluster on loopback, one process per node. Writes <data-dir>/cluster.json
// (reused on the next run, so the cluster comes back with its data), prints the client URLs and the
// status pages, and stops every node cleanly on Ctrl-C.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '../errors.ts';
import { createCertificateAuthority, issueCertificate } from '../security/certs.ts';
import { readUsersFile } from '../security/users.ts';
import type { ClusterFile } from '../server/config.ts';
import { fetchStatus, httpUrl } from './status.ts';

export const clusterUsage = `raftlock cluster up [--nodes 3|5|7] [--base-port 7401] [--data-dir ./data] [--log-format json|text]
                  [--users FILE] [--tls]
  --users: users file (raftlock user add); default user control/password.
  --tls: make a local CA and node certificates under <data-dir>/tls; clients use wss:// and trust tls/ca.pem.
  client ports: base port upwards; peer ports: base port + 100 upwards.
  Node options after "--" are passed to every \`raftlock start\` (e.g. -- --snapshot-every 100).`;

const mainPath = fileURLToPath(new URL('./main.ts', import.meta.url));
const tsLoader = fileURLToPath(new URL('../../bin/ts-loader.js', import.meta.url));

interface ClusterNode {
  readonly id: string;
  pid: number | null;
  readonly url: string;
  readonly peerUrl: string;
  readonly dataDir: string;
}

export function planCluster(
  count: number,
  basePort: number,
  previous: ClusterFile | null,
  security: { readonly usersFile?: string | undefined; readonly tls?: boolean } = {},
): ClusterFile {
  const tls = security.tls ?? previous?.tls !== undefined;
  const scheme = tls ? 'wss' : 'ws';
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < count; i++) {
    const id = `n${i + 1}`;
    nodes.push({
      id,
      pid: null,
      url: `${scheme}://127.0.0.1:${basePort + i}`,
      peerUrl: `${scheme}://127.0.0.1:${basePort + 100 + i}`,
      dataDir: id,
    });
  }
  const usersFile = security.usersFile ?? previous?.usersFile;
  return {
    clusterId: previous?.clusterId ?? `local-${randomBytes(4).toString('hex')}`,
    clusterSecret: previous?.clusterSecret ?? randomBytes(32).toString('base64url'),
    ...(previous?.users === undefined ? {} : { users: previous.users }),
    ...(previous?.roles === undefined ? {} : { roles: previous.roles }),
    ...(usersFile === undefined ? {} : { usersFile }),
    ...(tls ? { tls: { ca: 'tls/ca.pem', dir: 'tls' } } : {}),
    nodes,
  };
}

/** Writes a CA and one certificate per node under `<dataDir>/tls` (kept when already there). */
export function ensureDevCertificates(dataDir: string, ids: readonly string[]): void {
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCert = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca-key.pem');
  const ca = existsSync(caCert)
    ? { certPem: readFileSync(caCert, 'utf8'), keyPem: readFileSync(caKey, 'utf8') }
    : createCertificateAuthority(`raftlock dev CA ${randomBytes(3).toString('hex')}`);
  writeFileSync(caCert, ca.certPem);
  writeFileSync(caKey, ca.keyPem, { mode: 0o600 });
  for (const id of ids) {
    if (existsSync(join(dir, `${id}.pem`))) continue;
    const issued = issueCertificate(ca, {
      commonName: id,
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
    });
    writeFileSync(join(dir, `${id}.pem`), issued.certPem);
    writeFileSync(join(dir, `${id}-key.pem`), issued.keyPem, { mode: 0o600 });
  }
}

/** The command line that runs one node of a cluster file (used by cluster up and the tests). */
export function nodeCommand(clusterFile: string, id: string, extra: readonly string[]): string[] {
  return ['--import', tsLoader, mainPath, 'start', '--config', clusterFile, '--node', id, ...extra];
}

export async function runClusterUp(argv: readonly string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const passThrough = dash < 0 ? [] : argv.slice(dash + 1);
  const { values } = parseArgs({
    args: [...own],
    options: {
      nodes: { type: 'string', default: '3' },
      'base-port': { type: 'string', default: '7401' },
      'data-dir': { type: 'string', default: './data' },
      'log-format': { type: 'string', default: 'text' },
      users: { type: 'string' },
      tls: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${clusterUsage}\n`);
    return 0;
  }
  const count = Number(values.nodes);
  if (![1, 3, 5, 7].includes(count)) throw new InvalidArgumentError('--nodes must be 1, 3, 5 or 7');
  const basePort = Number(values['base-port']);
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + 100 + count > 65_535)
    throw new InvalidArgumentError('--base-port out of range');
  const dataDir = resolve(values['data-dir']);
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'cluster.json');
  let previous: ClusterFile | null = null;
  if (existsSync(file)) {
    const old = JSON.parse(readFileSync(file, 'utf8')) as ClusterFile;
    if (old.nodes.length === count) previous = old;
    else
      throw new InvalidArgumentError(
        `${file} describes ${old.nodes.length} nodes; remove it or use --nodes ${old.nodes.length}`,
      );
  }
  if (values.users !== undefined) readUsersFile(values.users); // fail now, not in every node
  const plan = planCluster(count, basePort, previous, {
    usersFile: values.users === undefined ? undefined : resolve(values.users),
    tls: values.tls === true ? true : undefined,
  });
  if (plan.tls !== undefined)
    ensureDevCertificates(
      dataDir,
      plan.nodes.map((node) => node.id),
    );
  const caPem = plan.tls === undefined ? undefined : readFileSync(join(dataDir, plan.tls.ca), 'utf8');
  const nodes = plan.nodes as ClusterNode[];
  const write = () =>
    writeFileSync(file, `${JSON.stringify({ ...plan, nodes }, null, 2)}\n`, { mode: 0o600 });
  write();

  const children = new Map<string, ChildProcess>();
  let stopping = false;
  for (const node of nodes) {
    const child = spawn(
      process.execPath,
      nodeCommand(file, node.id, ['--log-format', values['log-format'], ...passThrough]),
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.set(node.id, child);
    node.pid = child.pid ?? null;
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on('line', (line) => process.stdout.write(`[${node.id}] ${line}\n`));
    }
    child.on('exit', (code, signal) => {
      node.pid = null;
      children.delete(node.id);
      if (!stopping) process.stdout.write(`[${node.id}] exited (code ${code}, signal ${signal})\n`);
      write();
    });
  }
  write();

  const leader = await waitForLeader(
    nodes.map((node) => node.url),
    20_000,
    caPem,
  );
  process.stdout.write(
    [
      '',
      `raftlock: local cluster of ${count} node${count === 1 ? '' : 's'} up (config ${file})`,
      ...nodes.map((node) => `  ${node.id}  ${node.url}   status ${httpUrl(node.url)}/status`),
      `  leader: ${leader ?? 'not elected yet'}`,
      `  dashboard: ${httpUrl(nodes[0]!.url)}/   (an admin user's credentials)   metrics: /metrics`,
      plan.usersFile === undefined
        ? `  user: control / password     Ctrl-C stops the cluster`
        : `  users: ${plan.usersFile}     Ctrl-C stops the cluster`,
      ...(plan.tls === undefined ? [] : [`  TLS: clients trust ${join(dataDir, plan.tls.ca)} (option ca)`]),
      '',
    ].join('\n'),
  );

  await new Promise<void>((resolveStop) => {
    const onSignal = () => {
      if (stopping) return;
      stopping = true;
      process.stdout.write('raftlock: stopping the cluster…\n');
      const waits = [...children.values()].map(
        (child) =>
          new Promise<void>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done();
            const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
            child.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            child.kill('SIGTERM');
          }),
      );
      Promise.all(waits).then(() => resolveStop());
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  write();
  process.stdout.write('raftlock: cluster stopped\n');
  return 0;
}

async function waitForLeader(
  urls: readonly string[],
  timeoutMs: number,
  ca?: string,
): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const statuses = await Promise.all(urls.map((url) => fetchStatus(url, 500, ca).catch(() => null)));
    const leader = statuses.find((status) => status?.role === 'leader');
    if (leader !== undefined && leader !== null) return leader.id;
    await new Promise((done) => setTimeout(done, 200));
  }
  return null;
}
