// A linearizability checker: the Wing–Gong search with Lowe's improvements (the "WGL" algorithm of
// Lowe, "Testing for linearizability", 2017; the same search as porcupine and knossos' wgl).
//
// Every operation has a call time and a return time (Infinity when its outcome is unknown: it may take
// effect at any moment after its call). The search walks the history's call/return entries in time
// order, keeping a linked list of the entries not yet linearized: at a call it tries to apply that
// operation to the model now (lifting it out of the list), at a return whose call was not linearized it
// backtracks. A cache of (set of linearized operations, model state) pairs already explored cuts the
// search from factorial to, in practice, close to linear for histories with little concurrency.
// Histories of independent objects (one lock each) are checked one object at a time (P-compositionality).

export interface Model<State, Input> {
  readonly init: State;
  /** The state after applying `input`, or null if the operation cannot take effect in `state`. */
  step(state: State, input: Input): State | null;
  /** A string that is equal for equal states (the cache key). */
  key(state: State): string;
}

export interface Operation<Input> {
  readonly input: Input;
  readonly callMs: number;
  /** Infinity when the outcome is unknown. */
  readonly returnMs: number;
  /** Shown in reports. */
  readonly label?: string;
}

export type LinearizabilityResult =
  | { readonly kind: 'ok'; readonly steps: number }
  | {
      readonly kind: 'violation';
      readonly steps: number;
      /** The operation that could not be linearized before it returned, on the deepest path explored. */
      readonly stuckAt: number;
      /** The operations linearized on that path, in order. */
      readonly prefix: readonly number[];
    }
  | { readonly kind: 'unknown'; readonly steps: number };

interface Entry {
  readonly op: number;
  readonly isCall: boolean;
  readonly timeMs: number;
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

export function checkLinearizable<State, Input>(
  model: Model<State, Input>,
  operations: readonly Operation<Input>[],
  options: { readonly stepsMax?: number } = {},
): LinearizabilityResult {
  const stepsMax = options.stepsMax ?? 5_000_000;
  for (const [index, op] of operations.entries()) {
    if (!(op.callMs <= op.returnMs)) throw new Error(`operation ${index} returns before it is called`);
  }
  // Entries in time order; at equal times calls come first (such operations count as concurrent).
  const entries: Entry[] = [];
  operations.forEach((op, index) => {
    const call: Entry = { op: index, isCall: true, timeMs: op.callMs, match: null, prev: null, next: null };
    const ret: Entry = { op: index, isCall: false, timeMs: op.returnMs, match: null, prev: null, next: null };
    call.match = ret;
    entries.push(call, ret);
  });
  entries.sort((a, b) => a.timeMs - b.timeMs || Number(b.isCall) - Number(a.isCall) || a.op - b.op);
  const head: Entry = { op: -1, isCall: false, timeMs: -Infinity, match: null, prev: null, next: null };
  let last = head;
  for (const entry of entries) {
    last.next = entry;
    entry.prev = last;
    last = entry;
  }

  const lift = (entry: Entry) => {
    entry.prev!.next = entry.next;
    if (entry.next !== null) entry.next.prev = entry.prev;
    const match = entry.match!;
    match.prev!.next = match.next;
    if (match.next !== null) match.next.prev = match.prev;
  };
  const unlift = (entry: Entry) => {
    const match = entry.match!;
    match.prev!.next = match;
    if (match.next !== null) match.next.prev = match;
    entry.prev!.next = entry;
    if (entry.next !== null) entry.next.prev = entry;
  };

  // The set of linearized operations is cached by a 64-bit Zobrist hash (two random 32-bit words per
  // operation, XORed in and out) plus its size: a bitset per cache entry would cost O(n) bytes each.
  // A collision could only prune a path wrongly; at 2^-64 per pair it is not a practical concern.
  const prng = seededWords(operations.length);
  const cache = new Set<string>();
  const stack: { entry: Entry; state: State }[] = [];
  let state = model.init;
  let hashHigh = 0;
  let hashLow = 0;
  let entry = head.next;
  let steps = 0;
  let deepest: { stuckAt: number; prefix: number[] } = { stuckAt: -1, prefix: [] };

  while (head.next !== null) {
    if (++steps > stepsMax) return { kind: 'unknown', steps };
    if (entry === null) throw new Error('wgl: ran off the end of the history');
    if (entry.isCall) {
      const next = model.step(state, operations[entry.op]!.input);
      if (next !== null) {
        const high = (hashHigh ^ prng.high[entry.op]!) >>> 0;
        const low = (hashLow ^ prng.low[entry.op]!) >>> 0;
        const key = `${high.toString(36)}.${low.toString(36)}.${stack.length + 1}|${model.key(next)}`;
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ entry, state });
          state = next;
          hashHigh = high;
          hashLow = low;
          lift(entry);
          entry = head.next;
          continue;
        }
      }
      entry = entry.next;
      continue;
    }
    // A return whose operation is not linearized yet: this path fails; undo the last choice.
    if (stack.length >= deepest.prefix.length)
      deepest = { stuckAt: entry.op, prefix: stack.map((item) => item.entry.op) };
    const top = stack.pop();
    if (top === undefined) return { kind: 'violation', steps, ...deepest };
    state = top.state;
    hashHigh = (hashHigh ^ prng.high[top.entry.op]!) >>> 0;
    hashLow = (hashLow ^ prng.low[top.entry.op]!) >>> 0;
    unlift(top.entry);
    entry = top.entry.next;
  }
  return { kind: 'ok', steps };
}

/** Two arrays of random 32-bit words (xorshift32, fixed seed: runs are repeatable). */
function seededWords(count: number): { high: Uint32Array; low: Uint32Array } {
  let x = 0x9e3779b9;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const high = new Uint32Array(count);
  const low = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    high[i] = next();
    low[i] = next();
  }
  return { high, low };
}

// ---------------------------------------------------------------- the mutex model

/** One lock: who holds it (a grant id) and the highest sequence granted so far. */
export interface MutexState {
  readonly owner: string | null;
  readonly sequenceMax: number;
}

export type MutexInput =
  | { readonly kind: 'acquire'; readonly grant: string; readonly sequence: number }
  | { readonly kind: 'release'; readonly grant: string };

/** A lock as SPEC.md S2/S8 describe it: one owner at a time, each grant's sequence above all earlier. */
export const mutexModel: Model<MutexState, MutexInput> = {
  init: { owner: null, sequenceMax: 0 },
  step(state, input) {
    if (input.kind === 'acquire') {
      if (state.owner !== null || input.sequence <= state.sequenceMax) return null;
      return { owner: input.grant, sequenceMax: input.sequence };
    }
    if (state.owner !== input.grant) return null;
    return { owner: null, sequenceMax: state.sequenceMax };
  },
  key: (state) => `${state.owner ?? '-'}@${state.sequenceMax}`,
};
