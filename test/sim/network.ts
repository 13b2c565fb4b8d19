// The simulated network: which links are up (partitions may be one-way), how often a message is
// dropped or duplicated, and how long each copy takes. Latency is drawn per copy, so messages on
// one link overtake each other — reordering comes for free. Links are indexed by node slot.

import { assert } from '../../src/assert.ts';

export const nodeSlotsMax = 16;

export interface NetworkConditions {
  /** Probability that a copy is lost. */
  dropRate: number;
  /** Probability that a message is delivered twice (as two separate copies). */
  duplicateRate: number;
  /** Latency of a copy, in virtual time units, uniform in [latencyMin, latencyMax]. */
  latencyMin: number;
  latencyMax: number;
  /** Probability that a copy is held back much longer (up to `slowLatencyMax`): deep reordering. */
  slowRate: number;
  slowLatencyMax: number;
  /**
   * Whether copies on one link may overtake each other. Off, a link is FIFO like the real transport's
   * WebSocket (a later message never arrives before an earlier one); on, latency alone decides.
   */
  reorder: boolean;
}

export const calmNetwork: NetworkConditions = {
  dropRate: 0,
  duplicateRate: 0,
  latencyMin: 2,
  latencyMax: 8,
  slowRate: 0,
  slowLatencyMax: 8,
  reorder: false,
};

export class Network {
  /** blocked[from * nodeSlotsMax + to]: messages from `from` to `to` are lost. */
  private readonly blocked = new Uint8Array(nodeSlotsMax * nodeSlotsMax);
  /** Arrival time of the latest copy on each link, to keep links FIFO when reordering is off. */
  private readonly lastArrival = new Float64Array(nodeSlotsMax * nodeSlotsMax);
  conditions: NetworkConditions;

  constructor(
    conditions: NetworkConditions,
    private readonly random: () => number,
  ) {
    this.conditions = { ...conditions };
  }

  isBlocked(from: number, to: number): boolean {
    return this.blocked[from * nodeSlotsMax + to] === 1;
  }

  setBlocked(from: number, to: number, blocked: boolean): void {
    assert(from < nodeSlotsMax && to < nodeSlotsMax, `network: slot out of range ${from}→${to}`);
    this.blocked[from * nodeSlotsMax + to] = blocked ? 1 : 0;
  }

  /** Both directions between two slots. */
  cut(a: number, b: number): void {
    this.setBlocked(a, b, true);
    this.setBlocked(b, a, true);
  }

  /** Only these links stay up; every other link between the given slots is cut. */
  allowOnly(slots: readonly number[], connected: (a: number, b: number) => boolean): void {
    for (const a of slots) {
      for (const b of slots) if (a !== b) this.setBlocked(a, b, !connected(a, b));
    }
  }

  /** Splits the slots into groups that only talk within themselves. */
  partition(groups: readonly (readonly number[])[]): void {
    const groupOf = new Map<number, number>();
    groups.forEach((group, g) => {
      for (const slot of group) groupOf.set(slot, g);
    });
    const all = [...groupOf.keys()];
    this.allowOnly(all, (a, b) => groupOf.get(a) === groupOf.get(b));
  }

  healPartitions(): void {
    this.blocked.fill(0);
  }

  /**
   * The delivery delays of one message from `from` to `to`: none when it is lost, two when it is
   * duplicated. Draws a fixed number of random values per call so that one fault does not shift the
   * randomness of everything after it more than it must.
   */
  route(from: number, to: number, now: number): number[] {
    const c = this.conditions;
    const lostDraw = this.random();
    const dupDraw = this.random();
    if (this.isBlocked(from, to)) return [];
    const delays: number[] = [];
    const copies = dupDraw < c.duplicateRate ? 2 : 1;
    for (let k = 0; k < copies; k++) {
      if (k === 0 && lostDraw < c.dropRate) continue;
      let delay = this.latency();
      if (!c.reorder) {
        const link = from * nodeSlotsMax + to;
        delay = Math.max(delay, this.lastArrival[link]! - now);
        this.lastArrival[link] = now + delay;
      }
      delays.push(delay);
    }
    return delays;
  }

  private latency(): number {
    const c = this.conditions;
    const slow = this.random() < c.slowRate;
    const hi = slow ? Math.max(c.slowLatencyMax, c.latencyMax) : c.latencyMax;
    return c.latencyMin + Math.floor(this.random() * (hi - c.latencyMin + 1));
  }
}
