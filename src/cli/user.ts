// `raftlock user add NAME --role ROLE`: adds (or replaces) a user in a users file, storing the password
// as an scrypt hash. The file is what `raftlock start --users FILE` and `raftlock cluster up --users FILE`
// read (docs/security.md).

import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '../errors.ts';
import {
  builtInRoles,
  hashPassword,
  readUsersFile,
  type UsersFile,
  writeUsersFile,
} from '../security/users.ts';

export const userUsage = `raftlock user add NAME --role ROLE [--role ROLE…] [--password-stdin | --password PASSWORD] [--file users.json]
  built-in roles: ${Object.keys(builtInRoles).join(', ')}; others are defined under "roles" in the file.
  The password is stored as an scrypt hash; --password-stdin reads it from the first line of stdin.`;

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(Buffer.from(chunk as Buffer));
    if (Buffer.concat(chunks).includes(0x0a)) break;
  }
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

/** Adds or replaces `principal` in `file` (created if missing) with a hashed password and `roles`. */
export async function addUser(options: {
  readonly file: string;
  readonly principal: string;
  readonly password: string;
  readonly roles: readonly string[];
}): Promise<UsersFile> {
  const current: UsersFile = existsSync(options.file) ? readUsersFile(options.file) : { users: [] };
  if (options.password.length === 0) throw new InvalidArgumentError('the password must not be empty');
  const entry = {
    principal: options.principal,
    roles: [...options.roles],
    password: await hashPassword(options.password),
  };
  const users = current.users.filter((user) => user.principal !== options.principal);
  const next: UsersFile = { ...current, users: [...users, entry] };
  writeUsersFile(options.file, next); // checks roles and names before writing
  return next;
}

export async function runUser(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'add') {
    process.stderr.write(`${userUsage}\n`);
    return 1;
  }
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      role: { type: 'string', multiple: true },
      password: { type: 'string' },
      'password-stdin': { type: 'boolean' },
      file: { type: 'string', default: 'users.json' },
    },
    allowPositionals: true,
    strict: true,
  });
  const principal = positionals[0];
  if (principal === undefined || positionals.length !== 1)
    throw new InvalidArgumentError('give exactly one user NAME');
  const roles = values.role ?? [];
  if (roles.length === 0) throw new InvalidArgumentError('give at least one --role');
  if ((values.password === undefined) === (values['password-stdin'] !== true))
    throw new InvalidArgumentError('give one of --password-stdin or --password');
  const password = values.password ?? (await readStdinLine());
  await addUser({ file: values.file, principal, password, roles });
  process.stdout.write(`raftlock: user ${principal} (${roles.join(', ')}) written to ${values.file}\n`);
  return 0;
}
