// `GET /metrics`: the node's metrics in Prometheus text format, through prom-client, on a registry of
// the node's own (several nodes may share a process in tests).
//
// Levels (term, indexes, locks held, sessions, queue depths) are read when scraped; events (grants,
// releases by reason, wait and hold times, expiries, reconnects, elections) are counted from what the
// node applies and how its role changes, on every node alike — each replica applies every entry, so a
// scrape of any node shows the cluster's lock traffic. Wait and hold times use the entries' leader
// timestamps, so every replica measures the same durations. docs/operations.md lists every metric.

import { Counter, collectDefaultMetrics, Gauge, type MetricValueWithName, Registry } from 'prom-client';
import type { Effect, Entry as LockEntry, Result } from '../locks/index.ts';
import type { NodeStatus } from '../protocol.ts';
import type { SoftState } from '../raft/index.ts';
import type { NodeObserver } from './node.ts';

/** Seconds; lock waits and holds run from milliseconds to hours. */
const durationBuckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600];
/** Seconds; disk writes and Ready round trips. */
const latencyBuckets = [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1];
/** Grants and waits tracked for wait/hold times; beyond, the oldest are forgotten (bounded memory). */
const trackedMax = 2_000_000;

export interface MetricsSources {
  readonly status: () => NodeStatus;
  /** Storage counters (LevelStorage.stats()). */
  readonly storage: () => {
    readonly syncsWritten: number;
    readonly bytesWritten: number;
    readonly walRecordsWritten: number;
    readonly walRecordsReplayed: number;
    readonly callsQueued: number;
  };
  /** Per-peer transport counters (PeerTransport.stats().peers). */
  readonly peers: () => Readonly<
    Record<
      string,
      {
        readonly bytesSent: number;
        readonly bytesReceived: number;
        readonly queueMessages: number;
        readonly queueBytes: number;
        readonly sending: boolean;
      }
    >
  >;
}

