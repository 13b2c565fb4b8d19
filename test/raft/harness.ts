// A minimal lock-step cluster for unit tests of the core: perfect network, instant disk. The fault-injecting
// simulator lives in test/sim; this one keeps single-rule tests short and readable.

import {
  createPrng,
  defaultRaftConfig,
  type Entry,
  type Message,
  type NodeId,
  type PersistentState,
  type RaftConfig,
  RaftNode,
  type ReadState,
  type Snapshot,
} from '../../src/raft/index.ts';

export interface Member {
  node: RaftNode;
  durable: { hardState: PersistentState['hardState']; snapshot: Snapshot; entries: Entry[] };
  applied: Entry[];
  readStates: ReadState[];
}

export class LockstepCluster {
  readonly members = new Map<NodeId, Member>();
  /** Directed links that drop everything: "a>b". */
  readonly cut = new Set<string>();
  delivered = 0;

  constructor(
    ids: NodeId[],
    private readonly seed = 1,
    private readonly overrides: Partial<RaftConfig> = {},
  ) {
    for (const id of ids) this.add(id, ids);
  }

  add(id: NodeId, voters: NodeId[]): Member {
    const snapshot: Snapshot = {
      meta: { index: 0, term: 0, conf: { voters: [...voters].sort(), learners: [] } },
      data: new Uint8Array(),
    };
    const durable = { hardState: { term: 0, vote: null, commit: 0 }, snapshot, entries: [] as Entry[] };
    const member: Member = { node: this.makeNode(id, durable), durable, applied: [], readStates: [] };
    this.members.set(id, member);
    return member;
  }

  private makeNode(id: NodeId, durable: Member['durable']): RaftNode {
    const random = createPrng(this.seed * 1000 + id.charCodeAt(id.length - 1));
    return new RaftNode(defaultRaftConfig(id, random, this.overrides), {
      ...durable,
      entries: [...durable.entries],
    });
  }

  restart(id: NodeId): void {
    const m = this.get(id);
    m.node = this.makeNode(id, m.durable);
    m.applied = [];
  }

  get(id: NodeId): Member {
    const m = this.members.get(id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  }

  leader(): RaftNode | undefined {
    for (const m of this.members.values()) if (m.node.status().role === 'leader') return m.node;
    return undefined;
  }

  isolate(id: NodeId): void {
    for (const other of this.members.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** Processes Readies and delivers messages until the cluster is quiet. */
  settle(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      const inFlight: Message[] = [];
      for (const m of this.members.values()) {
        while (m.node.hasReady()) {
          const rd = m.node.ready();
          inFlight.push(...rd.messagesEarly);
          if (rd.snapshot) {
            m.durable.snapshot = rd.snapshot;
            m.durable.entries = m.durable.entries.filter((e) => e.index > rd.snapshot!.meta.index);
          }
          if (rd.entries.length > 0) {
            const first = rd.entries[0]!.index;
            m.durable.entries = m.durable.entries.filter((e) => e.index < first).concat(rd.entries);
          }
          if (rd.hardState) m.durable.hardState = rd.hardState;
          inFlight.push(...rd.messages);
          if (rd.snapshot) m.applied = [];
          m.applied.push(...rd.committedEntries);
          m.readStates.push(...rd.readStates);
          m.node.advance();
        }
      }
      if (inFlight.length === 0) return;
      for (const msg of inFlight) {
        if (this.cut.has(`${msg.from}>${msg.to}`)) continue;
        const target = this.members.get(msg.to);
        if (target === undefined) continue;
        this.delivered++;
        target.node.step(msg);
      }
    }
    throw new Error('cluster did not settle');
  }

  tick(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const m of this.members.values()) m.node.tick();
      this.settle();
    }
  }

  /** Ticks until some node is leader. */
  elect(maxTicks = 200): RaftNode {
    for (let i = 0; i < maxTicks; i++) {
      const l = this.leader();
      if (l) return l;
      this.tick();
    }
    throw new Error('no leader elected');
  }
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array): string => new TextDecoder().decode(b);
