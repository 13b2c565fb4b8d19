// Principals, roles and passwords: the users file every node reads (`--users FILE`), and the check of a
// client's hello against it. Passwords are stored as scrypt hashes (node:crypto); verifying one runs on
// libuv's thread pool, never on the event loop, and at most `verificationsMax` run at once.
//
//   {
//     "roles": { "worker": { "acquire_lock": ["jobs/*"], "read_locks": ["jobs/*"], "admin": false } },
//     "users": [ { "principal": "control", "roles": ["admin"], "password": "scrypt$16384$8$1$<salt>$<hash>" } ]
//   }
//
// Built-in roles: `admin` (everything), `client` (acquire and read every name), `reader` (read every
// name). A user's grants are the union of its roles'; a user without roles may log in and do nothing.
// A password that does not start with `scrypt$` is a plaintext password (accepted, warned about).

import { createHash, randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { InvalidArgumentError } from '../errors.ts';
import { principalBytesMax } from '../limits.ts';
import { allGrants, type Grants, grantsProblem } from '../locks/permissions.ts';

export interface RoleDefinition {
  readonly acquire_lock?: readonly string[];
  readonly read_locks?: readonly string[];
  readonly admin?: boolean;
}

export interface UserEntry {
  readonly principal: string;
  /** `scrypt$N$r$p$salt$hash` (base64url), or plaintext. */
  readonly password: string;
  readonly roles?: readonly string[];
}

export interface UsersFile {
  readonly roles?: Readonly<Record<string, RoleDefinition>>;
  readonly users: readonly UserEntry[];
}

export const builtInRoles: Readonly<Record<string, RoleDefinition>> = Object.freeze({
  admin: { acquire_lock: ['*'], read_locks: ['*'], admin: true },
  client: { acquire_lock: ['*'], read_locks: ['*'], admin: false },
  reader: { acquire_lock: [], read_locks: ['*'], admin: false },
});

/** scrypt cost: N = 2^14, r = 8 (16 MiB, ~50 ms on one core). */
export const scryptParams = { N: 16_384, r: 8, p: 1 } as const;
const saltBytes = 16;
const hashBytes = 32;
/** Users one file may hold. */
export const usersMax = 10_000;
/** Password hashes being verified at once over the node; more hellos wait their turn or are refused. */
export const verificationsMax = 4;
/** Hellos waiting for a verification slot; beyond, the node answers UNAVAILABLE. */
export const verificationsQueuedMax = 64;

function scryptAsync(
  password: string,
  salt: Buffer,
  keylen: number,
  options: ScryptOptions,
): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, keylen, { ...options, maxmem: 64 * 1024 * 1024 }, (error, key) =>
      error === null ? resolve(key) : reject(error),
    ),
  );
}

/** A new `scrypt$N$r$p$salt$hash` string for `password`. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(saltBytes);
  const { N, r, p } = scryptParams;
  const hash = await scryptAsync(password, salt, hashBytes, { N, r, p });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

interface ScryptHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

function parseHash(text: string, where: string): ScryptHash {
  const parts = text.split('$');
  const [, n, r, p, salt, hash] = parts;
  const N = Number(n);
  const R = Number(r);
  const P = Number(p);
  if (
    parts.length !== 6 ||
    !Number.isSafeInteger(N) ||
    N < 2 ||
    N > 1 << 20 ||
    (N & (N - 1)) !== 0 ||
    !Number.isSafeInteger(R) ||
    R < 1 ||
    R > 32 ||
    !Number.isSafeInteger(P) ||
    P < 1 ||
    P > 16 ||
    salt === undefined ||
    hash === undefined
  )
    throw new InvalidArgumentError(`${where}: malformed scrypt hash`);
  const saltBytes = Buffer.from(salt, 'base64url');
  const hashBytes = Buffer.from(hash, 'base64url');
  if (saltBytes.length < 8 || hashBytes.length < 16)
    throw new InvalidArgumentError(`${where}: short scrypt hash`);
  return { N, r: R, p: P, salt: saltBytes, hash: hashBytes };
}

interface User {
  readonly principal: string;
  readonly hash: ScryptHash | null;
  /** sha256 of a plaintext password (legacy entries), compared in constant time. */
  readonly plain: Buffer | null;
  readonly grants: Grants;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The union of `roles`' permissions, deduplicated, in a stable order. */
