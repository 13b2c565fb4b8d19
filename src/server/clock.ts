// The node's clock: every time the server reasons with (liveness deadlines, the leader's entry stamps,
// acquire deadlines, forwarding retries) comes from here, never from `Date.now()` directly.
//
// Which clock: by default a monotonic clock anchored to the wall clock once, when the process starts —
// `wall time at start + performance.now() elapsed since`. Anchoring keeps the entry stamps of different
// leaders comparable (to the accuracy of the hosts' clocks at their start), which acquire deadlines
// need; counting from `performance.now()` keeps a wall-clock step while the process runs (an NTP step,
// an operator's `date -s`, a VM resume) from stretching or shrinking any duration the node measures.
// That matters for safety: the leader releases a silent session's locks once `connectionTimeoutMs`
// has passed on its clock, and a client counts `isOwned()` (S10) on its own monotonic clock, so a
// leader whose clock jumped forward would release locks that clients still rightly report as owned.
// A step is only picked up by the next start of the process (as a skew against the other nodes, which
// the lock table tolerates: its time never moves back, and liveness counts from the leader's own start).
//
// For chaos testing (scripts/chaos.ts), the environment can inject wall-clock steps:
//   RAFTLOCK_CLOCK_FILE=path   a file holding an offset in ms added to the wall clock; read at start
//                              and again on every SIGUSR2 (the handler exists only with this variable)
//   RAFTLOCK_CLOCK=wall        use the (offset) wall clock itself instead of the monotonic one — the
//                              unsafe choice, kept so the chaos run can show what it breaks.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export type ClockMode = 'monotonic' | 'wall';

export interface Clock {
  /** Milliseconds since the epoch, as the node counts time. */
  now(): number;
}

export class NodeClock implements Clock {
  private wallOffsetMs: number;
  private readonly anchorMs: number;
  private readonly anchorPerfMs: number;

  constructor(
    readonly mode: ClockMode = 'monotonic',
    wallOffsetMs = 0,
    private readonly wall: () => number = Date.now,
    private readonly monotonic: () => number = () => performance.now(),
  ) {
    this.wallOffsetMs = wallOffsetMs;
    this.anchorPerfMs = this.monotonic();
    this.anchorMs = this.wall() + wallOffsetMs;
  }

  now(): number {
    if (this.mode === 'wall') return this.wallNow();
    return Math.floor(this.anchorMs + (this.monotonic() - this.anchorPerfMs));
  }

  /** The (offset) wall clock: what `Date.now()` would say on a host whose clock was stepped. */
  wallNow(): number {
    return this.wall() + this.wallOffsetMs;
  }

  /** Steps the wall clock to `offsetMs` from the host's; the monotonic clock ignores it until restart. */
  setWallOffset(offsetMs: number): void {
    this.wallOffsetMs = offsetMs;
  }

  get wallOffset(): number {
    return this.wallOffsetMs;
  }
}

function readOffsetMs(path: string): number {
  try {
    const value = Number(readFileSync(path, 'utf8').trim());
    return Number.isSafeInteger(value) ? value : 0;
  } catch {
    return 0;
  }
}

/** The process's clock, configured from the environment (see the header). */
export function clockFromEnv(env: NodeJS.ProcessEnv): NodeClock {
  const mode: ClockMode = env.RAFTLOCK_CLOCK === 'wall' ? 'wall' : 'monotonic';
  const file = env.RAFTLOCK_CLOCK_FILE;
  if (file === undefined || file === '') return new NodeClock(mode);
  const clock = new NodeClock(mode, readOffsetMs(file));
  process.on('SIGUSR2', () => clock.setWallOffset(readOffsetMs(file)));
  return clock;
}

export const nodeClock: NodeClock = clockFromEnv(process.env);
