// Defaults for the core's knobs. Ticks are the driver's choice of unit: the node ticks every 100 ms, so
// the election timeout is 1–2 s and heartbeats go out every 100 ms.

import type { NodeId, RaftConfig } from './types.ts';

export const raftDefaults = {
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  appendBytesMax: 1024 * 1024,
  entriesPerAppendMax: 4096,
  inflightAppendsMax: 64,
  snapshotChunkBytesMax: 1024 * 1024,
  snapshotBytesMax: 2 * 1024 * 1024 * 1024 - 1,
  uncommittedEntriesMax: 1_000_000,
  pendingReadsMax: 100_000,
  learnerCatchUpLagMax: 1000,
  checkQuorum: true,
  preVote: true,
  deferCommitBroadcast: false,
} as const;

export function defaultRaftConfig(
  id: NodeId,
  random: () => number,
  overrides: Partial<RaftConfig> = {},
): RaftConfig {
  return { ...raftDefaults, id, random, ...overrides };
}
