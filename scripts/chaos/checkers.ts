// The checkers of a chaos run: pure functions of the history (and of what was read after the heal), so
// test/chaos/ can feed them known-good and known-bad histories.

import { type Grant, grantsOf, type HistoryEvent } from './history.ts';
import { checkLinearizable, type MutexInput, mutexModel, type Operation } from './wgl.ts';
import type { HeldGrant } from './workload.ts';

export interface CheckResult {
  readonly name: string;
  /** The SPEC rules the check stands for. */
  readonly rules: string;
  readonly ok: boolean;
  /** 'unknown' when the check could not decide (the linearizability search ran out of budget). */
  readonly unknown?: boolean;
  readonly anomalies: readonly string[];
  readonly detail: string;
}

const shown = 5;

function result(
  name: string,
  rules: string,
  anomalies: readonly string[],
  detail: string,
  unknown = false,
): CheckResult {
  return { name, rules, ok: anomalies.length === 0, anomalies: anomalies.slice(0, 50), detail, unknown };
}

const fmt = (ms: number) => (Number.isFinite(ms) ? ms.toFixed(1) : '∞');

/** The fenced resource accepted writes in an order whose sequences never decrease, per lock. */
export function checkFence(events: readonly HistoryEvent[]): CheckResult {
  const anomalies: string[] = [];
  const highest = new Map<string, number>();
  let accepted = 0;
  let rejected = 0;
  for (const event of events) {
    if (event.f !== 'write') continue;
    if (event.type === 'fail') {
      rejected++;
      anomalies.push(
        `${event.name}: session ${event.session} wrote with sequence ${event.sequence} while isOwned() was true, ` +
          `after sequence ${highest.get(event.name) ?? '?'} had been accepted (t=${fmt(event.timeMs)})`,
      );
      continue;
    }
    accepted++;
    const before = highest.get(event.name) ?? 0;
    if (event.sequence < before)
      anomalies.push(
        `${event.name}: accepted sequence ${event.sequence} after ${before} (t=${fmt(event.timeMs)})`,
      );
    highest.set(event.name, Math.max(before, event.sequence));
  }
  return result('fenced writes', 'S8, S10', anomalies, `${accepted} accepted, ${rejected} rejected as stale`);
}

/** Per lock, grants' sequences strictly increase in real-time order, and no sequence is granted twice. */
export function checkSequences(grants: readonly Grant[]): CheckResult {
  const anomalies: string[] = [];
  const bySequence = new Map<number, Grant>();
  for (const grant of grants) {
    const other = bySequence.get(grant.sequence);
    if (other !== undefined && (other.session !== grant.session || other.name !== grant.name))
      anomalies.push(
        `sequence ${grant.sequence} granted twice: ${other.name} to session ${other.session} and ${grant.name} to session ${grant.session}`,
      );
    bySequence.set(grant.sequence, grant);
  }
  for (const [name, list] of groupByName(grants)) {
    // A grant acknowledged before another was even asked for must carry the lower sequence.
    const byOk = [...list].sort((a, b) => a.okMs - b.okMs);
    const byInvoke = [...list].sort((a, b) => a.invokeMs - b.invokeMs);
    let highestDone = Number.NEGATIVE_INFINITY;
    let highestGrant: Grant | null = null;
    let i = 0;
    for (const grant of byInvoke) {
      while (i < byOk.length && byOk[i]!.okMs < grant.invokeMs) {
        if (byOk[i]!.sequence > highestDone) {
          highestDone = byOk[i]!.sequence;
          highestGrant = byOk[i]!;
        }
        i++;
      }
      if (grant.sequence <= highestDone && highestGrant !== null && highestGrant !== grant)
        anomalies.push(
          `${name}: grant ${grant.sequence} (session ${grant.session}, asked at ${fmt(grant.invokeMs)}) after grant ` +
            `${highestGrant.sequence} (session ${highestGrant.session}) was acknowledged at ${fmt(highestGrant.okMs)}`,
        );
    }
  }
  return result('grant sequences', 'S8', anomalies, `${grants.length} grants`);
}

/** S10: no two sessions see `isOwned()` true for one lock at the same instant. */
export function checkOwnership(grants: readonly Grant[]): CheckResult {
  const anomalies: string[] = [];
  let overlapsChecked = 0;
  for (const [name, list] of groupByName(grants)) {
    const intervals = list
      .map((grant) => ({ grant, from: grant.okMs, to: grant.end?.lastOwnedMs ?? grant.okMs }))
      // A grant that arrived already ended was never seen owned (lastOwnedMs -1): no interval.
      .filter((interval) => interval.to >= interval.from)
      .sort((a, b) => a.from - b.from);
    let widest: (typeof intervals)[number] | null = null;
    for (const interval of intervals) {
      overlapsChecked++;
      if (widest !== null && interval.from <= widest.to && widest.grant.session !== interval.grant.session)
        anomalies.push(
          `${name}: session ${widest.grant.session} (sequence ${widest.grant.sequence}) saw isOwned() true until ` +
            `${fmt(widest.to)}, session ${interval.grant.session} (sequence ${interval.grant.sequence}) owned it from ${fmt(interval.from)}`,
        );
      if (widest === null || interval.to > widest.to) widest = interval;
    }
  }
  return result('isOwned exclusion', 'S2, S10', anomalies, `${overlapsChecked} ownership intervals`);
}

