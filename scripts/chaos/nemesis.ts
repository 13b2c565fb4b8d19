// The nemesis: injects one fault at a time on a schedule, holds it, heals it, lets the cluster settle,
// and logs what it did. Faults: kill -9 (leader, random node, a minority at once), SIGSTOP/SIGCONT pauses
// longer than the election timeout, network partitions through the link proxies (majority/minority,
// leader isolated, majorities ring, bridge, one-way), delays and frame drops on every link, wall-clock
// steps through the node's injected clock (followed by a restart, since the node's monotonic clock only
// picks a step up when it starts), and graceful restarts.

import type { ChaosCluster } from './cluster.ts';
import { noFaults } from './proxy.ts';

export const faultKinds = [
  'kill-leader',
  'partition-minority',
  'pause-leader',
  'delay',
  'kill-random',
  'partition-bridge',
  'clock-jump',
  'pause-random',
  'partition-leader',
  'drop',
  'kill-minority',
  'partition-ring',
  'partition-one-way',
  'restart',
] as const;
export type FaultKind = (typeof faultKinds)[number];

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly description: string;
  readonly startMs: number;
  healMs: number;
}

export interface NemesisOptions {
  readonly cluster: ChaosCluster;
  readonly random: () => number;
  /** The run's clock (the history's). */
  readonly now: () => number;
  readonly faultMs: readonly [number, number];
  readonly quietMs: readonly [number, number];
  readonly kinds: readonly FaultKind[];
  readonly log: (line: string) => void;
  /** The nodes' clock (src/server/clock.ts): a monotonic node needs a restart to see a step. */
  readonly clockMode: 'monotonic' | 'wall';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  current: FaultRecord | null = null;
  private stopping = false;
  private readonly sleeping = new Set<() => void>();

  constructor(private readonly options: NemesisOptions) {}

