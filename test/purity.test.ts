// The Raft core and the lock table are pure: one seed and one input sequence give one behaviour. This test
// (with biome's noRestrictedGlobals override) enforces it: no I/O modules, no clocks, no ambient randomness,
// no timers, and imports only from the shared leaves.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
const pureDirs = ['src/raft', 'src/locks'];
const allowedImports = [/^\.\/[\w-]+\.ts$/, /^\.\.\/(assert|errors|limits)\.ts$/, /^msgpackr$/];
const forbidden: [RegExp, string][] = [
  [/\bDate\b/, 'Date'],
  [/\bMath\.random\b/, 'Math.random'],
  [/\bprocess\b/, 'process'],
  [/\bperformance\b/, 'performance'],
  [/\bset(Timeout|Interval|Immediate)\b/, 'timers'],
  [/\bqueueMicrotask\b/, 'queueMicrotask'],
  [/\bcrypto\b/, 'crypto'],
  [/\bawait\b|\basync\b/, 'async code'],
];

function sources(dir: string): string[] {
  return readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(dir, f));
}

function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

describe('purity of the deterministic core', () => {
  for (const dir of pureDirs) {
    for (const file of sources(dir)) {
      it(`C1: ${file} imports no I/O and reads no time or randomness`, () => {
        const code = stripComments(readFileSync(join(root, file), 'utf8'));
        const imports = [...code.matchAll(/(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/g)].map(
          (m) => m[1]!,
        );
        // msgpackr is a pure codec; the raft core does without it.
        const allowed = dir === 'src/raft' ? allowedImports.slice(0, 2) : allowedImports;
        for (const spec of imports)
          expect(
            allowed.some((re) => re.test(spec)),
            `${file} imports ${spec}`,
          ).toBe(true);
        for (const [re, what] of forbidden) expect(re.test(code), `${file} uses ${what}`).toBe(false);
      });
    }
  }

  it('C1: the checker itself catches a forbidden call', () => {
    const code = stripComments('const t = Date.now(); // fine in a comment: Math.random');
    expect(forbidden.some(([re]) => re.test(code))).toBe(true);
    expect(/\bMath\.random\b/.test(code)).toBe(false);
  });
});
