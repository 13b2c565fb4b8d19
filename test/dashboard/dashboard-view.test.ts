// `GET /dashboard.json` without a cluster or a browser: the view's shape and caps over a real lock
// table, the recent-events ring, and the Basic credentials parser.

import { describe, expect, it } from 'vitest';
import type { Command, Entry } from '../../src/locks/index.ts';
import type { NodeStatus } from '../../src/protocol.ts';
import type { RaftStatus } from '../../src/raft/raft-node.ts';
import {
  buildDashboardView,
  DashboardEvents,
  type DashboardView,
  dashboardLimits,
  EventRing,
  parseBasicAuth,
} from '../../src/server/dashboard.ts';
import { Harness, SESSION } from '../locks/harness.ts';

const status: NodeStatus = {
  id: 'n1',
  role: 'leader',
  term: 3,
  leader: 'n1',
  leaderUrl: 'ws://127.0.0.1:7401',
  commitIndex: 10,
  appliedIndex: 10,
  snapshotIndex: 0,
  firstIndex: 1,
  lastIndex: 10,
  voters: ['n1', 'n2', 'n3'],
  learners: [],
  sessions: 0,
  locks: 0,
  waiters: 0,
  clientConnections: 0,
};

function raftStatus(overrides: Partial<RaftStatus> = {}): RaftStatus {
  return {
    id: 'n1',
    role: 'leader',
    term: 3,
    leader: 'n1',
    vote: 'n1',
    commit: 10,
    applied: 10,
    firstIndex: 1,
    lastIndex: 10,
    stableIndex: 10,
    snapshotIndex: 0,
    conf: { voters: ['n1', 'n2', 'n3'], learners: [] },
    leadTransferee: null,
    progress: {
      n1: { match: 10, next: 11, state: 'replicate' },
      n2: { match: 9, next: 11, state: 'replicate' },
      n3: { match: 4, next: 5, state: 'probe' },
    },
    ...overrides,
  };
}

/** Applies `commands` in entries of at most 1000, feeding the dashboard's observer as the node would. */
function applyAll(harness: Harness, events: DashboardEvents, commands: Command[]): void {
  for (let at = 0; at < commands.length; at += 1000) {
    const entry: Entry = { timeMs: harness.timeMs, commands: commands.slice(at, at + 1000) };
    const output = harness.batch([...entry.commands]);
    events.onApplied(harness.index, entry, output.results, output.effects);
  }
}

function view(harness: Harness, events: DashboardEvents, raft = raftStatus()): DashboardView {
  // Through JSON, as the page sees it.
  return JSON.parse(
    JSON.stringify(
      buildDashboardView({
        status,
        raft,
        table: harness.table,
        memberUrls: new Map([
          ['n1', 'ws://127.0.0.1:7401'],
          ['n2', 'wss://10.0.0.2:7401/'],
        ]),
        events: events.ring,
        nowMs: 1234,
      }),
    ),
  ) as DashboardView;
}