  private between([lo, hi]: readonly [number, number]): number {
    return lo + this.options.random() * (hi - lo);
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.options.random() * items.length)]!;
  }

  private shuffled<T>(items: readonly T[]): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(this.options.random() * (i + 1));
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy;
  }

  /** Sleeps, but wakes early when the nemesis is stopped. */
  private async wait(ms: number): Promise<void> {
    if (this.stopping) return;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeping.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeping.add(wake);
    });
  }

  /** Injects faults until `untilMs` (the run's clock) or `stop()`; every kind once before any repeats. */
  async run(untilMs: number): Promise<void> {
    const { kinds, now } = this.options;
    let order: FaultKind[] = [];
    while (!this.stopping && now() < untilMs) {
      if (order.length === 0) order = this.shuffled(kinds);
      const kind = order.shift()!;
      const holdMs = this.between(this.options.faultMs);
      if (now() + holdMs > untilMs) break;
      await this.inject(kind, holdMs);
      await this.wait(this.between(this.options.quietMs));
    }
  }

  stop(): void {
    this.stopping = true;
    for (const wake of [...this.sleeping]) wake();
  }

  private async inject(kind: FaultKind, holdMs: number): Promise<void> {
    const { cluster, now, log } = this.options;
    const ids = cluster.ids;
    const minoritySize = Math.floor((ids.length - 1) / 2);
    const leader = (await cluster.leader()) ?? this.pick(ids);
    let heal: () => Promise<void> | void;
    let description: string;
    switch (kind) {
      case 'kill-leader':
      case 'kill-random':
      case 'kill-minority': {
        const victims =
          kind === 'kill-leader'
            ? [leader]
            : kind === 'kill-random'
              ? [this.pick(ids)]
              : this.shuffled(ids).slice(0, minoritySize);
        description = `kill -9 ${victims.join(', ')}`;
        await Promise.all(victims.map((id) => cluster.kill(id, 'SIGKILL')));
        heal = () => {
          for (const id of victims) cluster.start(id);
        };
        break;
      }
      case 'pause-leader':
      case 'pause-random': {
        const victim = kind === 'pause-leader' ? leader : this.pick(ids);
        description = `SIGSTOP ${victim} for ${(holdMs / 1000).toFixed(1)} s`;
        cluster.pause(victim);
        heal = () => cluster.resume(victim);
        break;
      }
      case 'partition-minority':
      case 'partition-leader': {
        const side =
          kind === 'partition-leader'
            ? new Set([leader])
            : new Set(this.shuffled(ids).slice(0, Math.max(1, minoritySize)));
        description = `partition {${[...side].join(',')}} | {${ids.filter((id) => !side.has(id)).join(',')}}`;
        cluster.partition((from, to) => side.has(from) !== side.has(to));
        heal = () => cluster.healNetwork();
        break;
      }
      case 'partition-ring': {
        if (ids.length < 5) return this.inject('partition-bridge', holdMs);
        // Majorities ring: each node hears only its two neighbours, so each sees a different majority.
        const ring = this.shuffled(ids);
        const place = new Map(ring.map((id, i) => [id, i]));
        const apart = (a: string, b: string) => {
          const d = Math.abs(place.get(a)! - place.get(b)!);
          return Math.min(d, ring.length - d) > 1;
        };
        description = `majorities ring ${ring.join('-')}-${ring[0]}`;
        cluster.partition(apart);
        heal = () => cluster.healNetwork();
        break;
      }
      case 'partition-bridge': {
        // Two halves that only one node (the bridge) connects.
        const order = this.shuffled(ids);
        const bridge = order[0]!;
        const half = Math.floor((ids.length - 1) / 2);
        const left = new Set(order.slice(1, 1 + half));
        const right = new Set(order.slice(1 + half));
        description = `bridge {${[...left].join(',')}} - ${bridge} - {${[...right].join(',')}}`;
        cluster.partition(
          (from, to) => (left.has(from) && right.has(to)) || (right.has(from) && left.has(to)),
        );
        heal = () => cluster.healNetwork();
        break;
      }
      case 'partition-one-way': {
        const victim = this.options.random() < 0.5 ? leader : this.pick(ids);
        const outbound = this.options.random() < 0.5;
        description = outbound
          ? `one-way: nobody hears ${victim} (it hears everyone)`
          : `one-way: ${victim} hears nobody (everyone hears it)`;
        cluster.partition((from, to) => (outbound ? from === victim : to === victim));
        heal = () => cluster.healNetwork();
        break;
      }
      case 'delay': {
        const delayMs = Math.round(this.between([40, 250]));
        const jitterMs = Math.round(this.between([0, 120]));
        description = `delay every link ${delayMs} ms + up to ${jitterMs} ms`;
        cluster.degrade({ ...noFaults, delayMs, jitterMs });
        heal = () => cluster.healNetwork();
        break;
      }
      case 'drop': {
        const dropRate = Math.round(this.between([0.1, 0.4]) * 100) / 100;
        description = `drop ${Math.round(dropRate * 100)}% of frames on every link`;
        cluster.degrade({ ...noFaults, dropRate, delayMs: 5, jitterMs: 20 });
        heal = () => cluster.healNetwork();
        break;
      }
      case 'clock-jump': {
        const victim = this.options.random() < 0.5 ? leader : this.pick(ids);
        const sign = this.options.random() < 0.5 ? -1 : 1;
        const deltaMs = sign * Math.round(this.between([5_000, 60_000]));
        const restart = this.options.clockMode === 'monotonic';
        description = `clock of ${victim} stepped ${deltaMs > 0 ? '+' : ''}${(deltaMs / 1000).toFixed(1)} s${restart ? ', then restarted' : ''}`;
        cluster.jumpClock(victim, deltaMs);
        if (restart) {
          await this.wait(Math.min(1_000, holdMs / 2));
          await cluster.kill(victim, 'SIGTERM');
          cluster.start(victim);
        }
        heal = () => cluster.jumpClock(victim, -deltaMs);
        break;
      }
      case 'restart': {
        const victim = this.options.random() < 0.5 ? leader : this.pick(ids);
        description = `graceful restart of ${victim}`;
        await cluster.kill(victim, 'SIGTERM');
        cluster.start(victim);
        heal = () => undefined;
        break;
      }
      default:
        kind satisfies never;
        return;
    }
    const record: FaultRecord = { kind, description, startMs: now(), healMs: Number.NaN };
    this.current = record;
    this.faults.push(record);
    log(`nemesis: ${description}`);
    await this.wait(holdMs);
    await heal();
    record.healMs = now();
    this.current = null;
    log(`nemesis: healed (${kind})`);
  }

  /** Heals everything: network clean, every process running and resumed, clocks back to true time. */
  async healAll(): Promise<void> {
    const { cluster } = this.options;
    cluster.healNetwork();
    for (const node of cluster.nodes) {
      if (node.paused) cluster.resume(node.id);
      if (node.clockOffsetMs !== 0) cluster.jumpClock(node.id, -node.clockOffsetMs);
      if (node.process === null) cluster.start(node.id);
    }
  }

  /** Gives pending sleeps a chance to finish; used between the last fault and the final heal. */
  async settle(ms: number): Promise<void> {
    await sleep(ms);
  }
}
