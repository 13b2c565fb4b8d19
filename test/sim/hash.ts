// Small, fast, deterministic hashes for the simulator: payload fingerprints, the state machine's
// hash chain, the run's trace hash and seed derivation. Not for cryptography.

const fnvOffset = 0x811c9dc5;
const fnvPrime = 0x01000193;

/** FNV-1a over bytes. */
export function hashBytes(data: Uint8Array): number {
  let h = fnvOffset;
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i]!, fnvPrime);
  return h >>> 0;
}

/** FNV-1a over a string's UTF-16 code units. */
export function hashString(text: string): number {
  let h = fnvOffset;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), fnvPrime);
  return h >>> 0;
}

/** Folds a 32-bit value into a running hash (murmur3's mixing steps). */
export function mix(h: number, value: number): number {
  let k = Math.imul(value | 0, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) >>> 0;
}

/** A well-spread 32-bit seed for one random stream of a run (network, disk, node n, ...). */
export function deriveSeed(seed: number, ...salts: number[]): number {
  let h = mix(0x9747b28c, seed);
  for (const salt of salts) h = mix(h, salt);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Salts naming the random streams of a run, so adding draws to one never shifts another. */
export const Stream = {
  network: 1,
  disk: 2,
  workload: 3,
  faults: 4,
  node: 5,
  clocks: 6,
} as const;