export function grantsOf(
  roles: readonly string[],
  definitions: Readonly<Record<string, RoleDefinition>>,
  where: string,
): Grants {
  const acquire = new Set<string>();
  const read = new Set<string>();
  let admin = false;
  for (const role of roles) {
    const definition = Object.hasOwn(definitions, role)
      ? definitions[role]
      : Object.hasOwn(builtInRoles, role)
        ? builtInRoles[role]
        : undefined;
    if (definition === undefined)
      throw new InvalidArgumentError(`${where}: unknown role ${JSON.stringify(role)}`);
    for (const pattern of definition.acquire_lock ?? []) acquire.add(pattern);
    for (const pattern of definition.read_locks ?? []) read.add(pattern);
    admin ||= definition.admin === true;
  }
  // `*` covers everything else: keep the grant small.
  const trim = (set: Set<string>) => (set.has('*') ? ['*'] : [...set].sort());
  const grants: Grants = Object.freeze({
    acquire: Object.freeze(trim(acquire)),
    read: Object.freeze(trim(read)),
    admin,
  });
  const problem = grantsProblem(grants);
  if (problem !== null) throw new InvalidArgumentError(`${where}: ${problem}`);
  return grants;
}

/** Checks a parsed users file; throws INVALID_ARGUMENT naming the first problem. */
export function checkUsersFile(raw: unknown, where: string): UsersFile {
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { users?: unknown }).users))
    throw new InvalidArgumentError(
      `${where}: expected {"roles":{…}, "users":[{principal, password, roles}]}`,
    );
  const file = raw as { roles?: unknown; users: unknown[] };
  if (file.users.length > usersMax) throw new InvalidArgumentError(`${where}: more than ${usersMax} users`);
  const roles = file.roles ?? {};
  if (typeof roles !== 'object' || roles === null || Array.isArray(roles))
    throw new InvalidArgumentError(`${where}: roles must be an object`);
  for (const [name, definition] of Object.entries(roles as Record<string, unknown>)) {
    const d = definition as Record<string, unknown> | null;
    const patterns = (value: unknown) =>
      value === undefined ||
      (Array.isArray(value) && value.every((item) => typeof item === 'string' && item.length > 0));
    if (
      typeof d !== 'object' ||
      d === null ||
      !patterns(d.acquire_lock) ||
      !patterns(d.read_locks) ||
      (d.admin !== undefined && typeof d.admin !== 'boolean')
    )
      throw new InvalidArgumentError(
        `${where}: role ${JSON.stringify(name)} needs acquire_lock/read_locks pattern lists and a boolean admin`,
      );
  }
  const seen = new Set<string>();
  for (const user of file.users) {
    const u = (user ?? {}) as Record<string, unknown>;
    if (
      typeof u.principal !== 'string' ||
      u.principal.length === 0 ||
      Buffer.byteLength(u.principal) > principalBytesMax ||
      typeof u.password !== 'string'
    )
      throw new InvalidArgumentError(
        `${where}: every user needs a principal (≤ ${principalBytesMax} bytes) and a password`,
      );
    if (seen.has(u.principal)) throw new InvalidArgumentError(`${where}: user ${u.principal} listed twice`);
    seen.add(u.principal);
    if (
      u.roles !== undefined &&
      !(Array.isArray(u.roles) && u.roles.every((role) => typeof role === 'string'))
    )
      throw new InvalidArgumentError(`${where}: roles of ${u.principal} must be a list of names`);
    if (u.password.startsWith('scrypt$')) parseHash(u.password, `${where}: ${u.principal}`);
    grantsOf(
      (u.roles as string[] | undefined) ?? [],
      roles as Record<string, RoleDefinition>,
      `${where}: ${u.principal}`,
    );
  }
  return raw as UsersFile;
}

