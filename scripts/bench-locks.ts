// Scale benchmark for the lock table (issue 3): apply throughput, memory of a large table, snapshot
// and restore time. Run with `npm run bench:locks` (needs --expose-gc, which the npm script passes);
// `npm run bench:locks -- --quick` runs a tenth of the sizes.
//
// Targets: ≥ 1,000,000 simple acquire/release applies per second on one core; 1,000,000 held locks
// across 100,000 sessions in ≤ 1 GB of heap; snapshot and restore of that table ≤ 3 s each.

import { performance } from 'node:perf_hooks';
import {
  type Command,
  decodeEntry,
  type Entry,
  encodeEntry,
  LockTable,
  SessionLockScope,
} from '../src/locks/index.ts';

const quick = process.argv.includes('--quick');
const scale = quick ? 0.1 : 1;
const SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS;

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error('run with node --expose-gc (npm run bench:locks does)');
  process.exit(2);
}

interface Row {
  readonly measure: string;
  readonly value: string;
  readonly target: string;
  readonly ok: boolean | null;
}
const rows: Row[] = [];

function report(measure: string, value: string, target = '', ok: boolean | null = null): void {
  rows.push({ measure, value, target, ok });
  console.log(`  ${measure}: ${value}${target ? ` (target ${target})` : ''}`);
}

