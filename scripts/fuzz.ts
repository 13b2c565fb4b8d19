// `npm run fuzz -- [--runs N] [--seed S]`: the C7 fuzzer of test/fuzz for longer runs. Prints the number
// of frames tried on each port and every problem found; exits 1 if there was one.

import { parseArgs } from 'node:util';
import { runFuzz } from '../test/fuzz/harness.ts';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '5000' }, seed: { type: 'string' } },
  strict: true,
});
const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const started = Date.now();
process.stdout.write(`fuzz: ${runs} cases, seed ${seed}\n`);
const report = await runFuzz({ runs, seed, log: (line) => process.stdout.write(`  ${line}\n`) });
process.stdout.write(
  [
    `fuzz: ${report.cases} cases in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    `  frames tried: ${report.framesClient + report.framesPeer} (client port ${report.framesClient}, peer port ${report.framesPeer})`,
    `  sockets closed by the node: ${report.closedByServer}; typed errors received: ${report.typedErrors}`,
    `  heap growth: ${(report.heapGrowthBytes / 1e6).toFixed(1)} MB`,
    report.problems.length === 0 ? '  no problems' : `  PROBLEMS:\n    ${report.problems.join('\n    ')}`,
    '',
  ].join('\n'),
);
process.exit(report.problems.length === 0 ? 0 : 1);
