// `raftlock backup` and `raftlock restore` with real processes: a backup taken from a live 3-node cluster
// at a linearizable point, restored into a fresh 3-node cluster whose lock table carries on from it
// (locks, owners, sequences, waiters), new grants above every old sequence (S8); only admins may take a
// backup (S12); damaged files and unusable directories are refused with nothing written (S13, C7).

import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type LockView, type Session } from 'raftlock';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeBackup } from '../../src/backup/backup-file.ts';
import { restoreDataDir } from '../../src/backup/restore.ts';
import { exitCodeFor } from '../../src/cli/exit-codes.ts';
import {
  AuthenticationFailedError,
  InvalidArgumentError,
  PermissionDeniedError,
  ProtocolError,
} from '../../src/errors.ts';
import { TestCluster, useTestCluster } from '../server/harness.ts';
import { runRaftlock as raftlock, raftlockBin } from './run-cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'raftlock-backup-'));
const usersFile = join(dir, 'users.json');
// Plaintext passwords keep the test fast (no scrypt); the node warns about them, which is fine here.
writeFileSync(
  usersFile,
  JSON.stringify({
    users: [
      { principal: 'ops', roles: ['admin'], password: 'ops-pw' },
      { principal: 'app', roles: ['client'], password: 'app-pw' },
    ],
  }),
);
const passwordFile = (name: string, password: string) => {
  const path = join(dir, `${name}.password`);
  writeFileSync(path, `${password}\n`);
  return path;
};
const opsPassword = passwordFile('ops', 'ops-pw');
const appPassword = passwordFile('app', 'app-pw');
const wrongPassword = passwordFile('wrong', 'not-the-password');

