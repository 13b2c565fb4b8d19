// The live dashboard: `GET /` (a static page, src/server/dashboard-page.ts) and `GET /dashboard.json`
// (what the page polls every second), on every node's client port.
//
// Everything shown is this node's own view: its Raft status, its replica of the lock table (every node
// applies every entry, so any node can show every lock), the members as it knows them (replication
// progress only on the leader), and the last events it applied — an observer of the node fills a ring
// buffer from the effects of applied entries and from role changes.
//
// Unlike `/status` and `/metrics`, which carry counts, the dashboard shows lock names and principals:
// it asks for HTTP Basic credentials of a user with the `admin` permission (docs/security.md), checked
// like a client's hello (the same users, the same throttle on failures). The page renders every value
// through `textContent`, never as markup, and its Content-Security-Policy lets only its own inline
// script run: a lock name such as `<script>…` shows as text.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Effect, Entry as LockEntry, LockTable, Result, SessionLockScope } from '../locks/index.ts';
import type { NodeStatus } from '../protocol.ts';
import type { SoftState } from '../raft/index.ts';
import type { RaftStatus } from '../raft/raft-node.ts';
import type { LoginThrottle } from '../security/throttle.ts';
import type { UserDirectory } from '../security/users.ts';
import { nodeClock } from './clock.ts';
import { dashboardPage } from './dashboard-page.ts';
import type { NodeObserver } from './node.ts';

export const dashboardLimits = {
  /** Locks listed, the first by name; the view says how many more there are. */
  locksShownMax: 500,
  /** Sessions listed, the oldest first. */
  sessionsShownMax: 500,
  /** Waiting sessions listed per lock, the earliest first. */
  waitersShownMax: 20,
  /** Recent events kept (a ring buffer; older ones are dropped). */
  eventsMax: 200,
  /** A view is reused for at least this long, whoever asks… */
  viewReuseMsMin: 250,
  /** …and for this many times as long as building it took, so viewers cost the node ≤ 1/10 of its time. */
  viewReuseCostFactor: 10,
} as const;

export type DashboardEvent =
  | EventBase<'granted', { session: number; name: string; sequence: number; scope: SessionLockScope }>
  | EventBase<'released', { session: number; name: string; sequence: number; reason: string }>
  | EventBase<'scopeChanged', { session: number; name: string; sequence: number; scope: SessionLockScope }>
  | EventBase<'waiting', { session: number; name: string }>
  | EventBase<'waitEnded', { session: number; name: string; reason: string }>
  | EventBase<'sessionOpened', { session: number; principal: string }>
  | EventBase<'sessionReconnected', { session: number; epoch: number }>
  | EventBase<'connectionLost', { session: number; epoch: number }>
  | EventBase<'sessionEnded', { session: number; reason: string }>
  | EventBase<'role', { role: string; term: number; leader: string | null }>
  | EventBase<'snapshotInstalled', Record<never, never>>;

type EventBase<K extends string, F> = {
  /** Numbers every event this node recorded since it started. */
  readonly no: number;
  readonly kind: K;
  /** The entry's leader timestamp for applied events; this node's clock for role changes. */
  readonly atMs: number;
  /** The log index of the entry, or null for role changes. */
  readonly index: number | null;
} & Readonly<F>;

type EventFields = DashboardEvent extends infer E
  ? E extends DashboardEvent
    ? Omit<E, 'no'>
    : never
  : never;

/** The last `capacity` events, oldest first; a fixed array written round. */
export class EventRing {
  private readonly slots: (DashboardEvent | undefined)[];
  private next = 0;
  private recorded = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array(capacity);
  }

  push(event: EventFields): void {
    this.recorded++;
    // Callers hand a fresh object: number it in place rather than copy it (one event per grant).
    (event as { no?: number }).no = this.recorded;
    this.slots[this.next] = event as DashboardEvent;
    this.next = (this.next + 1) % this.capacity;
  }

  /** Events recorded since start (also those dropped from the ring). */
  get total(): number {
    return this.recorded;
  }

  list(): DashboardEvent[] {
    const events: DashboardEvent[] = [];
    for (let i = 0; i < this.capacity; i++) {
      const event = this.slots[(this.next + i) % this.capacity];
      if (event !== undefined) events.push(event);
    }
    return events;
  }
}

/** Hears the node (one of its observers) and keeps the recent events. */
export class DashboardEvents implements NodeObserver {
  readonly ring = new EventRing(dashboardLimits.eventsMax);
  private last: SoftState | null = null;

