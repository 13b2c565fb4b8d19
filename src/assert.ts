// Assertions are for programmer errors: a broken invariant crashes the process instead of
// corrupting replicated state. Operating errors (bad input, lost peers) are answered, never asserted.

export class AssertionError extends Error {
  override readonly name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertNever(value: never, what = 'value'): never {
  throw new AssertionError(`unexpected ${what}: ${JSON.stringify(value)}`);
}
