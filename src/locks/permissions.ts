// What a session may do (S12, S15), as the lock table sees it: the grants of the session's principal,
// carried into the log by the `openSession` command and kept in the session record. The table checks
// `acquire_lock` when an acquire *applies*, so every replica decides the same way from the same log, and
// no node — a follower with a stale view, a deposed leader — can hand out a lock the session may not take.
// Pure: patterns are plain strings, matched without regular expressions (no backtracking on hostile input).

import { assert } from '../assert.ts';
import { commandOverheadBytesMax, commandsPerBatchMax, entryBytesMax, principalBytesMax } from '../limits.ts';

/**
 * A principal's permissions, the union of its roles'. A pattern is a lock name in which `*` stands for
 * any run of characters (also empty, also `/`); every other character matches itself. `*` alone matches
 * every name.
 */
export interface Grants {
  /** Names the session may acquire (S12). */
  readonly acquire: readonly string[];
  /** Names the session may list and inspect (S15). */
  readonly read: readonly string[];
  /** Cluster administration: detailed status, membership, revoking. */
  readonly admin: boolean;
}

/** Patterns in one of a grant's lists. */
export const grantPatternsMax = 16;
/** UTF-8 bytes of every pattern of a grant together (both lists). */
export const grantPatternBytesMax = 512;
/** The most bytes a grant adds to an encoded openSession: the patterns plus MessagePack headers. */
export const grantEncodedBytesMax = grantPatternBytesMax + 2 * grantPatternsMax * 3 + 8;

// An openSession with a maximal principal and a maximal grant must still fit a full batch in one entry,
// the relation src/limits.ts asserts for commands without grants.
assert(
  commandsPerBatchMax * (principalBytesMax + grantEncodedBytesMax + commandOverheadBytesMax) <= entryBytesMax,
  'permissions: a full batch of openSession commands with maximal grants must fit in one entry',
);

/** Every permission: what the default `control` user and the built-in `admin` role hold. */
export const allGrants: Grants = Object.freeze({
  acquire: Object.freeze(['*']),
  read: Object.freeze(['*']),
  admin: true,
});

/** No permission at all. */
export const noGrants: Grants = Object.freeze({
  acquire: Object.freeze([]),
  read: Object.freeze([]),
  admin: false,
});

/** Whether `name` matches `pattern` (`*` = any run of characters). Linear in the lengths, no backtracking blow-up. */
export function patternMatches(pattern: string, name: string): boolean {
  if (pattern === '*') return true;
  const star = pattern.indexOf('*');
  if (star < 0) return pattern === name;
  const parts = pattern.split('*');
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  if (name.length < first.length + last.length) return false;
  if (!name.startsWith(first) || !name.endsWith(last)) return false;
  // Greedy left-to-right search for the middle parts is exact for `*`-only globs.
  let at = first.length;
  const end = name.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i] as string;
    if (part.length === 0) continue;
    const found = name.indexOf(part, at);
    if (found < 0 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

export function anyMatches(patterns: readonly string[], name: string): boolean {
  for (const pattern of patterns) if (patternMatches(pattern, name)) return true;
  return false;
}

/**
 * Whether `patterns` let their holder read every name that starts with `prefix`: some pattern is
 * `P*` (a literal P followed by a single trailing star) with `prefix` starting with P.
 */
export function coversPrefix(patterns: readonly string[], prefix: string): boolean {
  for (const pattern of patterns) {
    const star = pattern.indexOf('*');
    if (star === pattern.length - 1 && prefix.startsWith(pattern.slice(0, star))) return true;
  }
  return false;
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** What is wrong with a grant read from a command or a snapshot, or null. */
export function grantsProblem(grants: unknown): string | null {
  if (typeof grants !== 'object' || grants === null) return 'grants must be an object';
  const { acquire, read, admin } = grants as Record<string, unknown>;
  if (typeof admin !== 'boolean') return 'grants.admin must be a boolean';
  let bytes = 0;
  for (const [what, list] of [
    ['acquire', acquire],
    ['read', read],
  ] as const) {
    if (!Array.isArray(list) || list.length > grantPatternsMax)
      return `grants.${what} must be a list of at most ${grantPatternsMax} patterns`;
    for (const pattern of list) {
      if (typeof pattern !== 'string' || pattern.length === 0)
        return `grants.${what} holds an empty or non-string pattern`;
      bytes += utf8Length(pattern);
    }
  }
  if (bytes > grantPatternBytesMax)
    return `grants hold ${bytes} bytes of patterns, more than ${grantPatternBytesMax}`;
  return null;
}
