// Module hooks that let Node run raftlock's TypeScript sources (registered by ts-loader.js). Each `.ts`
// file is stripped of its types by esbuild as it loads; nothing else changes. tsx did this before, but
// tsx asks esbuild to keep function names, which wraps every named closure in a helper that redefines the
// closure's `name` property when it is created: a defineProperty per request on the hot paths
// (docs/benchmarks.md). Plain type stripping keeps the names JavaScript gives anyway.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { stop, transform } from 'esbuild';

/** What tsconfig.json says that changes emitted code; type checking is tsc's job (npm run typecheck). */
const tsconfigRaw = { compilerOptions: { target: 'ES2023', verbatimModuleSyntax: true, useDefineForClassFields: true } };

/** esbuild works in a child process; it is stopped once loading goes quiet (a later load starts it again). */
const idleStopMs = 1000;
let idleTimer = null;

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !(url.endsWith('.ts') || url.endsWith('.mts'))) return nextLoad(url, context);
  const path = fileURLToPath(url);
  const { code } = await transform(await readFile(path, 'utf8'), {
    loader: 'ts',
    format: 'esm',
    target: 'node20',
    sourcemap: 'inline',
    sourcefile: path,
    tsconfigRaw,
  });
  if (idleTimer !== null) clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    idleTimer = null;
    stop();
  }, idleStopMs);
  idleTimer.unref();
  return { format: 'module', source: code, shortCircuit: true };
}
