// Per-connection and per-address brakes for the client port (C7): a token bucket on frames, and a
// record of failed logins by remote address that delays each further failure's answer. Time is passed
// in, so both are tested without clocks.

/** A token bucket: `ratePerSecond` sustained, `burst` at once. */
export class TokenBucket {
  private tokens: number;
  private lastMs: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.lastMs = nowMs;
  }

  /** Takes one token; false when the bucket is empty (the caller is over its rate). */
  take(nowMs: number): boolean {
    const elapsedMs = nowMs - this.lastMs;
    if (elapsedMs > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
      this.lastMs = nowMs;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export interface LoginThrottleOptions {
  /** Delay of the answer to the first failure from an address; doubles with each further failure. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** An address with no failure for this long starts afresh. */
  readonly forgetAfterMs: number;
  /** Addresses remembered at once; the oldest record is dropped first. */
  readonly addressesMax: number;
}

export const loginThrottleDefaults: LoginThrottleOptions = {
  baseDelayMs: 250,
  maxDelayMs: 5_000,
  forgetAfterMs: 60_000,
  addressesMax: 10_000,
};

interface Failures {
  count: number;
  lastMs: number;
}

/** Failed logins, counted in total and per remote address; each failure's answer waits `delayMs`. */
export class LoginThrottle {
  private readonly byAddress = new Map<string, Failures>();
  private failuresTotal = 0;
  readonly options: LoginThrottleOptions;

  constructor(options: Partial<LoginThrottleOptions> = {}) {
    this.options = { ...loginThrottleDefaults, ...options };
  }

  get failures(): number {
    return this.failuresTotal;
  }

  /** Failures on record for `address` (after forgetting old ones). */
  failuresOf(address: string, nowMs: number): number {
    const record = this.byAddress.get(address);
    if (record === undefined) return 0;
    if (nowMs - record.lastMs > this.options.forgetAfterMs) {
      this.byAddress.delete(address);
      return 0;
    }
    return record.count;
  }

  /** Records a failure; returns how long to wait before answering it. */
  fail(address: string, nowMs: number): number {
    this.failuresTotal++;
    const count = this.failuresOf(address, nowMs) + 1;
    this.byAddress.delete(address); // re-insert: Map order is then least recently failed first
    if (this.byAddress.size >= this.options.addressesMax) {
      const oldest = this.byAddress.keys().next().value;
      if (oldest !== undefined) this.byAddress.delete(oldest);
    }
    this.byAddress.set(address, { count, lastMs: nowMs });
    return Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** Math.min(count - 1, 20));
  }

  succeed(address: string): void {
    this.byAddress.delete(address);
  }
}
