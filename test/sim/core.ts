// The one place the simulator binds to the Raft core. Everything else in test/sim talks to `SimCore`,
// the slice of RaftNode's API the simulator drives.

import type { ConfChange, PersistentState, RaftConfig } from '../../src/raft/index.ts';
import { decodeConfChange, defaultRaftConfig, RaftNode } from '../../src/raft/index.ts';

export type SimCore = RaftNode;
export type CoreStatus = ReturnType<RaftNode['status']>;

export function createCore(config: RaftConfig, state: PersistentState): SimCore {
  return new RaftNode(config, state);
}

export function simRaftConfig(id: string, random: () => number, overrides: Partial<RaftConfig>): RaftConfig {
  return defaultRaftConfig(id, random, overrides);
}

/** Decodes the payload of a membership-change entry (the core's encoding). */
export function decodeChange(data: Uint8Array): ConfChange {
  return decodeConfChange(data);
}
