// The node's injected clock (src/server/clock.ts), which the chaos nemesis steps: the monotonic clock the
// node uses ignores wall-clock steps while the process runs, so the leader's liveness decisions (C6) stay
// in step with the clients' own monotonic isOwned() deadlines (S10); the wall clock would not.

import { describe, expect, it } from 'vitest';
import { LockTable } from '../../src/locks/index.ts';
import { NodeClock } from '../../src/server/clock.ts';
import { LivenessClock, SessionDirectory } from '../../src/server/liveness.ts';

/** A host whose wall clock and monotonic clock the test moves by hand. */
function host(startWallMs = 1_700_000_000_000) {
  const time = { wallMs: startWallMs, monotonicMs: 5_000 };
  return {
    time,
    advance(ms: number) {
      time.wallMs += ms;
      time.monotonicMs += ms;
    },
    clock: (mode: 'monotonic' | 'wall', offsetMs = 0) =>
      new NodeClock(
        mode,
        offsetMs,
        () => time.wallMs,
        () => time.monotonicMs,
      ),
  };
}

describe('NodeClock', () => {
  it('starts at wall time (plus the injected offset) and then counts monotonic time', () => {
    const h = host();
    const clock = h.clock('monotonic', 2_000);
    expect(clock.now()).toBe(h.time.wallMs + 2_000);
    h.advance(1_500);
    expect(clock.now()).toBe(h.time.wallMs + 2_000);
  });

  it('a wall-clock step moves the wall reading only; the monotonic clock ignores it until restart', () => {
    const h = host();
    const clock = h.clock('monotonic');
    const before = clock.now();
    clock.setWallOffset(60_000); // what SIGUSR2 does after the nemesis rewrote the clock file
    h.time.wallMs -= 30_000; // and an NTP step backwards on the host
    expect(clock.now()).toBe(before);
    expect(clock.wallNow()).toBe(h.time.wallMs + 60_000);
    // A restart anchors on the stepped wall clock: a skew against the other nodes from then on.
    expect(h.clock('monotonic', 60_000).now()).toBe(h.time.wallMs + 60_000);
  });

  it('in wall mode every step shows at once', () => {
    const h = host();
    const clock = h.clock('wall');
    const before = clock.now();
    clock.setWallOffset(60_000);
    expect(clock.now()).toBe(before + 60_000);
  });

  it('C6, S10: a forward wall step on the leader releases nobody early with the monotonic clock, but would with the wall clock', () => {
    const decisions = (mode: 'monotonic' | 'wall') => {
      const h = host();
      const clock = h.clock(mode);
      const table = new LockTable();
      const directory = new SessionDirectory();
      const open = { type: 'openSession', principal: 'p', reconnectionWindowMs: 30_000 } as const;
      const out = table.apply(1, { timeMs: clock.now(), commands: [open] });
      directory.onCommand(open, out.results[0]!, clock.now());
      const liveness = new LivenessClock({
        connectionTimeoutMs: 2_000,
        retryMs: 1_000,
        proposalsPerCheckMax: 100,
      });
      liveness.becameLeader(clock.now());
      // The session's gateway reports it every 100 ms; the wall clock steps 60 s forward in between.
      for (let i = 0; i < 10; i++) {
        liveness.touch(1, clock.now());
        h.advance(100);
        if (i === 5) clock.setWallOffset(60_000);
        const commands = liveness.check(clock.now(), directory, () => false);
        if (commands.length > 0) return commands;
      }
      return [];
    };
    expect(decisions('monotonic')).toEqual([]);
    expect(decisions('wall')).toEqual([{ type: 'connectionLost', session: 1, epoch: 0 }]);
  });
});
