// S12: principals, roles and scrypt password hashes; `raftlock user add` writes the users file.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addUser } from '../../src/cli/user.ts';
import {
  checkUsersFile,
  hashPassword,
  readUsersFile,
  UserDirectory,
  type UsersFile,
  verificationsMax,
  verificationsQueuedMax,
} from '../../src/security/users.ts';

const dir = mkdtempSync(join(tmpdir(), 'raftlock-users-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('users and passwords', () => {
  it('S12: scrypt hashes verify the right password only; unknown principals are refused', async () => {
    const hash = await hashPassword('s3cret');
    expect(hash).toMatch(/^scrypt\$16384\$8\$1\$[\w-]+\$[\w-]+$/);
    expect(hash).not.toContain('s3cret');
    const users = new UserDirectory({
      roles: { worker: { acquire_lock: ['jobs/*'], read_locks: ['jobs/*'] } },
      users: [{ principal: 'w', password: hash, roles: ['worker'] }],
    });
    expect(await users.authenticate('w', 's3cret')).toEqual({
      ok: true,
      grants: { acquire: ['jobs/*'], read: ['jobs/*'], admin: false },
    });
    expect(await users.authenticate('w', 's3cret')).toMatchObject({ ok: true }); // cached
    expect(await users.authenticate('w', 'wrong')).toEqual({ ok: false, reason: 'denied' });
    expect(await users.authenticate('nobody', 's3cret')).toEqual({ ok: false, reason: 'denied' });
  });

  it('S12: grants are the union of roles; built-in admin has everything; unknown roles are refused', () => {
    const users = new UserDirectory({
      roles: { a: { acquire_lock: ['x/*'] }, b: { acquire_lock: ['y/*'], read_locks: ['y/*'] } },
      users: [
        { principal: 'ab', password: 'p', roles: ['b', 'a'] },
        { principal: 'root', password: 'p', roles: ['admin'] },
        { principal: 'none', password: 'p' },
      ],
    });
    expect(users.grantsOf('ab')).toEqual({ acquire: ['x/*', 'y/*'], read: ['y/*'], admin: false });
    expect(users.grantsOf('root')).toEqual({ acquire: ['*'], read: ['*'], admin: true });
    expect(users.grantsOf('none')).toEqual({ acquire: [], read: [], admin: false });
    expect(users.plaintextPrincipals).toEqual(['ab', 'root', 'none']);
    expect(() =>
      checkUsersFile({ users: [{ principal: 'x', password: 'p', roles: ['ghost'] }] }, 'f'),
    ).toThrow(/unknown role/);
    expect(() => checkUsersFile({ users: [{ principal: 'x', password: 'scrypt$1$2' }] }, 'f')).toThrow(
      /scrypt/,
    );
    expect(() => checkUsersFile({ users: [{ principal: '', password: 'p' }] }, 'f')).toThrow(/principal/);
    expect(() => checkUsersFile({ users: 'x' }, 'f')).toThrow(/expected/);
  });

  it('S12: the default users keep the local cluster working: control/password with every permission', async () => {
    const users = UserDirectory.default();
    expect(await users.authenticate('control', 'password')).toEqual({
      ok: true,
      grants: { acquire: ['*'], read: ['*'], admin: true },
    });
  });

  it('C7: password checks run a bounded number at a time; a flood beyond the queue is refused as busy', async () => {
    const hash = await hashPassword('pw');
    const users = new UserDirectory({ users: [{ principal: 'u', password: hash, roles: [] }] });
    const attempts = Array.from({ length: verificationsMax + verificationsQueuedMax + 8 }, (_, i) =>
      users.authenticate('u', `wrong-${i}`),
    );
    const results = await Promise.all(attempts);
    expect(results.filter((r) => !r.ok && r.reason === 'busy')).toHaveLength(8);
    expect(results.filter((r) => !r.ok && r.reason === 'denied')).toHaveLength(
      verificationsMax + verificationsQueuedMax,
    );
    expect(await users.authenticate('u', 'pw')).toMatchObject({ ok: true });
  }, 120_000);

  it('S12: `raftlock user add` writes a hashed entry with its roles, and replaces an existing one', async () => {
    const file = join(dir, 'users.json');
    await addUser({ file, principal: 'ops', password: 'first', roles: ['admin'] });
    await addUser({ file, principal: 'job', password: 'second', roles: ['client'] });
    await addUser({ file, principal: 'ops', password: 'third', roles: ['reader'] });
    const text = readFileSync(file, 'utf8');
    expect(text).not.toMatch(/first|second|third/);
    const parsed: UsersFile = readUsersFile(file);
    expect(parsed.users.map((u) => [u.principal, u.roles])).toEqual([
      ['job', ['client']],
      ['ops', ['reader']],
    ]);
    const users = new UserDirectory(parsed);
    expect(await users.authenticate('ops', 'third')).toMatchObject({ ok: true, grants: { admin: false } });
    expect(await users.authenticate('ops', 'first')).toMatchObject({ ok: false });
    await expect(addUser({ file, principal: 'x', password: 'p', roles: ['ghost'] })).rejects.toThrow(
      /unknown role/,
    );
  }, 60_000);
});
