// The leader's liveness decisions (C6), without processes: which connectionLost / expireSession commands
// it proposes and when.

import { describe, expect, it } from 'vitest';
import { LockTable } from '../../src/locks/index.ts';
import { LivenessClock, SessionDirectory } from '../../src/server/liveness.ts';

function setup(windowMs = 30_000) {
  const table = new LockTable();
  const directory = new SessionDirectory();
  const out = table.apply(1, {
    timeMs: 1_000,
    commands: [{ type: 'openSession', principal: 'p', reconnectionWindowMs: windowMs }],
  });
  directory.onCommand(
    { type: 'openSession', principal: 'p', reconnectionWindowMs: windowMs },
    out.results[0]!,
    1_000,
  );
  const clock = new LivenessClock({ connectionTimeoutMs: 2_000, retryMs: 1_000, proposalsPerCheckMax: 100 });
  return { table, directory, clock };
}

const nowhere = () => false;

describe('LivenessClock', () => {
  it('proposes nothing while not the leader', () => {
    const { directory, clock } = setup();
    expect(clock.check(1_000_000, directory, nowhere)).toEqual([]);
  });

  it('C6: a connected session silent past the bound gets connectionLost, counted from when the leader took over', () => {
    const { directory, clock } = setup();
    clock.becameLeader(10_000);
    expect(clock.check(11_999, directory, nowhere)).toEqual([]);
    expect(clock.check(12_000, directory, nowhere)).toEqual([
      { type: 'connectionLost', session: 1, epoch: 0 },
    ]);
    // Not proposed again until the retry interval passes.
    expect(clock.check(12_500, directory, nowhere)).toEqual([]);
    expect(clock.check(13_000, directory, nowhere)).toHaveLength(1);
  });

  it('C6: a session whose connection this node holds is left to the gateway watchdog; touches restart the clock', () => {
    const { directory, clock } = setup();
    clock.becameLeader(0);
    expect(clock.check(60_000, directory, () => true)).toEqual([]);
    clock.touch(1, 59_000);
    expect(clock.check(60_000, directory, nowhere)).toEqual([]);
    expect(clock.check(61_000, directory, nowhere)).toHaveLength(1);
  });

  it('C6, S11: a disconnected session expires only after its window, never before a new leader has waited a full window', () => {
    const { directory, clock } = setup(30_000);
    directory.onCommand({ type: 'connectionLost', session: 1, epoch: 0 }, { kind: 'done' }, 5_000);
    clock.becameLeader(20_000);
    // Lost at 5 000 under the old leader, but this leader only started counting at 20 000.
    expect(clock.check(35_000, directory, nowhere)).toEqual([]);
    expect(clock.check(49_999, directory, nowhere)).toEqual([]);
    expect(clock.check(50_000, directory, nowhere)).toEqual([
      { type: 'expireSession', session: 1, epoch: 0 },
    ]);
  });

  it('a reconnect moves the epoch; an ended session is forgotten', () => {
    const { directory, clock } = setup();
    directory.onCommand({ type: 'reconnect', session: 1, epoch: 3 }, { kind: 'done' }, 2_000);
    clock.becameLeader(0);
    expect(clock.check(5_000, directory, nowhere)).toEqual([
      { type: 'connectionLost', session: 1, epoch: 3 },
    ]);
    directory.onEffect({ kind: 'sessionEnded', session: 1, reason: 'closed' });
    clock.forget(1);
    expect(clock.check(100_000, directory, nowhere)).toEqual([]);
  });
});
