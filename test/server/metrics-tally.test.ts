// The node's own counters and histogram (src/server/metrics.ts) scrape exactly as prom-client's would
// for the same events: same lines, same values, same bucket boundaries.

import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { BucketHistogram, Tally } from '../../src/server/metrics.ts';

const bounds = [0.001, 0.01, 0.1, 1, 10];
const observations = [0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 1, 3, 10, 10.5, 3600];

describe('metrics', () => {
  it('BucketHistogram scrapes as prom-client Histogram does, boundary values in the lower bucket', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const fast = new BucketHistogram(ours, 'h_seconds', 'help text', bounds);
    const reference = new Histogram({
      name: 'h_seconds',
      help: 'help text',
      buckets: bounds,
      registers: [theirs],
    });
    for (const value of observations) {
      fast.observe(value);
      reference.observe(value);
    }
    const text = await ours.metrics();
    expect(text).toBe(await theirs.metrics());
    expect(text).toContain('h_seconds_bucket{le="0.001"} 3');
    expect(text).toContain('h_seconds_count 12');
    // Reset: as a histogram that never observed anything.
    fast.reset();
    const fresh = new Registry();
    new Histogram({ name: 'h_seconds', help: 'help text', buckets: bounds, registers: [fresh] });
    expect(await ours.metrics()).toBe(await fresh.metrics());
  });

  it('Tally scrapes as prom-client Counter does, with and without a label, across scrapes', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const plain = new Tally(ours, 'c_total', 'plain');
    const labelled = new Tally(ours, 'r_total', 'by reason', 'reason');
    const plainRef = new Counter({ name: 'c_total', help: 'plain', registers: [theirs] });
    const labelledRef = new Counter({
      name: 'r_total',
      help: 'by reason',
      labelNames: ['reason'],
      registers: [theirs],
    });
    for (const round of [1, 2]) {
      plain.add(3 * round);
      plainRef.inc(3 * round);
      for (const reason of ['unlock', 'expired', 'unlock']) {
        labelled.addFor(reason);
        labelledRef.inc({ reason });
      }
      const text = await ours.metrics();
      expect(text).toBe(await theirs.metrics());
    }
    expect(await ours.metrics()).toContain('r_total{reason="unlock"} 4');
    expect(await ours.metrics()).toContain('c_total 9');
  });
});