export class NodeMetrics implements NodeObserver {
  readonly registry = new Registry();
  private readonly grants: Tally;
  private readonly releases: Tally;
  private readonly waitsEnded: Tally;
  private readonly sessionsOpened: Tally;
  private readonly sessionsEnded: Tally;
  private readonly reconnects: Tally;
  private readonly entriesApplied: Tally;
  private readonly commandsApplied: Tally;
  private readonly elections: Counter;
  private readonly leaderships: Counter;
  private readonly snapshotsInstalled: Counter;
  private readonly waitSeconds: BucketHistogram;
  private readonly holdSeconds: BucketHistogram;
  private readonly persistSeconds: BucketHistogram;
  /** `${session} ${name}` → entry time (from timeBaseMs) of the first waiting request. */
  private readonly waitingSince = new Map<string, number>();
  /** `${name}` → entry time (from timeBaseMs) of the grant. */
  private readonly heldSince = new Map<string, number>();
  /** Entry time the two maps above count from; -1 before the first entry. */
  private timeBaseMs = -1;
  private lastRole = '';
  /** The node's status and storage counters, read once per scrape rather than once per gauge. */
  private scraped: { status: NodeStatus; storage: ReturnType<MetricsSources['storage']> } | null = null;

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry];
    const status = () => this.scraped?.status ?? sources.status();
    const storage = () => this.scraped?.storage ?? sources.storage();
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    const level = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    level('raftlock_raft_term', 'Current Raft term', () => status().term);
    level('raftlock_raft_commit_index', 'Highest log index known committed', () => status().commitIndex);
    level(
      'raftlock_raft_applied_index',
      'Highest log index applied to the lock table',
      () => status().appliedIndex,
    );
    level('raftlock_raft_last_index', 'Last log index', () => status().lastIndex);
    level('raftlock_raft_snapshot_index', 'Index of the latest snapshot', () => status().snapshotIndex);
    level('raftlock_raft_voters', 'Voters in the current membership', () => status().voters.length);
    level('raftlock_raft_learners', 'Learners in the current membership', () => status().learners.length);
    level('raftlock_raft_is_leader', '1 on the leader, else 0', () => (status().role === 'leader' ? 1 : 0));
    level('raftlock_locks_held', 'Locks held', () => status().locks);
    level(
      'raftlock_locks_waiting',
      'Waiting lock requests (one per session and name)',
      () => status().waiters,
    );
    level('raftlock_sessions_open', 'Sessions the lock table holds', () => status().sessions);
    level(
      'raftlock_client_connections',
      'Client connections on this node (each channel of a shared WebSocket counts one)',
      () => status().clientConnections,
    );
    level(
      'raftlock_storage_fsyncs',
      'Batches made durable since start (by a sync-log record or a synced LevelDB write)',
      () => storage().syncsWritten,
    );
    level(
      'raftlock_storage_sync_log_records',
      'Batches made durable by a sync-log record since start (docs/storage.md)',
      () => storage().walRecordsWritten,
    );
    level(
      'raftlock_storage_sync_log_replayed',
      'Sync-log records written into LevelDB again at start: more than 0 after a crash',
      () => storage().walRecordsReplayed,
    );
    level(
      'raftlock_storage_bytes_written',
      'Bytes written to LevelDB since start',
      () => storage().bytesWritten,
    );
    level('raftlock_storage_calls_queued', 'Writes waiting for the next batch', () => storage().callsQueued);
    const peerLevel = (
      name: string,
      help: string,
      read: (peer: ReturnType<MetricsSources['peers']>[string]) => number,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ['peer'],
        registers,
        collect() {
          for (const [peer, stats] of Object.entries(sources.peers())) this.set({ peer }, read(stats));
        },
      });
    peerLevel('raftlock_transport_bytes_sent', 'Bytes sent to a peer since start', (p) => p.bytesSent);
    peerLevel(
      'raftlock_transport_bytes_received',
      'Bytes received from a peer since start',
      (p) => p.bytesReceived,
    );
    peerLevel('raftlock_transport_queue_messages', 'Messages queued for a peer', (p) => p.queueMessages);
    peerLevel('raftlock_transport_queue_bytes', 'Bytes queued for a peer', (p) => p.queueBytes);
    peerLevel('raftlock_transport_link_up', '1 while the sending link to a peer is up', (p) =>
      p.sending ? 1 : 0,
    );

    const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });
    // Counted on every apply: tallies, handed to prom-client when scraped.
    const tally = (name: string, help: string, label?: string) => new Tally(this.registry, name, help, label);
    this.grants = tally('raftlock_lock_grants_total', 'Locks granted');
    this.releases = tally('raftlock_lock_releases_total', 'Locks released, by reason', 'reason');
    this.waitsEnded = tally(
      'raftlock_lock_waits_ended_total',
      'Waits ended without a grant, by reason',
      'reason',
    );
    this.sessionsOpened = tally('raftlock_sessions_opened_total', 'Sessions opened');
    this.sessionsEnded = tally(
      'raftlock_sessions_ended_total',
      'Sessions ended, by reason (closed, expired)',
      'reason',
    );
    this.reconnects = tally('raftlock_session_reconnects_total', 'Sessions resumed on a new connection');
    this.entriesApplied = tally('raftlock_raft_entries_applied_total', 'Lock-table entries applied');
    this.commandsApplied = tally(
      'raftlock_raft_commands_applied_total',
      'Commands applied (proposals that committed)',
    );
    this.elections = counter(
      'raftlock_raft_elections_total',
      'Elections this node started (became candidate)',
    );
    this.leaderships = counter('raftlock_raft_leaderships_total', 'Times this node became leader');
    this.snapshotsInstalled = counter(
      'raftlock_raft_snapshots_installed_total',
      'Snapshots installed from the leader',
    );
    this.waitSeconds = new BucketHistogram(
      this.registry,
      'raftlock_lock_wait_seconds',
      'Time from a request starting to wait until its grant',
      durationBuckets,
    );
    this.holdSeconds = new BucketHistogram(
      this.registry,
      'raftlock_lock_hold_seconds',
      'Time a lock was held, grant to release',
      durationBuckets,
    );
    // Observed once per write, on the path of every commit: a plain histogram, like the two above.
    this.persistSeconds = new BucketHistogram(
      this.registry,
      'raftlock_raft_persist_seconds',
      'Time to make one Ready durable (entries and hard state, one group-committed fsync)',
      latencyBuckets,
    );
  }

  /** Follows one applied entry (NodeListener.onApplied). */
  onApplied(_index: number, entry: LockEntry, results: readonly Result[], effects: readonly Effect[]): void {
    this.entriesApplied.add(1);
    this.commandsApplied.add(entry.commands.length);
    for (let i = 0; i < entry.commands.length; i++) {
      const command = entry.commands[i]!;
      const result = results[i];
      if (command.type === 'openSession' && result?.kind === 'opened') this.sessionsOpened.add(1);
      if (command.type === 'reconnect' && result?.kind === 'done') this.reconnects.add(1);
    }
    // Times are kept relative to the first entry seen: small integers, which V8 stores in the maps
    // unboxed — at 1,000,000 held locks that is 16 MB of heap numbers less.
    if (this.timeBaseMs < 0) this.timeBaseMs = entry.timeMs;
    const nowMs = entry.timeMs - this.timeBaseMs;
    for (const effect of effects) {
      switch (effect.kind) {
        case 'granted': {
          this.grants.add(1);
          const waitKey = `${effect.session} ${effect.name}`;
          const since = this.waitingSince.get(waitKey);
          if (since !== undefined) {
            this.waitingSince.delete(waitKey);
            this.waitSeconds.observe(Math.max(0, nowMs - since) / 1000);
          } else {
            this.waitSeconds.observe(0);
          }
          remember(this.heldSince, effect.name, nowMs);
          break;
        }
        case 'released': {
          this.releases.addFor(effect.reason);
          const since = this.heldSince.get(effect.name);
          if (since !== undefined) {
            this.heldSince.delete(effect.name);
            this.holdSeconds.observe(Math.max(0, nowMs - since) / 1000);
          }
          break;
        }
        case 'waiting': {
          const waitKey = `${effect.session} ${effect.name}`;
          if (!this.waitingSince.has(waitKey)) remember(this.waitingSince, waitKey, nowMs);
          break;
        }
        case 'waitEnded':
          this.waitsEnded.addFor(effect.reason);
          this.waitingSince.delete(`${effect.session} ${effect.name}`);
          break;
        case 'sessionEnded':
          this.sessionsEnded.addFor(effect.reason);
          break;
        default:
          break;
      }
    }
  }

  /** NodeListener.onRoleChanged. */
  onRoleChanged(soft: SoftState): void {
    if (soft.role === this.lastRole) return;
    this.lastRole = soft.role;
    if (soft.role === 'candidate') this.elections.inc();
    if (soft.role === 'leader') this.leaderships.inc();
  }

  /** NodeListener.onTableReplaced: durations of what the snapshot replaced are unknown. */
  onTableReplaced(): void {
    this.snapshotsInstalled.inc();
    this.waitingSince.clear();
    this.heldSince.clear();
  }

  /** One Ready made durable, in seconds. */
  onPersisted(seconds: number): void {
    this.persistSeconds.observe(seconds);
  }

  async text(): Promise<string> {
    this.scraped = { status: this.sources.status(), storage: this.sources.storage() };
    try {
      return await this.registry.metrics();
    } finally {
      this.scraped = null;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function remember(map: Map<string, number>, key: string, value: number): void {
  if (map.size >= trackedMax) {
    const oldest = map.keys().next();
    if (!oldest.done) map.delete(oldest.value);
  }
  map.set(key, value);
}

/**
 * A counter that every apply adds to: a plain number (per label value) until a scrape hands it to its
 * prom-client Counter. prom-client's own `inc` hashes the labels and allocates on every call — a few
 * percent of a W2 node's time when it ran for every grant and release.
 */
export class Tally {
  private pending = 0;
  private readonly pendingFor = new Map<string, number>();

  constructor(
    registry: Registry,
    name: string,
    help: string,
    private readonly label?: string,
  ) {
    const tally = this;
    new Counter({
      name,
      help,
      labelNames: label === undefined ? [] : [label],
      registers: [registry],
      collect() {
        tally.flush(this);
      },
    });
  }

  add(count: number): void {
    this.pending += count;
  }

  addFor(value: string): void {
    this.pendingFor.set(value, (this.pendingFor.get(value) ?? 0) + 1);
  }

  private flush(counter: Counter<string>): void {
    if (this.pending > 0) counter.inc(this.pending);
    this.pending = 0;
    if (this.label === undefined) return;
    for (const [value, count] of this.pendingFor) counter.inc({ [this.label]: value }, count);
    this.pendingFor.clear();
  }
}

/**
 * A histogram without labels whose `observe` is a bucket search and two adds, exported in prom-client's
 * histogram format (cumulative `_bucket{le}`, `_sum`, `_count`). prom-client's own builds a closure and
 * hashes labels on every observation.
 */
export class BucketHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > (this.bounds[i] as number)) i++;
    (this.counts as Float64Array)[i]! += 1;
    this.sum += value;
    this.count += 1;
  }

  /** What prom-client's registry reads on a scrape (the shape its own metrics' `get()` returns). */
  get(): {
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: MetricValueWithName<string>[];
  } {
    const values: MetricValueWithName<string>[] = [];
    let cumulative = 0;
    for (let i = 0; i <= this.bounds.length; i++) {
      cumulative += this.counts[i] as number;
      values.push({
        metricName: `${this.name}_bucket`,
        labels: { le: i < this.bounds.length ? (this.bounds[i] as number) : '+Inf' },
        value: cumulative,
      });
    }
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}
