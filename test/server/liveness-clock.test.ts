// The leader's liveness decisions (C6), without processes: which connectionLost / expireSession commands
// it proposes and when.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Command, LockTable, type SessionId } from '../../src/locks/index.ts';
import {
  HeldReporter,
  LivenessClock,
  type LivenessOptions,
  PeerHeldConnections,
  SessionDirectory,
} from '../../src/server/liveness.ts';

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

describe('SessionDirectory', () => {
  it('C6: rebuilt from a table, it mirrors every session as applying the commands did', () => {
    const table = new LockTable();
    const followed = new SessionDirectory();
    const commands: Command[] = [
      { type: 'openSession', principal: 'p', reconnectionWindowMs: 5_000 },
      { type: 'openSession', principal: 'q', reconnectionWindowMs: 9_000 },
      { type: 'openSession', principal: 'r', reconnectionWindowMs: 7_000 },
    ];
    const later: Command[] = [
      { type: 'connectionLost', session: 2, epoch: 0 },
      { type: 'reconnect', session: 3, epoch: 4 },
      { type: 'acquire', session: 1, requestNo: 1, name: 'a', scope: 'UNLOCK_ON_SESSION_LOSS' },
    ];
    for (const [index, batch] of [commands, later].entries()) {
      const out = table.apply(index + 1, { timeMs: 1_000 * (index + 1), commands: batch });
      for (const [i, command] of batch.entries())
        followed.onCommand(command, out.results[i]!, 1_000 * (index + 1));
    }
    const rebuilt = new SessionDirectory();
    rebuilt.rebuild(table);
    expect([...rebuilt.sessions]).toEqual([...followed.sessions]);
    expect(rebuilt.get(2)).toEqual({
      epoch: 0,
      connected: false,
      lostAtMs: 2_000,
      reconnectionWindowMs: 9_000,
    });
  });
});

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

  it('a check costs what is due: with 100,000 connected sessions, checks before any bound passes look at none', () => {
    const directory = new SessionDirectory();
    for (let id = 1; id <= 100_000; id++) {
      directory.onCommand(
        { type: 'openSession', principal: 'p', reconnectionWindowMs: 30_000 },
        { kind: 'opened', session: id },
        0,
      );
    }
    const clock = new LivenessClock({
      connectionTimeoutMs: 2_000,
      retryMs: 1_000,
      proposalsPerCheckMax: 100,
    });
    clock.becameLeader(0);
    expect(clock.check(0, directory, nowhere)).toEqual([]);
    expect(clock.evaluations).toBe(100_000); // a new leader looks at every session once
    expect(clock.scheduled).toBe(100_000);
    for (let now = 10; now < 1_000; now += 10) {
      for (let id = 1; id <= 100; id++) clock.touch(id, now);
      expect(clock.check(now, directory, nowhere)).toEqual([]);
    }
    expect(clock.evaluations).toBe(100_000);
    // At the bound, the untouched sessions come due, a bounded number of proposals per check.
    const due = clock.check(2_000, directory, nowhere);
    expect(due).toHaveLength(100);
    expect(due.every((command) => command.type === 'connectionLost' && command.session > 100)).toBe(true);
  });

  it('C6: a held session that goes silent and is no longer held is noticed within a quarter of the bound', () => {
    const { directory, clock } = setup();
    clock.becameLeader(0);
    let held = true;
    for (let now = 0; now <= 10_000; now += 100) {
      expect(clock.check(now, directory, () => held)).toEqual([]);
    }
    held = false;
    const seen: number[] = [];
    for (let now = 10_100; now <= 11_000 && seen.length === 0; now += 100) {
      if (clock.check(now, directory, () => held).length > 0) seen.push(now);
    }
    expect(seen.length).toBe(1);
    expect(seen[0]!).toBeLessThanOrEqual(10_000 + 2_000 / 4 + 100);
  });

  it('C6, S11: decides exactly what a full scan of every session would, over random histories', () => {
    const options: LivenessOptions = {
      connectionTimeoutMs: 2_000,
      retryMs: 700,
      proposalsPerCheckMax: 10_000,
    };
    const op = fc.oneof(
      fc.record({ kind: fc.constant('open' as const), windowMs: fc.integer({ min: 0, max: 5_000 }) }),
      fc.record({ kind: fc.constant('reconnect' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('lost' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('end' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('touch' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('settled' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('leader' as const) }),
      fc.record({ kind: fc.constant('check' as const) }),
      fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 1_500 }) }),
      fc.record({ kind: fc.constant('follower' as const) }),
      fc.record({ kind: fc.constant('check' as const) }),
      fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 1_500 }) }),
    );
    const decided = { lost: 0, expired: 0 };
    fc.assert(
      fc.property(fc.array(op, { minLength: 100, maxLength: 300 }), (ops) => {
        const directory = new SessionDirectory();
        const clock = new LivenessClock(options);
        const model = new ScanningClock(options);
        const held = (id: SessionId) => id % 3 === 0;
        let now = 0;
        let nextId = 1;
        let epoch = 0;
        const ids = () => [...directory.sessions.keys()];
        const pick = (n: number) => {
          const all = ids();
          return all.length === 0 ? undefined : all[n % all.length];
        };
        for (const o of ops) {
          switch (o.kind) {
            case 'open': {
              const command: Command = {
                type: 'openSession',
                principal: 'p',
                reconnectionWindowMs: o.windowMs,
              };
              const id = nextId++;
              directory.onCommand(command, { kind: 'opened', session: id }, now);
              clock.touch(id, now);
              model.touch(id, now);
              break;
            }
            case 'reconnect': {
              const id = pick(o.pick);
              if (id === undefined) break;
              directory.onCommand({ type: 'reconnect', session: id, epoch: ++epoch }, { kind: 'done' }, now);
              clock.touch(id, now);
              model.touch(id, now);
              break;
            }
            case 'lost': {
              const id = pick(o.pick);
              const record = id === undefined ? undefined : directory.get(id);
              if (id === undefined || record === undefined || !record.connected) break;
              directory.onCommand(
                { type: 'connectionLost', session: id, epoch: record.epoch },
                { kind: 'done' },
                now,
              );
              break;
            }
            case 'end': {
              const id = pick(o.pick);
              if (id === undefined) break;
              directory.onEffect({ kind: 'sessionEnded', session: id, reason: 'expired' });
              clock.forget(id);
              model.forget(id);
              break;
            }
            case 'touch': {
              const id = pick(o.pick);
              if (id === undefined) break;
              clock.touch(id, now);
              model.touch(id, now);
              break;
            }
            case 'settled': {
              const id = pick(o.pick);
              if (id === undefined) break;
              clock.settled(id);
              model.settled(id);
              break;
            }
            case 'leader':
              clock.becameLeader(now);
              model.becameLeader(now);
              break;
            case 'follower':
              clock.steppedDown();
              model.steppedDown();
              break;
            case 'check': {
              const got = clock.check(now, directory, (id) => held(id));
              const want = model.check(now, directory, (id) => held(id));
              for (const command of want) {
                if (command.type === 'connectionLost') decided.lost++;
                else decided.expired++;
              }
              const key = (c: Command) => JSON.stringify(c);
              expect(got.map(key).sort()).toEqual(want.map(key).sort());
              break;
            }
            case 'advance':
              now += o.ms;
              break;
          }
        }
      }),
      { numRuns: 300 },
    );
    // Not vacuous: the histories made both kinds of decision.
    expect(decided.lost).toBeGreaterThan(10);
    expect(decided.expired).toBeGreaterThan(10);
  });
});