function heapUsedBytes(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

/** A table with `sessionCount` sessions opened in one entry; returns it and the next index. */
function withSessions(sessionCount: number): { table: LockTable; index: number; ids: number[] } {
  const table = new LockTable();
  const ids: number[] = [];
  let index = 0;
  for (let opened = 0; opened < sessionCount; ) {
    const commands: Command[] = [];
    for (let i = 0; i < 1024 && opened < sessionCount; i++, opened++) {
      commands.push({ type: 'openSession', principal: `user-${opened % 100}`, reconnectionWindowMs: 30_000 });
    }
    for (const result of table.apply(++index, { timeMs: 0, commands }).results) {
      if (result.kind !== 'opened') throw new Error(`openSession failed: ${JSON.stringify(result)}`);
      ids.push(result.session);
    }
  }
  return { table, index, ids };
}

/**
 * Simple acquire/release traffic: each session takes a lock of its own and releases it again, so every
 * acquire is an immediate grant and every release frees the lock. `batch` commands per entry.
 */
function benchThroughput(label: string, commandCount: number, batch: number, contended: boolean): number {
  const sessionCount = 1_000;
  const { table, index: start, ids } = withSessions(sessionCount);
  let index = start;
  const requestNos = new Array<number>(sessionCount).fill(0);
  const held = new Array<boolean>(sessionCount).fill(false);
  const names = ids.map((id) => (contended ? `shared-${id % 10}` : `lock-${id}`));
  const chunkCommands = 20_000;
  let applied = 0;
  let elapsedMs = 0;
  let cursor = 0;
  while (applied < commandCount) {
    // Build a chunk of entries outside the timed region.
    const entries: Entry[] = [];
    for (let built = 0; built < chunkCommands; ) {
      const commands: Command[] = [];
      for (let i = 0; i < batch; i++, built++) {
        const s = cursor;
        cursor = (cursor + 1) % sessionCount;
        const session = ids[s] as number;
        const requestNo = (requestNos[s] as number) + 1;
        requestNos[s] = requestNo;
        const name = names[s] as string;
        commands.push(
          held[s]
            ? { type: 'release', session, requestNo, name }
            : { type: 'acquire', session, requestNo, name, scope: SESSION },
        );
        held[s] = !held[s];
      }
      entries.push({ timeMs: 1_000 + index, commands });
    }
    const t0 = performance.now();
    for (let i = 0; i < entries.length; i++) table.apply(++index, entries[i] as Entry);
    elapsedMs += performance.now() - t0;
    applied += chunkCommands;
  }
  table.assertInvariants();
  const rate = (applied / elapsedMs) * 1000;
  report(label, `${fmt(rate)} commands/s`, '≥ 1,000,000/s', rate >= 1_000_000);
  return rate;
}

/** The same traffic, but through encodeEntry and decodeEntry as the log would carry it. */
function benchCodecPath(commandCount: number): void {
  const { table, index: start, ids } = withSessions(1_000);
  let index = start;
  const entries: Uint8Array[] = [];
  for (let n = 0; n < commandCount; n += 2) {
    const session = ids[(n / 2) % ids.length] as number;
    const requestNo = n + 1;
    entries.push(
      encodeEntry({
        timeMs: 1_000,
        commands: [{ type: 'acquire', session, requestNo, name: `lock-${session}`, scope: SESSION }],
      }),
      encodeEntry({
        timeMs: 1_000,
        commands: [{ type: 'release', session, requestNo: n + 2, name: `lock-${session}` }],
      }),
    );
  }
  const t0 = performance.now();
  for (const bytes of entries) table.apply(++index, decodeEntry(bytes));
  const rate = (entries.length / (performance.now() - t0)) * 1000;
  report('decode + apply, 1 command per entry', `${fmt(rate)} entries/s`);
}

function benchLargeTable(): void {
  const sessionCount = Math.round(100_000 * scale);
  const locksPerSession = 10;
  const lockCount = sessionCount * locksPerSession;
  console.log(`\nlarge table: ${fmt(lockCount)} held locks across ${fmt(sessionCount)} sessions`);
  const before = heapUsedBytes();
  const { table, index: start, ids } = withSessions(sessionCount);
  let index = start;
  const t0 = performance.now();
  for (let round = 0; round < locksPerSession; round++) {
    for (let s = 0; s < sessionCount; ) {
      const commands: Command[] = [];
      for (let i = 0; i < 1024 && s < sessionCount; i++, s++) {
        const session = ids[s] as number;
        commands.push({
          type: 'acquire',
          session,
          requestNo: round + 1,
          name: `tenant-${session % 997}/resource-${session}-${round}`,
          scope: SESSION,
        });
      }
      table.apply(++index, { timeMs: 2_000, commands });
    }
    process.stdout.write(`  filled ${fmt(((round + 1) * lockCount) / locksPerSession)} locks\r`);
  }
  const fillMs = performance.now() - t0;
  process.stdout.write('\n');
  if (table.lockCount !== lockCount) throw new Error(`expected ${lockCount} locks, have ${table.lockCount}`);
  report('fill (batched acquires)', `${fmt((lockCount / fillMs) * 1000)} grants/s`);
  const heapBytes = heapUsedBytes() - before;
  const heapTarget = 1024 * 1024 * 1024 * scale;
  report(
    `heap for ${fmt(lockCount)} locks`,
    `${mb(heapBytes)} (${fmt(heapBytes / lockCount)} B/lock)`,
    `≤ ${mb(heapTarget)}`,
    heapBytes <= heapTarget,
  );

  const t1 = performance.now();
  const bytes = table.snapshot();
  const snapshotMs = performance.now() - t1;
  report('snapshot', `${fmt(snapshotMs)} ms, ${mb(bytes.length)}`, '≤ 3,000 ms', snapshotMs <= 3_000);

  const t2 = performance.now();
  const restored = LockTable.restore(bytes);
  const restoreMs = performance.now() - t2;
  report('restore (with full invariant check)', `${fmt(restoreMs)} ms`, '≤ 3,000 ms', restoreMs <= 3_000);

  const again = restored.snapshot();
  const identical = Buffer.from(again).equals(Buffer.from(bytes));
  report('restore → snapshot is byte-identical', String(identical), 'true', identical);
}

console.log(`lock table benchmark${quick ? ' (--quick)' : ''} — node ${process.version}\n\nthroughput:`);
const opsCount = quick ? 1_000_000 : 6_000_000;
benchThroughput('acquire/release, 1 command per entry', opsCount, 1, false);
benchThroughput('acquire/release, 64 commands per entry', opsCount, 64, false);
benchThroughput('contended (10 locks, 1000 sessions, FIFO handoff), 64 per entry', opsCount / 2, 64, true);
benchCodecPath(quick ? 200_000 : 1_000_000);
benchLargeTable();

console.log('\nsummary:');
const width = Math.max(...rows.map((r) => r.measure.length));
const valueWidth = Math.max(...rows.map((r) => r.value.length));
for (const row of rows) {
  const verdict = row.ok === null ? '' : row.ok ? 'ok' : 'MISSED';
  console.log(
    `  ${row.measure.padEnd(width)}  ${row.value.padEnd(valueWidth)}  ${row.target.padEnd(14)} ${verdict}`,
  );
}
process.exitCode = rows.some((r) => r.ok === false) ? 1 : 0;
