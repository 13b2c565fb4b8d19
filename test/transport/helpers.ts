import type { Entry, Message, NodeId } from '../../src/raft/types.ts';
import type { TransportLimits } from '../../src/transport/limits.ts';
import {
  type PeerAddress,
  PeerTransport,
  type PeerTransportOptions,
  type TransportLogEvent,
} from '../../src/transport/peer-transport.ts';

export const secret = 'correct horse battery staple';
export const clusterId = 'test-cluster';

/** Short timers so the suite stays fast; the relations checkTransportLimits asserts still hold. */
export const fastLimits: Partial<TransportLimits> = {
  authTimeoutMs: 300,
  reconnectBackoffBaseMs: 10,
  reconnectBackoffMaxMs: 100,
  pingIntervalMs: 100,
  linkIdleTimeoutMs: 400,
  closeTimeoutMs: 100,
};

export interface Node {
  readonly transport: PeerTransport;
  readonly received: Message[];
  readonly logs: TransportLogEvent[];
}

export async function startNode(
  id: NodeId,
  overrides: Partial<PeerTransportOptions> = {},
  port = 0,
): Promise<Node> {
  const received: Message[] = [];
  const logs: TransportLogEvent[] = [];
  const transport = await PeerTransport.listen({
    id,
    clusterId,
    secret,
    listen: { host: '127.0.0.1', port },
    limits: fastLimits,
    log: (event) => logs.push(event),
    ...overrides,
  });
  transport.onMessages((messages) => received.push(...messages));
  return { transport, received, logs };
}

/** Tells every node where every other node listens. */
export function wire(nodes: readonly Node[], addresses?: ReadonlyMap<NodeId, PeerAddress>): void {
  const all = new Map(addresses ?? nodes.map((node) => [node.transport.id, node.transport.address]));
  for (const node of nodes) {
    node.transport.setPeers(new Map([...all].filter(([id]) => id !== node.transport.id)));
  }
}

export async function waitFor(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export async function fullyConnected(nodes: readonly Node[]): Promise<void> {
  await waitFor(
    () =>
      nodes.every((a) =>
        nodes.every(
          (b) =>
            a === b ||
            (a.transport.peerConnected(b.transport.id) && a.transport.peerReachable(b.transport.id)),
        ),
      ),
    'a fully connected mesh',
  );
}

export function entry(index: number, term: number, size: number): Entry {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (index * 7 + i) & 0xff;
  return { index, term, type: 0, data };
}

export function append(from: NodeId, to: NodeId, prevIndex: number, count: number, size = 16): Message {
  const entries: Entry[] = [];
  for (let k = 1; k <= count; k++) entries.push(entry(prevIndex + k, 2, size));
  return { type: 'append', from, to, term: 2, prevIndex, prevTerm: 2, entries, commit: prevIndex };
}

export function heartbeat(from: NodeId, to: NodeId, readRound: number): Message {
  return { type: 'heartbeat', from, to, term: 2, commit: 0, readRound };
}
