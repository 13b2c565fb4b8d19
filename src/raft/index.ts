export { confChangeContextValid, decodeConfChange, encodeConfChange } from './conf-change.ts';
export { defaultRaftConfig, raftDefaults } from './config.ts';
export { createPrng, randomInt } from './prng.ts';
export { RaftNode, type RaftStatus } from './raft-node.ts';
export * from './types.ts';
