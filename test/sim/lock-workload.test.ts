// The lock simulator's exactly-once oracle (test/sim/lock-workload.ts) on hand-made histories: it must
// accept every answer the table may give a retry, and still catch the answers it must not give.

import { describe, expect, it } from 'vitest';
import { type Command, LockTable, type Result, SessionLockScope } from '../../src/locks/index.ts';
import { type CommittedEntry, type LockHistory, LockViolation, simLockLimits } from './lock-table-machine.ts';
import { LockWorkload } from './lock-workload.ts';

const SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS;

/** A real table whose committed entries go to a `LockWorkload`, optionally with a result altered. */
function driver() {
  let listener: ((committed: CommittedEntry) => void) | null = null;
  const history = { onCommitted: (l: (committed: CommittedEntry) => void) => (listener = l) };
  new LockWorkload(history as unknown as LockHistory);
  const table = new LockTable({ limits: simLockLimits });
  let index = 0;
  return (commands: Command[], alter?: (results: Result[]) => void): Result[] => {
    const entry = { timeMs: 1_000 + index * 10, commands };
    const { results, effects } = table.apply(++index, entry);
    const seen = [...results];
    alter?.(seen);
    listener!({ index, entry, results: seen, effects });
    return results;
  };
}

const acquire = { type: 'acquire', session: 2, requestNo: 1, name: 'b', scope: SESSION } as const;
const cancel = { type: 'cancel', session: 2, requestNo: 1 } as const;
const open = (principal: string) =>
  ({ type: 'openSession', principal, reconnectionWindowMs: 1_000 }) as const;

describe('lock sim exactly-once oracle', () => {
  it('C2, S14: a retry in a batch may answer a grant made and cancelled in that same batch (lock-sim seed 574073086)', () => {
    const apply = driver();
    apply([open('p1'), open('p2')]);
    apply([{ type: 'acquire', session: 1, requestNo: 1, name: 'b', scope: SESSION }]);
    apply([acquire]); // waiting
    // closeSession hands b to 2:1, the retry answers that grant (held), the cancel releases it.
    const results = apply([{ type: 'closeSession', session: 1 }, acquire, cancel]);
    expect(results[1]).toMatchObject({ kind: 'granted', held: true });
    expect(results[2]).toEqual({ kind: 'cancelled', outcome: 'released' });
    expect(apply([acquire])[0]).toMatchObject({ kind: 'error', code: 'ABORTED' });
  });

  it('C2: a retry answered with a fresh grant after its call ended ABORTED is still caught', () => {
    const apply = driver();
    apply([open('p1'), open('p2')]);
    apply([{ type: 'acquire', session: 1, requestNo: 1, name: 'b', scope: SESSION }]);
    apply([acquire]);
    apply([{ type: 'closeSession', session: 1 }, acquire, cancel]);
    expect(() =>
      apply([acquire], (results) => {
        results[0] = { kind: 'granted', name: 'b', sequence: 9, scope: SESSION, held: true };
      }),
    ).toThrow(LockViolation);
  });

  it('C2: a retry in a batch answered with a grant its request never had is still caught', () => {
    const apply = driver();
    apply([open('p1'), open('p2')]);
    apply([{ type: 'acquire', session: 1, requestNo: 1, name: 'b', scope: SESSION }]);
    apply([acquire]);
    expect(() =>
      apply([{ type: 'closeSession', session: 1 }, acquire, cancel], (results) => {
        results[1] = { kind: 'granted', name: 'b', sequence: 1, scope: SESSION, held: true };
      }),
    ).toThrow(LockViolation);
  });
});
