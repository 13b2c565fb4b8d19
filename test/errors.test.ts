import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errorCodes, errorFromCode, isErrorCode, isRaftlockError, RaftlockError } from '../src/errors.ts';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

describe('errors', () => {
  it('S13: every code in src/errors.ts is documented in docs/errors.md, and vice versa', () => {
    const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((match) => match[1]);
    expect([...documented].sort()).toEqual([...errorCodes].sort());
    expect(new Set(documented).size).toBe(documented.length);
  });

  it('S13: each code has its own subclass, which carries the code, the message and the cause', () => {
    const names = new Set<string>();
    for (const code of errorCodes) {
      const cause = new Error('underneath');
      const error = errorFromCode(code, `failed with ${code}`, { cause });
      expect(error).toBeInstanceOf(RaftlockError);
      expect(error).toBeInstanceOf(Error);
      expect(isRaftlockError(error)).toBe(true);
      expect(error.code).toBe(code);
      expect(error.message).toBe(`failed with ${code}`);
      expect(error.cause).toBe(cause);
      expect(error.constructor).not.toBe(RaftlockError);
      names.add(error.name);
      // The class documented for the code is the one built.
      expect(doc).toContain(`| \`${code}\` | \`${error.name}\` |`);
    }
    expect(names.size).toBe(errorCodes.length);
    expect(errorFromCode('TIMEOUT', 'no cause').cause).toBeUndefined();
  });

  it('isErrorCode accepts exactly the codes', () => {
    for (const code of errorCodes) expect(isErrorCode(code)).toBe(true);
    for (const value of ['timeout', 'NOPE', 1, null, undefined, 'toString'])
      expect(isErrorCode(value)).toBe(false);
  });
});
