// Plants known Raft bugs, one at a time, in a copy of the tree and checks that the simulator catches each
// within the default run count. Usage: npm run mutants [-- --runs 500 --seed 1 --only vote-no-log-check]
//
// Each mutant is a textual patch of src/raft that must apply exactly once; a patch that no longer applies
// fails loudly, so this list cannot rot silently when the core changes.

import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface Mutant {
  readonly name: string;
  readonly what: string;
  readonly file: string;
  readonly from: string;
  readonly to: string;
}

const mutants: readonly Mutant[] = [
  {
    name: 'commit-previous-term',
    what: 'the leader commits by counting replicas of an entry from a previous term (§5.4.2 ignored)',
    file: 'src/raft/raft-node.ts',
    from: 'if (index <= this.log.committed || this.log.term(index) !== this.term) return false;',
    to: 'if (index <= this.log.committed) return false;',
  },
  {
    name: 'vote-no-log-check',
    what: 'a vote is granted without the up-to-date log check (§5.4.1)',
    file: 'src/raft/raft-node.ts',
    from: 'const granted = canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);',
    to: 'const granted = canVote;',
  },
  {
    name: 'ack-before-persist',
    what: 'a follower acknowledges appends (and votes) before its disk write completes',
    file: 'src/raft/raft-node.ts',
    from: 'default:\n        this.messages.push(m);',
    to: 'default:\n        this.messagesEarly.push(m);',
  },
  {
    name: 'leader-counts-unpersisted',
    what: 'the leader counts its own log towards a quorum before persisting it',
    file: 'src/raft/raft-node.ts',
    from: 'if (id === this.id) matches.push(this.log.stableIndex);',
    to: 'if (id === this.id) matches.push(this.log.lastIndex());',
  },
  {
    name: 'heartbeat-overcommit',
    what: 'heartbeats carry the full commit index to followers whose tail may diverge',
    file: 'src/raft/raft-node.ts',
    from: 'commit: Math.min(pr.match, this.log.committed),',
    to: 'commit: this.log.committed,',
  },
  {
    name: 'double-vote',
    what: 'a node votes for any candidate in a term, even after voting for another',
    file: 'src/raft/raft-node.ts',
    from: 'this.vote === m.from ||',
    to: 'true ||',
  },
];

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '500' },
    seed: { type: 'string', default: '1' },
    only: { type: 'string' },
    /** `end-to-end` leaves out the protocol-level checks, to see a bug's effect on what users observe. */
    checks: { type: 'string', default: 'all' },
  },
});
const root = join(import.meta.dirname, '..');
const selected = values.only === undefined ? mutants : mutants.filter((m) => m.name === values.only);

interface Outcome {
  readonly mutant: Mutant;
  readonly caught: boolean;
  readonly seed: string;
  readonly check: string;
  readonly seconds: number;
}

const outcomes: Outcome[] = [];
for (const [i, mutant] of selected.entries()) {
  const dir = mkdtempSync(join(tmpdir(), `raftlock-mutant-${mutant.name}-`));
  try {
    for (const part of ['src', 'test', 'scripts', 'package.json', 'tsconfig.json']) {
      cpSync(join(root, part), join(dir, part), { recursive: true });
    }
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    const path = join(dir, mutant.file);
    const code = readFileSync(path, 'utf8');
    const count = code.split(mutant.from).length - 1;
    if (count !== 1) throw new Error(`mutant ${mutant.name}: patch applies ${count} times (expected once)`);
    writeFileSync(path, code.replace(mutant.from, mutant.to));
    process.stdout.write(`[${i + 1}/${selected.length}] ${mutant.name}: ${mutant.what} … `);
    const started = performance.now();
    const run = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        'scripts/sim.ts',
        '--runs',
        values.runs,
        '--no-shrink',
        '--quiet',
        '--checks',
        values.checks,
      ],
      { cwd: dir, env: { ...process.env, SEED: values.seed }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const seconds = (performance.now() - started) / 1000;
    const out = `${run.stdout}\n${run.stderr}`;
    const seed = /SIMULATION FAILED: seed (\d+)/.exec(out)?.[1] ?? '-';
    const check = /check:\s+(.+)/.exec(out)?.[1]?.trim() ?? '-';
    const caught = run.status !== 0 && seed !== '-';
    outcomes.push({ mutant, caught, seed, check, seconds });
    console.log(caught ? `caught by seed ${seed} (${check})` : 'NOT CAUGHT');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`\n| mutant | caught | seed | check | seconds |\n|---|---|---|---|---|`);
for (const o of outcomes) {
  console.log(
    `| ${o.mutant.name} | ${o.caught ? 'yes' : 'NO'} | ${o.seed} | ${o.check} | ${o.seconds.toFixed(1)} |`,
  );
}
process.exitCode = outcomes.every((o) => o.caught) ? 0 : 1;