export function readUsersFile(path: string): UsersFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new InvalidArgumentError(`cannot read users file ${path}: ${(error as Error).message}`);
  }
  return checkUsersFile(raw, path);
}

export function writeUsersFile(path: string, file: UsersFile): void {
  checkUsersFile(file, path);
  writeFileSync(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
}

/** No users file: the local cluster's `control` / `password`, with every permission. */
export const defaultUsersFile: UsersFile = Object.freeze({
  users: Object.freeze([{ principal: 'control', password: 'password', roles: ['admin'] }]),
});

export type AuthResult =
  | { readonly ok: true; readonly grants: Grants }
  | { readonly ok: false; readonly reason: 'denied' | 'busy' };

/** The users a node accepts, ready to check hellos. */
export class UserDirectory {
  private readonly users = new Map<string, User>();
  /** A hash for unknown principals, so that they cost what a wrong password costs. */
  private readonly decoy: ScryptHash;
  /** principal → sha256(password) of the last successful scrypt check: reconnect storms stay cheap. */
  private readonly verified = new Map<string, Buffer>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  readonly plaintextPrincipals: readonly string[];

  constructor(file: UsersFile) {
    const checked = checkUsersFile(file, 'users');
    const roles = checked.roles ?? {};
    const plaintext: string[] = [];
    for (const entry of checked.users) {
      const grants = grantsOf(entry.roles ?? [], roles, entry.principal);
      const hashed = entry.password.startsWith('scrypt$');
      if (!hashed) plaintext.push(entry.principal);
      this.users.set(entry.principal, {
        principal: entry.principal,
        hash: hashed ? parseHash(entry.password, entry.principal) : null,
        plain: hashed ? null : sha256(entry.password),
        grants,
      });
    }
    this.plaintextPrincipals = plaintext;
    this.decoy = {
      ...scryptParams,
      salt: randomBytes(saltBytes),
      hash: randomBytes(hashBytes),
    };
  }

  static default(): UserDirectory {
    return new UserDirectory(defaultUsersFile);
  }

  get size(): number {
    return this.users.size;
  }

  has(principal: string): boolean {
    return this.users.has(principal);
  }

  /** The grants of a user, or null when there is no such user. */
  grantsOf(principal: string): Grants | null {
    return this.users.get(principal)?.grants ?? null;
  }

  /** Checks a password; the answer takes about as long for an unknown principal as for a wrong password. */
  async authenticate(principal: string, password: string): Promise<AuthResult> {
    const user = this.users.get(principal);
    const given = sha256(password);
    if (user !== undefined && user.plain !== null) {
      return timingSafeEqual(given, user.plain)
        ? { ok: true, grants: user.grants }
        : { ok: false, reason: 'denied' };
    }
    const cached = user === undefined ? undefined : this.verified.get(principal);
    if (user !== undefined && cached !== undefined && timingSafeEqual(given, cached))
      return { ok: true, grants: user.grants };
    if (this.running >= verificationsMax) {
      if (this.waiting.length >= verificationsQueuedMax) return { ok: false, reason: 'busy' };
      // The finishing verification hands its slot over: `running` already counts this one.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.running++;
    try {
      const target = user?.hash ?? this.decoy;
      const key = await scryptAsync(password, target.salt, target.hash.length, {
        N: target.N,
        r: target.r,
        p: target.p,
      });
      const match = timingSafeEqual(key, target.hash) && user !== undefined;
      if (!match || user === undefined) return { ok: false, reason: 'denied' };
      if (this.verified.size >= usersMax) this.verified.clear();
      this.verified.set(principal, given);
      return { ok: true, grants: user.grants };
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.running--;
      else next();
    }
  }
}

export { allGrants };