/** Releases that may end a grant, and when (see docs/chaos.md, "Linearizability"). */
export function releaseOf(grant: Grant): { callMs: number; returnMs: number } | null {
  const release = grant.release;
  if (release !== null) {
    if (release.type === 'ok' && release.owned === true)
      return { callMs: release.invokeMs, returnMs: release.timeMs };
    // Not owned any more when the unlock arrived: the cluster had released it before, unseen.
    if (release.type === 'ok') return { callMs: grant.invokeMs, returnMs: release.timeMs };
    return { callMs: grant.invokeMs, returnMs: Number.POSITIVE_INFINITY };
  }
  const end = grant.end;
  if (end !== null && (end.reason === 'released' || end.reason === 'unlock' || end.reason === 'cancelled'))
    return { callMs: grant.invokeMs, returnMs: end.timeMs };
  const close = grant.close;
  if (close !== null)
    return {
      callMs: grant.invokeMs,
      returnMs: close.type === 'ok' ? close.timeMs : Number.POSITIVE_INFINITY,
    };
  // Lost by the client's own inference (connection dropped, S10 deadline, …): released at some unknown time.
  if (end !== null) return { callMs: grant.invokeMs, returnMs: Number.POSITIVE_INFINITY };
  return null;
}

/** The mutex history of one lock: an acquire per grant and, where it ended, a release. */
export function mutexOperations(grants: readonly Grant[]): Operation<MutexInput>[] {
  const operations: Operation<MutexInput>[] = [];
  for (const grant of grants) {
    const id = `${grant.session}#${grant.sequence}`;
    operations.push({
      input: { kind: 'acquire', grant: id, sequence: grant.sequence },
      callMs: grant.invokeMs,
      returnMs: grant.okMs,
      label: `acquire ${id}`,
    });
    const release = releaseOf(grant);
    if (release !== null)
      operations.push({ input: { kind: 'release', grant: id }, ...release, label: `release ${id}` });
  }
  return operations;
}

/** The lock history is linearizable against a mutex (WGL search, one lock at a time). */
export function checkLinearizability(grants: readonly Grant[], stepsMax = 2_000_000): CheckResult {
  const anomalies: string[] = [];
  let steps = 0;
  let undecided = 0;
  let operationCount = 0;
  for (const [name, list] of groupByName(grants)) {
    const operations = mutexOperations(list);
    operationCount += operations.length;
    const outcome = checkLinearizable(mutexModel, operations, { stepsMax });
    steps += outcome.steps;
    if (outcome.kind === 'unknown') undecided++;
    if (outcome.kind === 'violation') {
      const stuck = operations[outcome.stuckAt];
      const tail = outcome.prefix
        .slice(-shown)
        .map((index) => operations[index]!.label)
        .join(', ');
      anomalies.push(
        `${name}: not linearizable; ${stuck?.label} [${fmt(stuck?.callMs ?? 0)}, ${fmt(stuck?.returnMs ?? 0)}] ` +
          `cannot take effect after … ${tail}`,
      );
    }
  }
  return result(
    'linearizable (WGL)',
    'S2, S3, S6, S8, S9',
    anomalies,
    `${operationCount} operations, ${steps} search steps${undecided > 0 ? `, ${undecided} lock(s) undecided` : ''}`,
    undecided > 0 && anomalies.length === 0,
  );
}

/** One linearizable read of the lock table (S15), with the grants clients held around it. */
export interface ReadObservation {
  readonly timeMs: number;
  /** Grants whose isOwned() was true just before the read was sent … */
  readonly heldBefore: readonly HeldGrant[];
  /** … and right after its answer came. */
  readonly heldAfter: readonly HeldGrant[];
  readonly locks: readonly { readonly name: string; readonly owner: number; readonly sequence: number }[];
}

/**
 * S15, S10: a read taken while a client held a grant (isOwned() true before and after it) never shows
 * that lock owned by another session or by a different grant. A read may show the lock free: the
 * cluster may release a lock without handing it on before the client hears of it (S10 only forbids a
 * grant to someone else); those are counted.
 */