describe('raftlock backup and restore', () => {
  const sessions: Session[] = [];
  const source = useTestCluster(3, { extraArgs: ['--users', usersFile], sessions });
  let restored: TestCluster | null = null;
  const backupFile = join(dir, 'cluster.backup');

  afterAll(async () => {
    await restored?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const open = async (servers: readonly string[], reconnectionWindowMs?: number) => {
    const session = await connect({
      servers,
      principal: 'app',
      password: 'app-pw',
      ...(reconnectionWindowMs === undefined ? {} : { reconnectionWindowMs }),
    });
    sessions.push(session);
    return session;
  };
  const row = (locks: readonly LockView[], name: string) => locks.find((lock) => lock.name === name);

  it('S8: a restored cluster keeps the locks, owners, sequences and waiters of the backup, and grants larger sequences', async () => {
    const { cluster } = source;
    // The owner of bk/a may be gone for only 4 s: in the restored cluster it expires (no client ever
    // connects there) and bk/a passes to the waiter, whose window is long.
    const owner = await open(cluster.urls, 4_000);
    const waiter = await open(cluster.urls, 600_000);
    const a = await owner.lock('bk/a');
    const b = await owner.lock('bk/b');
    for (let i = 0; i < 3; i++) await (await owner.lock('bk/churn')).unlock();
    const pending = waiter.lock('bk/a');
    pending.catch(() => undefined);
    await cluster.waitFor(
      async () => row(await waiter.listLocks({ prefix: 'bk/' }), 'bk/a')?.waiters.length === 1,
      5_000,
      'the waiter to queue',
    );

    const run = await raftlock([
      'backup',
      '--out',
      backupFile,
      '--servers',
      cluster.urls.join(','),
      '--principal',
      'ops',
      '--password-file',
      opsPassword,
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/backup of cluster it at index \d+/);
    // Served by a follower (its ReadIndex asks the leader), so the encoding never stalls the leader.
    expect(run.stdout).not.toContain(`from ${await cluster.waitForLeader()} (`);
    // Taken after the backup: it must not be in the restored cluster.
    await owner.lock('bk/after-backup');

    const { header } = decodeBackup(readFileSync(backupFile));
    expect(header).toMatchObject({ clusterId: 'it', locks: 2, sessions: 2, lastSequence: 5 });
    expect(readdirSync(dir).filter((name) => name.includes('.partial-'))).toEqual([]);

    const skip = 1_000;
    restored = await TestCluster.create(3, ['--users', usersFile], {
      beforeStart: async (fresh) => {
        for (const node of fresh.nodes) {
          const result = await raftlock([
            'restore',
            '--from',
            backupFile,
            '--data-dir',
            join(fresh.dir, node.id),
            '--voters',
            fresh.nodes.map((other) => other.id).join(','),
            '--sequence-skip',
            String(skip),
          ]);
          expect(result.stderr).toBe('');
          expect(result.code).toBe(0);
          expect(result.stdout).toContain(`at index ${header.index}`);
        }
      },
    });
    await restored.waitForLeader(15_000);
    const status = await restored.status(await restored.waitForLeader());
    expect(status?.snapshotIndex).toBe(header.index);
    expect(status?.voters).toEqual(['n1', 'n2', 'n3']);

    // Not in `sessions`: it must close before the restored cluster goes away.
    const reader = await connect({ servers: restored.urls, principal: 'app', password: 'app-pw' });
    const locks = await reader.listLocks({ prefix: 'bk/' });
    expect(row(locks, 'bk/a')).toMatchObject({ owner: owner.sessionId, sequence: a.getSequence() });
    expect(row(locks, 'bk/a')?.waiters).toEqual([waiter.sessionId]);
    expect(row(locks, 'bk/b')).toMatchObject({ owner: owner.sessionId, sequence: b.getSequence() });
    expect(row(locks, 'bk/churn')).toBeUndefined();
    expect(row(locks, 'bk/after-backup')).toBeUndefined();

    // A new grant: above every sequence of the backup, and above the skip.
    const fresh = await reader.lock('bk/new');
    expect(fresh.getSequence()).toBeGreaterThan(header.lastSequence + skip);

    // The restored owner's session expires by the liveness rules (its 4 s window, after the new leader's
    // grace period) and bk/a passes to the waiter with a larger sequence still (S7, S8).
    let handedOver: LockView | undefined;
    await restored.waitFor(
      async () => {
        handedOver = row(await reader.listLocks({ prefix: 'bk/' }), 'bk/a');
        return handedOver?.owner === waiter.sessionId;
      },
      15_000,
      'bk/a to pass to the waiter',
    );
    expect(handedOver?.sequence).toBeGreaterThan(fresh.getSequence());
    expect(row(await reader.listLocks({ prefix: 'bk/' }), 'bk/b')).toBeUndefined();
    await reader.close();
  }, 90_000);

  it('S12: a principal without admin, or a wrong password, gets no backup and no file', async () => {
    const { cluster } = source;
    const out = join(dir, 'denied.backup');
    const base = ['backup', '--out', out, '--servers', cluster.urls.join(','), '--principal'];
    const denied = await raftlock([...base, 'app', '--password-file', appPassword]);
    expect(denied.stderr).toContain('PERMISSION_DENIED');
    expect(denied.code).toBe(exitCodeFor(new PermissionDeniedError('')));
    const wrong = await raftlock([...base, 'ops', '--password-file', wrongPassword]);
    expect(wrong.stderr).toContain('AUTHENTICATION_FAILED');
    expect(wrong.code).toBe(exitCodeFor(new AuthenticationFailedError('')));
    expect(readdirSync(dir).filter((name) => name.startsWith('denied'))).toEqual([]);
  }, 30_000);

  it('S13: a backup never overwrites a file', async () => {
    const run = await raftlock([
      'backup',
      '--out',
      backupFile,
      '--servers',
      source.cluster.urls.join(','),
      '--principal',
      'ops',
      '--password-file',
      opsPassword,
    ]);
    expect(run.code).toBe(exitCodeFor(new InvalidArgumentError('')));
    expect(run.stderr).toContain('exists');
  }, 30_000);

  it('C7: damaged, truncated or extended files are refused with PROTOCOL_ERROR and nothing is written', async () => {
    const good = readFileSync(backupFile);
    const headerEnd = good.indexOf('}') + 1;
    const variants: [string, Buffer][] = [
      ['a flipped header byte', flip(good, 20)],
      ['a flipped data byte', flip(good, good.byteLength - 3)],
      ['a truncated file', good.subarray(0, good.byteLength - 1)],
      ['a file cut inside its header', good.subarray(0, headerEnd - 5)],
      ['a file with bytes appended', Buffer.concat([good, Buffer.from([0])])],
      ['another file', Buffer.from('{"not":"a backup"}\n')],
    ];
    for (const [what, bytes] of variants) {
      const file = join(dir, 'bad.backup');
      writeFileSync(file, bytes);
      const target = join(dir, 'bad-target');
      const error = await restoreDataDir({ from: file, dataDir: target, voters: ['n1', 'n2', 'n3'] }).then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error, what).toMatchObject({ name: 'BackupFileError', code: 'PROTOCOL_ERROR' });
      expect(existsSync(target), what).toBe(false);
    }
    // The same through the CLI: the exit status carries the code.
    const run = await raftlock([
      'restore',
      '--from',
      join(dir, 'bad.backup'),
      '--data-dir',
      join(dir, 'bad-target'),
      '--voters',
      'n1,n2,n3',
    ]);
    expect(run.code).toBe(exitCodeFor(new ProtocolError('')));
    expect(existsSync(join(dir, 'bad-target'))).toBe(false);
  }, 30_000);

  it('S13: a non-empty data directory, a missing parent, bad voters or an unreadable file are refused; nothing changes', async () => {
    const used = join(dir, 'used');
    mkdirSync(used);
    writeFileSync(join(used, 'keep.txt'), 'mine');
    const attempt = (options: Partial<Parameters<typeof restoreDataDir>[0]>) =>
      restoreDataDir({ from: backupFile, dataDir: used, voters: ['n1', 'n2', 'n3'], ...options }).then(
        () => null,
        (caught: unknown) => caught as { code?: string; problem?: string },
      );
    expect(await attempt({})).toMatchObject({ code: 'INVALID_ARGUMENT', problem: 'notEmpty' });
    expect(readdirSync(used)).toEqual(['keep.txt']);
    expect(await attempt({ dataDir: join(dir, 'no-parent', 'n1') })).toMatchObject({ problem: 'access' });
    expect(existsSync(join(dir, 'no-parent'))).toBe(false);
    expect(await attempt({ dataDir: join(dir, 'v'), voters: ['n1', 'n2'] })).toMatchObject({
      problem: 'voters',
    });
    expect(await attempt({ dataDir: join(dir, 'v'), voters: ['n1', 'n1', 'n2'] })).toMatchObject({
      problem: 'voters',
    });
    expect(existsSync(join(dir, 'v'))).toBe(false);

    // Permissions: as root they are not enforced, so run the restore as `nobody` there.
    const locked = join(dir, 'locked.backup');
    writeFileSync(locked, readFileSync(backupFile));
    chmodSync(locked, 0o600);
    const target = join(dir, 'perm-target');
    const args = [raftlockBin, 'restore', '--from', locked, '--data-dir', target, '--voters', 'n1,n2,n3'];
    const asRoot = process.getuid?.() === 0;
    if (asRoot) chmodSync(dir, 0o755);
    else chmodSync(locked, 0);
    const run = asRoot
      ? spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, ...args], { encoding: 'utf8' })
      : spawnSync(process.execPath, args, { encoding: 'utf8' });
    // Without runuser (root elsewhere) this part cannot run; everywhere else it must pass.
    if (!(asRoot && run.error !== undefined)) {
      expect(run.stderr).toContain('cannot read backup');
      expect(run.status).toBe(exitCodeFor(new InvalidArgumentError('')));
      expect(existsSync(target)).toBe(false);
    }
  }, 30_000);
});

function flip(bytes: Buffer, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}
