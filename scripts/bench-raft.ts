// Committed entries per second for a 3-node in-process cluster: 64-byte payloads, proposals batched per
// round, messages delivered in memory, the "disk" an array. Measures the core alone, so it must never be
// the product's bottleneck. Usage: npm run bench:raft [-- --seconds 5 --batch 1000 --nodes 3]

import { parseArgs } from 'node:util';
import { createPrng, defaultRaftConfig, type Message, type NodeId, RaftNode } from '../src/raft/index.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    batch: { type: 'string', default: '1000' },
    nodes: { type: 'string', default: '3' },
    runs: { type: 'string', default: '3' },
  },
});
const seconds = Number(values.seconds);
const batch = Number(values.batch);
const nodeCount = Number(values.nodes);
const runs = Number(values.runs);

function runOnce(durationMs: number): { committed: number; elapsedMs: number; messages: number } {
  const ids: NodeId[] = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`);
  const nodes = new Map<NodeId, RaftNode>();
  const durableEntries = new Map<NodeId, number>();
  for (const [i, id] of ids.entries()) {
    const snapshot = {
      meta: { index: 0, term: 0, conf: { voters: ids, learners: [] } },
      data: new Uint8Array(),
    };
    nodes.set(
      id,
      new RaftNode(defaultRaftConfig(id, createPrng(i + 1)), {
        hardState: { term: 0, vote: null, commit: 0 },
        snapshot,
        entries: [],
      }),
    );
    durableEntries.set(id, 0);
  }
  let messages = 0;
  const pump = (): void => {
    for (;;) {
      const inFlight: Message[] = [];
      for (const [id, node] of nodes) {
        if (!node.hasReady()) continue;
        const rd = node.ready();
        for (const m of rd.messagesEarly) inFlight.push(m);
        durableEntries.set(id, (durableEntries.get(id) ?? 0) + rd.entries.length);
        for (const m of rd.messages) inFlight.push(m);
        node.advance();
      }
      if (inFlight.length === 0) return;
      messages += inFlight.length;
      for (const m of inFlight) nodes.get(m.to)!.step(m);
    }
  };
  const first = nodes.get('n1')!;
  first.campaign();
  pump();
  if (first.status().role !== 'leader') throw new Error('n1 did not become leader');
  const payload = new Uint8Array(64).fill(7);
  const startCommit = first.status().commit;
  const start = performance.now();
  let now = start;
  while (now - start < durationMs) {
    for (let i = 0; i < batch; i++) {
      const r = first.propose(payload);
      if (!r.ok) throw new Error(`propose failed: ${r.code}`);
    }
    pump();
    now = performance.now();
  }
  return { committed: first.status().commit - startCommit, elapsedMs: now - start, messages };
}

console.log(
  `bench-raft: ${nodeCount} nodes, 64-byte entries, ${batch} proposals per round, ${runs} runs × ${seconds}s`,
);
const rates: number[] = [];
for (let r = 0; r < runs; r++) {
  const { committed, elapsedMs, messages } = runOnce(seconds * 1000);
  const rate = committed / (elapsedMs / 1000);
  rates.push(rate);
  console.log(
    `  run ${r + 1}/${runs}: ${committed} entries in ${elapsedMs.toFixed(0)} ms → ${Math.round(rate)} entries/s (${messages} messages)`,
  );
}
rates.sort((a, b) => a - b);
const median = rates[Math.floor(rates.length / 2)]!;
console.log('\n| metric | value |\n|---|---|');
console.log(`| committed entries/s (median of ${runs}) | ${Math.round(median).toLocaleString('en-US')} |`);
console.log(`| target | ≥ 200,000 |`);
