// C7: a short fuzz run against a live node's client and peer ports (the long run: `npm run fuzz`).

import { expect, it } from 'vitest';
import { runFuzz } from './harness.ts';

const runs = Number(process.env.FUZZ_RUNS ?? 250);

it('C7: no byte sequence on the client or peer port crashes the node, moves a lock or grows memory without bound', async () => {
  const report = await runFuzz({
    runs,
    seed: process.env.SEED === undefined ? undefined : Number(process.env.SEED),
  });
  console.log(
    `fuzz: ${report.cases} cases, ${report.framesClient} client frames, ${report.framesPeer} peer frames, ` +
      `${report.closedByServer} sockets closed by the node, ${report.typedErrors} typed errors, heap +${Math.round(report.heapGrowthBytes / 1e6)} MB`,
  );
  expect(report.problems).toEqual([]);
  expect(report.cases).toBe(runs);
  expect(report.closedByServer).toBeGreaterThan(runs / 4);
  expect(report.typedErrors).toBeGreaterThan(0);
  expect(report.heapGrowthBytes).toBeLessThan(256 * 1024 * 1024);
}, 120_000);
