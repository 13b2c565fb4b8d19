// Sizing figures for docs/operations.md: memory per session and per held lock, backup (= snapshot) bytes,
// disk. Starts a local 3-node cluster (fsync on), loads it in steps, and after each step reads every
// node's RSS (/proc) and heap (`/metrics`), takes a backup through `GET /backup` and measures the data
// directories. Run: `npx tsx scripts/sizing.ts [--sessions 50000] [--locks-per-session 10]`.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeBackup } from '../src/backup/backup-file.ts';
import { takeBackup } from '../src/cli/backup.ts';
import { httpUrl } from '../src/cli/status.ts';
import { decode, encode, openConnection } from '../src/client/connection.ts';
import { RaftlockCluster, sleep } from './bench-cluster.ts';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '50000' },
    'locks-per-session': { type: 'string', default: '10' },
  },
});
const sessionCount = Number(values.sessions);
const locksPerSession = Number(values['locks-per-session']);

const cluster = await RaftlockCluster.start({ fsync: true });
const work = mkdtempSync(join(tmpdir(), 'raftlock-sizing-'));
let nextSession = 0;

async function load(count: number, locks: number): Promise<void> {
  const url = (await cluster.serversLeaderFirst())[0]!;
  let next = 0;
  const one = async (): Promise<void> => {
    const s = nextSession++;
    const { ws } = await openConnection(
      url,
      { principal: 'control', password: 'password', reconnectionWindowMs: 3_600_000 },
      30_000,
    );
    if (locks > 0)
      await new Promise<void>((resolve, reject) => {
        let answered = 0;
        ws.on('message', (data) => {
          const frame = decode(data);
          if (frame.t !== 'res') return;
          if (!frame.ok) reject(new Error(`${frame.error.code} ${frame.error.message}`));
          else if (++answered === locks) resolve();
        });
        // Under load the node may close a silent connection (no pings: the 2 s connection-loss bound)
        // before the answers arrive; the locks still apply, and the step reads the counts from /status.
        ws.on('close', () => resolve());
        for (let k = 0; k < locks; k++)
          ws.send(
            encode({
              t: 'req',
              id: k + 1,
              op: 'lock',
              requestNo: k + 1,
              // 24-byte names, a typical "service/resource-id" size.
              name: `sz/job-${String(s).padStart(7, '0')}-${String(k).padStart(4, '0')}`,
              scope: 'UNLOCK_ON_SESSION_LOSS',
            }),
          );
      });
    // The session keeps its locks for its (1 h) reconnection window: no client stays connected.
    ws.terminate();
  };
  await Promise.all(
    Array.from({ length: 128 }, async () => {
      while (next < count) {
        next++;
        await one();
      }
    }),
  );
}

function dirBytes(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
}

async function metric(i: number, name: string): Promise<number> {
  const text = await (await fetch(`${httpUrl(cluster.urls[i]!)}/metrics`)).text();
  const line = text.split('\n').find((row) => row.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.split(' ')[1]);
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const rows: string[][] = [];

async function measure(label: string): Promise<{ rss: number[]; backup: number }> {
  await sleep(3_000);
  const leader = await cluster.waitForLeader(10_000);
  const status = await cluster.status(leader, 5_000);
  const file = join(work, `${label.replace(/\W+/g, '-')}.backup`);
  const startMs = performance.now();
  await takeBackup(file, { servers: cluster.urls, principal: 'control', password: 'password' });
  const backupMs = performance.now() - startMs;
  const { header } = decodeBackup(readFileSync(file));
  const rss = [0, 1, 2].map((i) => cluster.rssBytes(i));
  const heap = await Promise.all([0, 1, 2].map((i) => metric(i, 'nodejs_heap_size_used_bytes')));
  const written = await metric(leader, 'raftlock_storage_bytes_written');
  const disk = [1, 2, 3].map((n) => dirBytes(join(cluster.dir, `n${n}`)));
  rows.push([
    label,
    String(status?.sessions),
    String(status?.locks),
    String(status?.commitIndex),
    `${mb(rss[leader]!)} / ${mb(Math.max(...rss.filter((_, i) => i !== leader)))}`,
    `${mb(heap[leader]!)}`,
    `${mb(statSync(file).size)} (${Math.round(backupMs)} ms)`,
    mb(Math.max(...disk)),
    mb(written),
  ]);
  console.log(rows.at(-1)!.join(' | '), `lastSequence ${header.lastSequence}`);
  return { rss, backup: statSync(file).size };
}

try {
  console.log(
    'label | sessions | locks | commit | RSS leader / max follower | heap leader | backup | data dir max | leader bytes written',
  );
  await measure('empty');
  await load(sessionCount, 0);
  await measure(`${sessionCount} sessions, no locks`);
  await load(sessionCount, locksPerSession);
  await measure(`+${sessionCount} sessions × ${locksPerSession} locks`);
  console.log();
  console.log(
    '| step | sessions | locks | commit index | RSS leader / follower | heap used (leader) | backup file (download) | largest data dir | bytes written by the leader |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
} finally {
  await cluster.stop(5_000);
  rmSync(work, { recursive: true, force: true });
}