/** The reference: the obvious clock that scans every session on every check. */
class ScanningClock {
  private leaderSinceMs = -1;
  private readonly lastSeenMs = new Map<SessionId, number>();
  private readonly proposedAtMs = new Map<SessionId, number>();

  constructor(private readonly options: LivenessOptions) {}

  becameLeader(nowMs: number): void {
    this.leaderSinceMs = nowMs;
    this.lastSeenMs.clear();
    this.proposedAtMs.clear();
  }

  steppedDown(): void {
    this.leaderSinceMs = -1;
    this.lastSeenMs.clear();
    this.proposedAtMs.clear();
  }

  touch(id: SessionId, nowMs: number): void {
    if (this.leaderSinceMs >= 0) this.lastSeenMs.set(id, nowMs);
  }

  forget(id: SessionId): void {
    this.lastSeenMs.delete(id);
    this.proposedAtMs.delete(id);
  }

  settled(id: SessionId): void {
    this.proposedAtMs.delete(id);
  }

  check(nowMs: number, directory: SessionDirectory, heldHere: (id: SessionId, epoch: number) => boolean) {
    if (this.leaderSinceMs < 0) return [];
    const commands: Command[] = [];
    for (const [id, record] of directory.sessions) {
      const proposedAt = this.proposedAtMs.get(id);
      if (proposedAt !== undefined && nowMs - proposedAt < this.options.retryMs) continue;
      if (record.connected) {
        if (heldHere(id, record.epoch)) continue;
        const silentSinceMs = Math.max(this.lastSeenMs.get(id) ?? 0, this.leaderSinceMs);
        if (nowMs - silentSinceMs < this.options.connectionTimeoutMs) continue;
        commands.push({ type: 'connectionLost', session: id, epoch: record.epoch });
      } else {
        const lostSinceMs = Math.max(record.lostAtMs, this.leaderSinceMs);
        if (nowMs - lostSinceMs < record.reconnectionWindowMs) continue;
        commands.push({ type: 'expireSession', session: id, epoch: record.epoch });
      }
      this.proposedAtMs.set(id, nowMs);
    }
    return commands;
  }
}

