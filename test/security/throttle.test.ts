// C7: per-connection frame rate, and failed logins delayed and counted.

import { describe, expect, it } from 'vitest';
import { LoginThrottle, TokenBucket } from '../../src/security/throttle.ts';

describe('token bucket', () => {
  it('C7: allows the burst, then the sustained rate, and refuses beyond', () => {
    const bucket = new TokenBucket(10, 5, 0);
    for (let i = 0; i < 5; i++) expect(bucket.take(0)).toBe(true);
    expect(bucket.take(0)).toBe(false);
    expect(bucket.take(100)).toBe(true); // 100 ms at 10/s = one token
    expect(bucket.take(100)).toBe(false);
    expect(bucket.take(10_000)).toBe(true);
    for (let i = 0; i < 4; i++) expect(bucket.take(10_000)).toBe(true); // refilled to the burst, no more
    expect(bucket.take(10_000)).toBe(false);
  });
});

describe('login throttle', () => {
  it('C7: each failure from an address doubles the delay up to the cap; success and time forget', () => {
    const throttle = new LoginThrottle({ baseDelayMs: 100, maxDelayMs: 1_000, forgetAfterMs: 5_000 });
    expect([1, 2, 3, 4, 5].map(() => throttle.fail('a', 0))).toEqual([100, 200, 400, 800, 1_000]);
    expect(throttle.fail('b', 0)).toBe(100);
    expect(throttle.failures).toBe(6);
    expect(throttle.failuresOf('a', 1)).toBe(5);
    throttle.succeed('a');
    expect(throttle.fail('a', 2)).toBe(100);
    expect(throttle.fail('b', 10_000)).toBe(100); // forgotten after 5 s
  });

  it('C7: remembers a bounded number of addresses', () => {
    const throttle = new LoginThrottle({ addressesMax: 3 });
    for (const address of ['a', 'b', 'c', 'd']) throttle.fail(address, 0);
    expect(throttle.failuresOf('a', 0)).toBe(0);
    expect(throttle.failuresOf('d', 0)).toBe(1);
    expect(throttle.failures).toBe(4);
  });
});