  onApplied(index: number, entry: LockEntry, results: readonly Result[], effects: readonly Effect[]): void {
    const atMs = entry.timeMs;
    for (let i = 0; i < entry.commands.length; i++) {
      const command = entry.commands[i]!;
      const result = results[i];
      if (command.type === 'openSession' && result?.kind === 'opened')
        this.ring.push({
          kind: 'sessionOpened',
          atMs,
          index,
          session: result.session,
          principal: command.principal,
        });
      else if (command.type === 'reconnect' && result?.kind === 'done')
        this.ring.push({
          kind: 'sessionReconnected',
          atMs,
          index,
          session: command.session,
          epoch: command.epoch,
        });
      else if (command.type === 'connectionLost' && result?.kind === 'done')
        this.ring.push({
          kind: 'connectionLost',
          atMs,
          index,
          session: command.session,
          epoch: command.epoch,
        });
    }
    for (const effect of effects) {
      switch (effect.kind) {
        case 'granted': {
          const { session, name, sequence, scope } = effect;
          this.ring.push({ kind: 'granted', atMs, index, session, name, sequence, scope });
          break;
        }
        case 'released': {
          const { session, name, sequence, reason } = effect;
          this.ring.push({ kind: 'released', atMs, index, session, name, sequence, reason });
          break;
        }
        case 'scopeChanged': {
          const { session, name, sequence, scope } = effect;
          this.ring.push({ kind: 'scopeChanged', atMs, index, session, name, sequence, scope });
          break;
        }
        case 'waiting':
          this.ring.push({ kind: 'waiting', atMs, index, session: effect.session, name: effect.name });
          break;
        case 'waitEnded': {
          const { session, name, reason } = effect;
          this.ring.push({ kind: 'waitEnded', atMs, index, session, name, reason });
          break;
        }
        case 'sessionEnded':
          this.ring.push({
            kind: 'sessionEnded',
            atMs,
            index,
            session: effect.session,
            reason: effect.reason,
          });
          break;
        default:
          effect satisfies never;
      }
    }
  }

  onRoleChanged(soft: SoftState): void {
    const last = this.last;
    this.last = soft;
    if (last !== null && last.role === soft.role && last.leader === soft.leader && last.term === soft.term)
      return;
    this.ring.push({
      kind: 'role',
      atMs: nodeClock.now(),
      index: null,
      role: soft.role,
      term: soft.term,
      leader: soft.leader,
    });
  }

  onTableReplaced(): void {
    this.ring.push({ kind: 'snapshotInstalled', atMs: nodeClock.now(), index: null });
  }

  onPersisted(): void {}
}

export interface MemberView {
  readonly id: string;
  /** The member's dashboard (its client URL over http(s)), or null when this node does not know it. */
  readonly dashboardUrl: string | null;
  readonly voter: boolean;
  /** This node's own role for itself; `leader` for the leader it knows; otherwise `follower`/`learner`. */
  readonly role: string;
  /** Replication progress, known only while this node leads. */
  readonly progress: { readonly match: number; readonly next: number; readonly state: string } | null;
}

export interface LockRow {
  readonly name: string;
  readonly owner: number;
  readonly ownerPrincipal: string | null;
  readonly sequence: number;
  readonly scope: SessionLockScope;
  /** The first `waitersShownMax` waiting sessions, earliest first. */
  readonly waiters: readonly number[];
  readonly waiterCount: number;
}

export interface SessionRow {
  readonly id: number;
  readonly principal: string;
  readonly connected: boolean;
  readonly connectionEpoch: number;
  readonly locks: number;
  readonly waits: number;
}

export interface DashboardView {
  /** This node's clock when the view was built. */
  readonly builtAtMs: number;
  readonly node: NodeStatus;
  readonly members: readonly MemberView[];
  readonly locks: { readonly total: number; readonly more: number; readonly rows: readonly LockRow[] };
  readonly sessions: { readonly total: number; readonly more: number; readonly rows: readonly SessionRow[] };
  /** Oldest first; `total` counts every event since the node started. */
  readonly events: { readonly total: number; readonly rows: readonly DashboardEvent[] };
  readonly limits: {
    readonly locksShownMax: number;
    readonly sessionsShownMax: number;
    readonly waitersShownMax: number;
    readonly eventsMax: number;
  };
}

export interface DashboardSources {
  readonly status: NodeStatus;
  readonly raft: RaftStatus;
  readonly table: LockTable;
  /** Client URL (ws:// or wss://) of every member this node knows one for. */
  readonly memberUrls: ReadonlyMap<string, string>;
  readonly events: EventRing;
  readonly nowMs: number;
}

/** The view of one node's state; pure. */
export function buildDashboardView(sources: DashboardSources): DashboardView {
  const { raft, table } = sources;
  const lockInfos = table.listLocks({ limit: dashboardLimits.locksShownMax });
  const principalOf = new Map<number, string | null>();
  const principal = (id: number): string | null => {
    if (!principalOf.has(id)) principalOf.set(id, table.getSession(id)?.principal ?? null);
    return principalOf.get(id) ?? null;
  };
  const lockRows: LockRow[] = lockInfos.map((lock) => ({
    name: lock.name,
    owner: lock.owner,
    ownerPrincipal: principal(lock.owner),
    sequence: lock.sequence,
    scope: lock.scope,
    waiters: lock.waiters.slice(0, dashboardLimits.waitersShownMax),
    waiterCount: lock.waiters.length,
  }));
  const sessionIds = table.sessionIds().slice(0, dashboardLimits.sessionsShownMax);
  const sessionRows: SessionRow[] = [];
  for (const id of sessionIds) {
    const session = table.getSession(id);
    if (session === null) continue;
    sessionRows.push({
      id,
      principal: session.principal,
      connected: session.connected,
      connectionEpoch: session.connectionEpoch,
      locks: session.locks.length,
      waits: session.waits.length,
    });
  }
  const events = sources.events.list();
  return {
    builtAtMs: sources.nowMs,
    node: sources.status,
    members: members(raft, sources.memberUrls),
    locks: { total: table.lockCount, more: table.lockCount - lockRows.length, rows: lockRows },
    sessions: {
      total: table.sessionCount,
      more: table.sessionCount - sessionRows.length,
      rows: sessionRows,
    },
    events: { total: sources.events.total, rows: events },
    limits: {
      locksShownMax: dashboardLimits.locksShownMax,
      sessionsShownMax: dashboardLimits.sessionsShownMax,
      waitersShownMax: dashboardLimits.waitersShownMax,
      eventsMax: dashboardLimits.eventsMax,
    },
  };
}