export function checkReads(reads: readonly ReadObservation[], failedReads: number): CheckResult {
  const anomalies: string[] = [];
  let compared = 0;
  let freeWhileHeld = 0;
  for (const read of reads) {
    const after = new Set(read.heldAfter.map((grant) => `${grant.session}/${grant.name}/${grant.sequence}`));
    for (const grant of read.heldBefore) {
      if (!after.has(`${grant.session}/${grant.name}/${grant.sequence}`)) continue;
      compared++;
      const listed = read.locks.find((lock) => lock.name === grant.name);
      if (listed === undefined) {
        freeWhileHeld++;
        continue;
      }
      if (listed.owner !== grant.session || listed.sequence !== grant.sequence)
        anomalies.push(
          `${grant.name}: read at ${fmt(read.timeMs)} shows owner ${listed.owner} sequence ${listed.sequence} ` +
            `while session ${grant.session} held sequence ${grant.sequence} with isOwned() true`,
        );
    }
  }
  return result(
    'reads agree with holders',
    'S15, S10',
    anomalies,
    `${reads.length} reads (${failedReads} failed), ${compared} held grants compared, ${freeWhileHeld} shown free`,
  );
}

/** After the heal, a fresh grant of each lock carries a sequence above every acknowledged one. */
export function checkSurvival(
  grants: readonly Grant[],
  after: ReadonlyMap<string, number | string>,
): CheckResult {
  const anomalies: string[] = [];
  const highest = new Map<string, number>();
  for (const grant of grants) highest.set(grant.name, Math.max(highest.get(grant.name) ?? 0, grant.sequence));
  for (const [name, sequence] of after) {
    if (typeof sequence === 'string') {
      anomalies.push(`${name}: no grant after the heal (${sequence})`);
      continue;
    }
    const before = highest.get(name) ?? 0;
    if (sequence <= before)
      anomalies.push(
        `${name}: granted ${sequence} after the heal, but ${before} had been acknowledged before`,
      );
  }
  return result(
    'acknowledged grants survive',
    'S8, S9, C3',
    anomalies,
    `${after.size} locks re-acquired after the heal`,
  );
}

/** Progress resumed within `boundMs` of the heal: every lock was granted to a worker again. */
export function checkRecovery(
  grants: readonly Grant[],
  names: readonly string[],
  healMs: number,
  boundMs: number,
): CheckResult & { readonly recoveryMs: number } {
  const first = new Map<string, number>();
  for (const grant of grants) {
    if (grant.okMs < healMs) continue;
    first.set(grant.name, Math.min(first.get(grant.name) ?? Number.POSITIVE_INFINITY, grant.okMs));
  }
  const anomalies: string[] = [];
  let recoveryMs = 0;
  for (const name of names) {
    const at = first.get(name);
    const took = at === undefined ? Number.POSITIVE_INFINITY : at - healMs;
    recoveryMs = Math.max(recoveryMs, took);
    if (!(took <= boundMs)) anomalies.push(`${name}: no grant within ${boundMs} ms of the heal`);
  }
  return {
    ...result(
      'progress after heal',
      'C1, C2',
      anomalies,
      `every lock granted ${fmt(recoveryMs)} ms after the heal`,
    ),
    recoveryMs,
  };
}

export function groupByName(grants: readonly Grant[]): Map<string, Grant[]> {
  const groups = new Map<string, Grant[]>();
  for (const grant of grants) {
    const list = groups.get(grant.name) ?? [];
    list.push(grant);
    groups.set(grant.name, list);
  }
  return groups;
}

/**
 * S6, S10: a session's lock() never returns, as a new SessionLock, a grant whose unlock failed. Found by
 * this run (an unlock refused NOT_LEADER by a gateway that knew no leader left the grant in the table),
 * fixed in 9f14a2f; `grantsOf` folds such a grant into one, so the other checkers see the cluster's view.
 */
export function checkRegrants(grants: readonly Grant[]): CheckResult {
  const anomalies: string[] = [];
  let count = 0;
  for (const grant of grants)
    for (const atMs of grant.regrants) {
      count++;
      anomalies.push(
        `${grant.name}: session ${grant.session} got grant ${grant.sequence} back at ${fmt(atMs)} after its unlock failed`,
      );
    }
  return result(
    'no stale grant returned',
    'S6, S10',
    anomalies,
    `${count} grants returned after a failed unlock`,
  );
}

/** Every history check (the recovery and survival checks need facts from after the heal). */
export function checkHistory(events: readonly HistoryEvent[]): CheckResult[] {
  const grants = grantsOf(events);
  return [
    checkFence(events),
    checkSequences(grants),
    checkOwnership(grants),
    checkLinearizability(grants),
    checkRegrants(grants),
  ];
}