describe('liveness reports as deltas (HeldReporter → PeerHeldConnections)', () => {
  /** One follower reporting every 100 ms to a leader clock; `deliver` decides which reports arrive. */
  function wire(deliver: (reportNo: number) => boolean = () => true) {
    const { directory, clock } = setup();
    clock.becameLeader(0);
    const reporter = new HeldReporter(7);
    let reportNo = 0;
    const sent: { base: number; sessions: number; removed: number; applied: boolean }[] = [];
    const tick = (nowMs: number, held: [number, number][]) => {
      const no = ++reportNo;
      const report = reporter.next('leader', no, held);
      let applied = false;
      if (deliver(no)) {
        applied = clock.report('follower', { reportNo: no, ...report }, nowMs);
        if (applied) reporter.acked('leader', true);
        else reporter.resync('leader', no);
      }
      sent.push({
        base: report.base,
        sessions: report.sessions.length,
        removed: report.removed.length,
        applied,
      });
      return clock.check(nowMs, directory, nowhere);
    };
    return { tick, sent };
  }

  it('C6: a connection on a follower stays seen while only empty deltas travel, and is lost within the bound once dropped from its list', () => {
    const { tick, sent } = wire();
    for (let t = 100; t <= 10_000; t += 100) expect(tick(t, [[1, 0]]), `at ${t}`).toEqual([]);
    // The first report is the full list; every later one carries no session at all.
    expect(sent[0]).toMatchObject({ base: 0, sessions: 1 });
    expect(sent.slice(1).every((r) => r.base > 0 && r.sessions === 0 && r.removed === 0)).toBe(true);
    // The follower's gateway closed the connection (silently): the next report removes it. It was last
    // seen with the report at 10 000, so the leader declares it lost at 12 000 — not earlier, not later.
    const lost: Command[][] = [];
    for (let t = 10_100; t <= 12_000; t += 100) lost.push(tick(t, []));
    expect(sent.at(-lost.length)).toMatchObject({ removed: 1 });
    expect(lost.slice(0, -1).flat()).toEqual([]);
    expect(lost.at(-1)).toEqual([{ type: 'connectionLost', session: 1, epoch: 0 }]);
  });

  it('C6: after a lost report the leader refuses the next delta and the follower resends its full list; the connection stays seen', () => {
    const { tick, sent } = wire((no) => no !== 20);
    for (let t = 100; t <= 6_000; t += 100) expect(tick(t, [[1, 0]]), `at ${t}`).toEqual([]);
    expect(sent[20]).toMatchObject({ applied: false }); // report 21 builds on the lost report 20
    expect(sent[21]).toMatchObject({ base: 0, sessions: 1, applied: true });
  });

  it('C6: when a follower falls silent its connections are lost one bound after its last report', () => {
    const { tick } = wire((no) => no <= 10);
    const out: Command[][] = [];
    for (let t = 100; t <= 3_000; t += 100) out.push(tick(t, [[1, 0]]));
    // Last report applied at 1 000: lost at 3 000.
    expect(out.slice(0, -1).flat()).toEqual([]);
    expect(out.at(-1)).toEqual([{ type: 'connectionLost', session: 1, epoch: 0 }]);
  });

  it('C6: a connection held under an older epoch does not count for the current one', () => {
    const { tick } = wire();
    const out: Command[][] = [];
    for (let t = 100; t <= 2_000; t += 100) out.push(tick(t, [[1, 5]]));
    expect(out.at(-1)).toEqual([{ type: 'connectionLost', session: 1, epoch: 0 }]);
  });

  it('a leader that does not take deltas gets full lists, and a new leader starts from a full list', () => {
    const reporter = new HeldReporter(3);
    expect(reporter.next('a', 1, [[1, 0]])).toMatchObject({ base: 0, sessions: [[1, 0]] });
    reporter.acked('a', false);
    expect(reporter.next('a', 2, [[1, 0]])).toMatchObject({ base: 0, sessions: [[1, 0]] });
    reporter.acked('a', true);
    expect(
      reporter.next('a', 3, [
        [1, 0],
        [2, 0],
      ]),
    ).toMatchObject({ base: 2, sessions: [[2, 0]], removed: [] });
    expect(reporter.next('a', 4, [[2, 1]])).toMatchObject({ base: 3, sessions: [[2, 1]], removed: [[1, 0]] });
    expect(reporter.next('b', 5, [[2, 1]])).toMatchObject({ base: 0, sessions: [[2, 1]] });
  });

  it('C7: a list past its bound is refused', () => {
    const held = new PeerHeldConnections(2);
    const full = (sessions: [number, number][]) => ({
      reportNo: 1,
      base: 0,
      stream: 1,
      sessions,
      removed: [],
    });
    expect(
      held.apply(
        'f',
        full([
          [1, 0],
          [2, 0],
          [3, 0],
        ]),
        0,
        () => undefined,
      ),
    ).toBe(false);
    expect(
      held.apply(
        'f',
        full([
          [1, 0],
          [2, 0],
        ]),
        0,
        () => undefined,
      ),
    ).toBe(true);
    const delta = { reportNo: 2, base: 1, stream: 1, sessions: [[3, 0]] as [number, number][], removed: [] };
    expect(held.apply('f', delta, 100, () => undefined)).toBe(false);
    expect(held.apply('f', { ...delta, stream: 2, sessions: [] }, 100, () => undefined)).toBe(false);
    expect(held.seenMs(1, 0)).toBe(0);
  });
});