function members(raft: RaftStatus, memberUrls: ReadonlyMap<string, string>): MemberView[] {
  const voters = new Set(raft.conf.voters);
  const ids = [...new Set([...raft.conf.voters, ...raft.conf.learners, raft.id])].sort();
  return ids.map((id) => {
    const url = memberUrls.get(id);
    const progress = raft.progress?.[id];
    let role: string;
    if (id === raft.id) role = raft.role;
    else if (id === raft.leader) role = 'leader';
    else role = voters.has(id) ? 'follower' : 'learner';
    return {
      id,
      dashboardUrl:
        url === undefined ? null : `${url.replace(/^ws(s?):\/\//, 'http$1://').replace(/\/+$/, '')}/`,
      voter: voters.has(id),
      role,
      progress:
        progress === undefined ? null : { match: progress.match, next: progress.next, state: progress.state },
    };
  });
}

/** Builds views on demand, reusing the last one for a while (see `dashboardLimits.viewReuse…`). */
export class DashboardViews {
  private cached: { readonly text: string; readonly untilMs: number } | null = null;

  constructor(
    readonly events: DashboardEvents,
    private readonly sources: () => Omit<DashboardSources, 'events' | 'nowMs'>,
  ) {}

  json(): string {
    const nowMs = nodeClock.now();
    if (this.cached !== null && nowMs < this.cached.untilMs) return this.cached.text;
    const startMs = performance.now();
    const text = JSON.stringify(buildDashboardView({ ...this.sources(), events: this.events.ring, nowMs }));
    const tookMs = performance.now() - startMs;
    const reuseMs = Math.max(dashboardLimits.viewReuseMsMin, dashboardLimits.viewReuseCostFactor * tookMs);
    this.cached = { text, untilMs: nowMs + reuseMs };
    return text;
  }
}

/** `Authorization: Basic …` → principal and password, or null when absent or malformed. */
export function parseBasicAuth(header: string | undefined): { principal: string; password: string } | null {
  if (header === undefined) return null;
  const match = /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(header);
  if (match === null) return null;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 1) return null;
  return { principal: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export interface DashboardHttpContext {
  readonly views: DashboardViews;
  readonly users: UserDirectory;
  readonly logins: LoginThrottle;
}

const pageHeaders = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': dashboardPage.contentSecurityPolicy,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
} as const;

const jsonHeaders = {
  'content-type': 'application/json',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

/** Answers `GET /` and `GET /dashboard.json` once the caller proved an `admin` login. */
export function serveDashboard(
  context: DashboardHttpContext,
  request: IncomingMessage,
  response: ServerResponse,
  path: '/' | '/dashboard.json',
): void {
  const remoteHost = request.socket.remoteAddress ?? '?';
  const credentials = parseBasicAuth(request.headers.authorization);
  if (credentials === null) {
    challenge(response, 'credentials required');
    return;
  }
  context.users.authenticate(credentials.principal, credentials.password).then(
    (auth) => {
      if (auth.ok && auth.grants.admin) {
        context.logins.succeed(remoteHost);
        if (path === '/') response.writeHead(200, pageHeaders).end(dashboardPage.html);
        else response.writeHead(200, jsonHeaders).end(context.views.json());
        return;
      }
      if (auth.ok) {
        sendError(response, 403, 'PERMISSION_DENIED', 'the dashboard needs the admin permission');
        return;
      }
      if (auth.reason === 'busy') {
        sendError(response, 503, 'UNAVAILABLE', 'too many logins at once');
        return;
      }
      // C7: as for a hello, a failure is counted and answered late.
      const delayMs = context.logins.fail(remoteHost, nodeClock.now());
      setTimeout(() => challenge(response, 'authentication failed'), delayMs).unref();
    },
    () => sendError(response, 500, 'INTERNAL', 'authentication failed to run'),
  );
}

function challenge(response: ServerResponse, message: string): void {
  if (response.writableEnded || response.destroyed) return;
  response.setHeader('www-authenticate', 'Basic realm="raftlock dashboard", charset="UTF-8"');
  sendError(response, 401, 'AUTHENTICATION_FAILED', message);
}

function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  if (response.writableEnded || response.destroyed) return;
  response.writeHead(status, jsonHeaders).end(JSON.stringify({ error: { code, message } }));
}
