// `npm run examples -- [ws://host:port …]`: every example, one after another, against a running cluster.

import { main as fencedResource } from './fenced-resource.ts';
import { main as housekeepingElection } from './housekeeping-election.ts';
import { main as twoSessions } from './two-sessions.ts';

for (const [name, example] of [
  ['two-sessions', twoSessions],
  ['fenced-resource', fencedResource],
  ['housekeeping-election', housekeepingElection],
] as const) {
  console.log(`--- ${name}`);
  await example();
}
process.exit(0);