describe('dashboard view', () => {
  it('lists the first locks by name and the oldest sessions, says how many more, and caps waiters', () => {
    const harness = new Harness();
    const events = new DashboardEvents();
    const sessionsTotal = dashboardLimits.sessionsShownMax + 120;
    const opens: Command[] = Array.from({ length: sessionsTotal }, (_, i) => ({
      type: 'openSession',
      principal: `user-${i}`,
      reconnectionWindowMs: 30_000,
    }));
    applyAll(harness, events, opens);
    const ids = harness.table.sessionIds();
    expect(ids).toHaveLength(sessionsTotal);
    // Every session holds one lock of its own; names sort differently from session order.
    const locksTotal = sessionsTotal;
    const acquires: Command[] = ids.map((session, i) => ({
      type: 'acquire',
      session,
      requestNo: 1,
      name: `lock-${String((i * 7919) % locksTotal).padStart(5, '0')}`,
      scope: SESSION,
    }));
    // …and 30 of them queue for `lock-00000` behind its owner.
    const owner0 = (
      acquires.find((c) => c.type === 'acquire' && c.name === 'lock-00000') as { session: number }
    ).session;
    const queued = ids.filter((id) => id !== owner0).slice(0, 30);
    const waits: Command[] = queued.map((session) => ({
      type: 'acquire',
      session,
      requestNo: 2,
      name: 'lock-00000',
      scope: SESSION,
    }));
    applyAll(harness, events, [...acquires, ...waits]);

    const result = view(harness, events);
    expect(result.builtAtMs).toBe(1234);
    expect(result.node.id).toBe('n1');
    expect(result.locks.total).toBe(locksTotal);
    expect(result.locks.rows).toHaveLength(dashboardLimits.locksShownMax);
    expect(result.locks.more).toBe(locksTotal - dashboardLimits.locksShownMax);
    const names = result.locks.rows.map((row) => row.name);
    expect(names).toEqual([...names].sort());
    expect(names[0]).toBe('lock-00000');
    expect(names.at(-1)).toBe(`lock-${String(dashboardLimits.locksShownMax - 1).padStart(5, '0')}`);
    const contended = result.locks.rows[0]!;
    expect(contended).toMatchObject({ owner: owner0, ownerPrincipal: `user-${ids.indexOf(owner0)}` });
    expect(contended.scope).toBe(SESSION);
    expect(contended.sequence).toBeGreaterThan(0);
    expect(contended.waiterCount).toBe(30);
    expect(contended.waiters).toEqual(queued.slice(0, dashboardLimits.waitersShownMax));

    expect(result.sessions.total).toBe(sessionsTotal);
    expect(result.sessions.rows).toHaveLength(dashboardLimits.sessionsShownMax);
    expect(result.sessions.more).toBe(120);
    expect(result.sessions.rows.map((row) => row.id)).toEqual(ids.slice(0, dashboardLimits.sessionsShownMax));
    const waitingRow = result.sessions.rows.find((row) => row.id === queued[0]);
    expect(waitingRow).toMatchObject({ connected: true, locks: 1, waits: 1 });
    expect(waitingRow?.principal).toBe(`user-${ids.indexOf(queued[0]!)}`);

    expect(result.limits).toEqual({
      locksShownMax: dashboardLimits.locksShownMax,
      sessionsShownMax: dashboardLimits.sessionsShownMax,
      waitersShownMax: dashboardLimits.waitersShownMax,
      eventsMax: dashboardLimits.eventsMax,
    });
    // The ring kept only the newest events: the last ones are the 30 waits.
    expect(result.events.rows).toHaveLength(dashboardLimits.eventsMax);
    expect(result.events.total).toBe(sessionsTotal + locksTotal + 30);
    expect(result.events.rows.at(-1)).toMatchObject({
      kind: 'waiting',
      session: queued[29],
      name: 'lock-00000',
    });
  });

  it('shows members with their roles, dashboard links and, on the leader, replication progress', () => {
    const harness = new Harness();
    const events = new DashboardEvents();
    expect(view(harness, events).members).toEqual([
      {
        id: 'n1',
        dashboardUrl: 'http://127.0.0.1:7401/',
        voter: true,
        role: 'leader',
        progress: { match: 10, next: 11, state: 'replicate' },
      },
      {
        id: 'n2',
        dashboardUrl: 'https://10.0.0.2:7401/',
        voter: true,
        role: 'follower',
        progress: { match: 9, next: 11, state: 'replicate' },
      },
      {
        id: 'n3',
        dashboardUrl: null,
        voter: true,
        role: 'follower',
        progress: { match: 4, next: 5, state: 'probe' },
      },
    ]);
    const follower = view(
      harness,
      events,
      raftStatus({
        id: 'n3',
        role: 'follower',
        leader: 'n2',
        progress: undefined,
        conf: { voters: ['n1', 'n2', 'n3'], learners: ['n4'] },
      }),
    );
    expect(follower.members.map((m) => [m.id, m.role, m.voter, m.progress])).toEqual([
      ['n1', 'follower', true, null],
      ['n2', 'leader', true, null],
      ['n3', 'follower', true, null],
      ['n4', 'learner', false, null],
    ]);
    expect(follower.locks).toEqual({ total: 0, more: 0, rows: [] });
    expect(follower.sessions).toEqual({ total: 0, more: 0, rows: [] });
  });

  it('records grants, releases with their reason, session ends and role changes as events', () => {
    const harness = new Harness();
    const events = new DashboardEvents();
    events.onRoleChanged({ role: 'candidate', leader: null, term: 2 });
    events.onRoleChanged({ role: 'candidate', leader: null, term: 2 });
    events.onRoleChanged({ role: 'leader', leader: 'n1', term: 2 });
    applyAll(harness, events, [{ type: 'openSession', principal: 'ops', reconnectionWindowMs: 1000 }]);
    const session = harness.table.sessionIds()[0]!;
    applyAll(harness, events, [
      { type: 'acquire', session, requestNo: 1, name: 'a', scope: SESSION },
      { type: 'release', session, requestNo: 2, name: 'a' },
      { type: 'acquire', session, requestNo: 3, name: 'b', scope: SESSION },
      { type: 'closeSession', session },
    ]);
    const rows = view(harness, events).events.rows;
    expect(rows.map((event) => event.no)).toEqual(rows.map((_, i) => i + 1));
    expect(rows.map((event) => event.kind)).toEqual([
      'role',
      'role',
      'sessionOpened',
      'granted',
      'released',
      'granted',
      'released',
      'sessionEnded',
    ]);
    expect(rows[1]).toMatchObject({ kind: 'role', role: 'leader', term: 2, leader: 'n1', index: null });
    expect(rows[2]).toMatchObject({ kind: 'sessionOpened', session, principal: 'ops', index: 1 });
    expect(rows[4]).toMatchObject({ kind: 'released', name: 'a', reason: 'unlock', index: 2 });
    expect(rows[6]).toMatchObject({ kind: 'released', name: 'b', reason: 'sessionClosed' });
    expect(rows[7]).toMatchObject({ kind: 'sessionEnded', session, reason: 'closed' });
  });

  it('keeps the newest events of a bounded ring, oldest first', () => {
    const ring = new EventRing(3);
    expect(ring.list()).toEqual([]);
    for (let i = 0; i < 5; i++)
      ring.push({ kind: 'sessionEnded', atMs: i, index: i, session: i, reason: 'closed' });
    expect(ring.total).toBe(5);
    expect(ring.list().map((event) => [event.no, event.index])).toEqual([
      [3, 2],
      [4, 3],
      [5, 4],
    ]);
  });

  it('parses Basic credentials and refuses anything else', () => {
    const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;
    expect(parseBasicAuth(basic('control:pass:word'))).toEqual({
      principal: 'control',
      password: 'pass:word',
    });
    expect(parseBasicAuth(basic('ops:'))).toEqual({ principal: 'ops', password: '' });
    expect(parseBasicAuth(undefined)).toBeNull();
    expect(parseBasicAuth(basic(':nobody'))).toBeNull();
    expect(parseBasicAuth(basic('no-colon'))).toBeNull();
    expect(parseBasicAuth('Bearer abc')).toBeNull();
  });
});
