// What the workloads of `npm run bench` need from a lock service, so the same code drives raftlock and etcd.

/** One client session of the service under test (raftlock session; etcd lease kept alive). */
export interface BenchSession {
  /** Resolves once this session holds `name`. */
  lock(name: string): Promise<void>;
  /** Releases `name`, which this session holds. */
  unlock(name: string): Promise<void>;
  close(): Promise<void>;
}

export interface BenchTarget {
  readonly system: string;
  open(): Promise<BenchSession>;
}

/** A local 3-node cluster of the service under test. */
export interface BenchCluster {
  readonly system: string;
  readonly size: number;
  /** Index of the current leader; -1 when none is known. */
  leaderIndex(): Promise<number>;
  waitForLeader(timeoutMs: number): Promise<number>;
  /** Client endpoints with the leader's first. */
  serversLeaderFirst(): Promise<string[]>;
  kill9(i: number): void;
  restart(i: number): void;
  target(servers: readonly string[]): BenchTarget;
  /** Process ids of the running nodes (for CPU time per cycle). */
  pids(): number[];
  stop(graceMs?: number): Promise<void>;
}
