// C5 membership, unit by unit: validation of operator input (typed errors, nothing proposed), the conf
// change's address context, the member directory surviving a restart (members.json) and a snapshot
// (lock table format version 3; version 2 still loads), and the leader's admin and promotion logic.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { LockTable } from '../../src/locks/index.ts';
import {
  type ConfChange,
  confChangeContextBytesMax,
  confChangeContextValid,
  decodeConfChange,
  encodeConfChange,
  type ProposeResult,
  type RaftStatus,
} from '../../src/raft/index.ts';
import {
  checkClientUrl,
  checkMemberId,
  decodeMemberContext,
  encodeMemberContext,
  MemberDirectory,
  Membership,
  type MembershipHost,
  membershipLimits,
  parsePeerAddress,
} from '../../src/server/members.ts';
import type { PeerBody } from '../../src/server/peer-messages.ts';
import type { PeerAddress } from '../../src/transport/peer-transport.ts';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'raftlock-members-unit-'));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const addresses = (port: number) => ({
  peer: { host: '127.0.0.1', port },
  clientUrl: `ws://127.0.0.1:${port + 1}`,
});

describe('C5: operator input is checked before anything is proposed', () => {
  it('C5: member ids, peer addresses and client URLs: typed INVALID_ARGUMENT for bad ones', () => {
    expect(checkMemberId('n4')).toBe('n4');
    expect(checkMemberId('db-2.east_1')).toBe('db-2.east_1');
    for (const bad of ['', 'bad id', '-x', 'a/b', 'x'.repeat(65), 'é'])
      expect(() => checkMemberId(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(parsePeerAddress('10.0.0.4:7501')).toEqual({ host: '10.0.0.4', port: 7501 });
    expect(parsePeerAddress('[::1]:7501')).toEqual({ host: '::1', port: 7501 });
    for (const bad of ['10.0.0.4', ':7501', 'host:0', 'host:70000', 'ws://h:1', 'a b:1'])
      expect(() => parsePeerAddress(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(checkClientUrl('wss://db4.example:7401')).toBe('wss://db4.example:7401');
    for (const bad of ['http://h:1', 'ws://', 'h:1', 'ws://u:p@h:1', 'ws://h:1/?x=1'])
      expect(() => checkClientUrl(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('C5: the address context round-trips; anything else decodes to null', () => {
    const context = encodeMemberContext(addresses(7501));
    expect(decodeMemberContext(context)).toEqual(addresses(7501));
    for (const bad of [
      undefined,
      '',
      'nope',
      '{"peer":1}',
      '{"peer":"x"}',
      '{"peer":"h:1","client":"http://h"}',
    ])
      expect(decodeMemberContext(bad)).toBeNull();
  });

  it('C5: a conf change without a context encodes exactly as before contexts existed', () => {
    const legacy: ConfChange = { type: 'addLearner', node: 'n4' };
    expect(new TextDecoder().decode(encodeConfChange(legacy))).toBe('{"type":"addLearner","node":"n4"}');
    expect(decodeConfChange(encodeConfChange(legacy))).toEqual(legacy);
    const withContext: ConfChange = {
      type: 'addLearner',
      node: 'n4',
      context: encodeMemberContext(addresses(1)),
    };
    expect(decodeConfChange(encodeConfChange(withContext))).toEqual(withContext);
    expect(confChangeContextValid({ ...legacy, context: 'x'.repeat(confChangeContextBytesMax) })).toBe(true);
    expect(confChangeContextValid({ ...legacy, context: 'x'.repeat(confChangeContextBytesMax + 1) })).toBe(
      false,
    );
  });
});

describe('C5: the member directory survives restarts and snapshots', () => {
  it('C5: members.json written on change is what a restarted node loads', () => {
    const dir = tempDir();
    const before = new MemberDirectory(dir);
    before.learn('n1', addresses(7501));
    before.learn('n4', addresses(7504));
    before.save();
    const after = new MemberDirectory(dir);
    expect(after.load()).toBe(true);
    expect([...after.entries()]).toEqual([...before.entries()].sort(([a], [b]) => a.localeCompare(b)));
    expect(after.clientUrls.get('n4')).toBe('ws://127.0.0.1:7505');
    expect(after.peersFor({ voters: ['n1', 'n4'], learners: [] }, 'n1')).toEqual(
      new Map([['n4', { host: '127.0.0.1', port: 7504 }]]),
    );
    // A node that knows no membership yet (joining) accepts every known address.
    expect([...after.peersFor({ voters: [], learners: [] }, 'n4').keys()]).toEqual(['n1']);
  });

  it('C5: a damaged members.json is an error, not an empty directory', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'members.json'), '{"version":1,"members":[{"id":"n1","peer":"nowhere"}]}');
    expect(() => new MemberDirectory(dir).load()).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    writeFileSync(join(dir, 'members.json'), '{');
    expect(() => new MemberDirectory(dir).load()).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });

  it('C5: the directory is bounded', () => {
    const directory = new MemberDirectory(null);
    for (let i = 0; i < membershipLimits.membersMax; i++) directory.learn(`n${i}`, addresses(1000 + i));
    expect(() => directory.learn('one-more', addresses(9))).toThrow(
      expect.objectContaining({ code: 'LIMIT_EXCEEDED' }),
    );
  });

  it('C5/C4: snapshots carry the members (format 3); a format-2 snapshot still loads, with none', () => {
    const table = new LockTable();
    const context = encodeMemberContext(addresses(7504));
    table.setMember('n4', context);
    table.setMember('n5', encodeMemberContext(addresses(7506)));
    table.setMember('n5', null);
    const restored = LockTable.restore(table.snapshot());
    expect([...restored.members]).toEqual([['n4', context]]);
    expect(restored.snapshot()).toEqual(table.snapshot());
    // Format 2: the same array without the members section.
    const items = new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(
      new LockTable().snapshot(),
    ) as unknown[];
    expect(items[0]).toBe(3);
    expect(items.at(-1)).toBe(0);
    const v2 = new Packr({ useRecords: false, moreTypes: false }).pack([2, ...items.slice(1, -1)]);
    expect([...LockTable.restore(v2).members]).toEqual([]);
    // A snapshot's members reach a node's directory, and from there its transport.
    const { membership, host } = fakeMembership('n1');
    membership.onSnapshotInstalled(restored.members);
    expect(membership.directory.get('n4')).toEqual(addresses(7504));
    host.conf = { voters: ['n1', 'n4'], learners: [] };
    membership.tick();
    expect(host.peers.get('n4')).toEqual({ host: '127.0.0.1', port: 7504 });
  });
});

interface FakeHost extends MembershipHost {
  role: RaftStatus['role'];
  conf: { voters: string[]; learners: string[] };
  progress: Record<string, { match: number; next: number; state: string }>;
  lastIndex: number;
  connected: Set<string>;
  proposals: ConfChange[];
  refuse: ProposeResult | null;
  peers: ReadonlyMap<string, PeerAddress>;
  table: Map<string, string>;
  removedCalls: number;
  leaderId: string | null;
  sent: { to: string; message: PeerBody }[];
  deliver: ((to: string, message: PeerBody) => void) | null;
}

function fakeMembership(id: string): { membership: Membership; host: FakeHost } {
  const host: FakeHost = {
    id,
    role: 'leader',
    conf: { voters: ['n1', 'n2', 'n3'], learners: [] },
    progress: {},
    lastIndex: 5000,
    connected: new Set(['n1', 'n2', 'n3']),
    proposals: [],
    refuse: null,
    peers: new Map(),
    table: new Map(),
    removedCalls: 0,
    leaderId: 'n2',
    sent: [],
    deliver: null,
    sendPeer(to, message) {
      host.sent.push({ to, message });
      host.deliver?.(to, message);
      return true;
    },
    status(): RaftStatus {
      return {
        id,
        role: host.role,
        term: 2,
        leader: host.role === 'leader' ? id : host.leaderId,
        vote: null,
        commit: host.lastIndex,
        applied: host.lastIndex,
        firstIndex: 1,
        lastIndex: host.lastIndex,
        stableIndex: host.lastIndex,
        snapshotIndex: 0,
        conf: host.conf,
        leadTransferee: null,
        ...(host.role === 'leader' ? { progress: host.progress } : {}),
      };
    },
    proposeConfChange(change) {
      if (host.refuse !== null) return host.refuse;
      host.proposals.push(change);
      return { ok: true, index: host.lastIndex + 1, term: 2 };
    },
    transferLeadership: () => true,
    wake: () => undefined,
    peerConnected: (peer) => host.connected.has(peer),
    setPeers(peers) {
      host.peers = peers;
    },
    setTableMember(member, context) {
      if (context === null) host.table.delete(member);
      else host.table.set(member, context);
    },
    onRemoved() {
      host.removedCalls++;
    },
  };
  const membership = new Membership({
    host,
    directory: new MemberDirectory(null),
    log: silent,
    learnerCatchUpLagMax: 1000,
    electionTimeoutTicks: 10,
  });
  return { membership, host };
}

describe('C5: a node removed while it was down', () => {
  const away = membershipLimits.removedAwayElectionTimeouts * 10; // fakeMembership: 10 ticks each
  const ticks = (membership: Membership, count: number) => {
    for (let i = 0; i < count; i++) membership.tick();
  };

  it('C5: stops once a majority of the other voters have refused it as not a member for ten election timeouts', () => {
    const { membership, host } = fakeMembership('n5');
    host.role = 'follower';
    host.conf = { voters: ['n1', 'n2', 'n3', 'n4', 'n5'], learners: [] };
    // Two of the four others refuse: not a majority of them, however long.
    membership.onPeerVerdict('n1', false);
    membership.onPeerVerdict('n2', false);
    ticks(membership, away * 3);
    expect(host.removedCalls).toBe(0);
    // A third refuses: removed once its refusal too has lasted the whole time, not before.
    membership.onPeerVerdict('n3', false);
    ticks(membership, away - 1);
    expect(host.removedCalls).toBe(0);
    // Refusing again does not restart the count; the next tick completes it.
    membership.onPeerVerdict('n3', false);
    ticks(membership, 1);
    expect(host.removedCalls).toBe(1);
    ticks(membership, away);
    expect(host.removedCalls).toBe(1);
  });

  it('C5: a link accepted since clears the refusal; a node outside its own configuration never concludes', () => {
    const { membership, host } = fakeMembership('n3');
    host.role = 'follower';
    membership.onPeerVerdict('n1', false);
    membership.onPeerVerdict('n2', false);
    ticks(membership, away - 1);
    // n2 applied the change that added us after all: its refusal no longer counts.
    membership.onPeerVerdict('n2', true);
    ticks(membership, away * 2);
    expect(host.removedCalls).toBe(0);
    // A node joining (not yet in the configuration it knows) is refused by everyone until it is added.
    const joining = fakeMembership('n9');
    joining.host.role = 'follower';
    for (const peer of ['n1', 'n2', 'n3']) joining.membership.onPeerVerdict(peer, false);
    ticks(joining.membership, away * 2);
    expect(joining.host.removedCalls).toBe(0);
  });
});

describe('C5: the leader decides membership requests', () => {
  it('C5: bad requests get typed errors and propose nothing', async () => {
    const { membership, host } = fakeMembership('n1');
    const code = (promise: Promise<unknown>) =>
      promise.then(
        () => 'ok',
        (error: { code: string }) => error.code,
      );
    expect(await code(membership.add('n2', '127.0.0.1:1', 'ws://127.0.0.1:2'))).toBe('INVALID_ARGUMENT'); // duplicate
    expect(await code(membership.add('n4', 'nowhere', 'ws://127.0.0.1:2'))).toBe('INVALID_ARGUMENT');
    expect(await code(membership.add('n4', '127.0.0.1:1', 'http://x'))).toBe('INVALID_ARGUMENT');
    membership.directory.learn('n2', addresses(7502));
    expect(await code(membership.add('n4', '127.0.0.1:7502', 'ws://127.0.0.1:2'))).toBe('INVALID_ARGUMENT'); // n2's port
    expect(await code(membership.remove('n9'))).toBe('INVALID_ARGUMENT');
    expect(await code(membership.transfer('n9'))).toBe('INVALID_ARGUMENT');
    host.connected = new Set(['n1']);
    expect(await code(membership.remove('n2'))).toBe('UNAVAILABLE'); // n1 and dead n3 left: no live quorum
    host.connected = new Set(['n1', 'n2', 'n3']);
    host.refuse = { ok: false, code: 'CONF_CHANGE_PENDING', leader: 'n1' };
    expect(await code(membership.add('n4', '127.0.0.1:1', 'ws://127.0.0.1:2'))).toBe('UNAVAILABLE');
    host.refuse = null;
    host.role = 'follower';
    expect(await code(membership.add('n4', '127.0.0.1:1', 'ws://127.0.0.1:2'))).toBe('NOT_LEADER');
    expect(host.proposals).toEqual([]);
  });

  it('C5: an add carries the addresses and answers once its entry applies in the same term', async () => {
    const { membership, host } = fakeMembership('n1');
    const added = membership.add('n4', '127.0.0.1:7504', 'ws://127.0.0.1:7505');
    expect(host.proposals).toEqual([
      { type: 'addLearner', node: 'n4', context: encodeMemberContext(addresses(7504)) },
    ]);
    membership.onConfChangeApplied(5001, 2, host.proposals[0]!);
    await expect(added).resolves.toBeUndefined();
    expect(membership.directory.get('n4')).toEqual(addresses(7504));
    expect(host.table.get('n4')).toBe(host.proposals[0]!.context);
    // The same index from another term: overwritten, the caller hears NOT_LEADER.
    const lost = membership.remove('n3');
    membership.onConfChangeApplied(5001, 3, { type: 'remove', node: 'n2' });
    await expect(lost).rejects.toMatchObject({ code: 'NOT_LEADER' });
    // Leadership lost while waiting: the outcome is unknown.
    const unknown = membership.remove('n3');
    membership.onRoleChanged(false, 'n2');
    await expect(unknown).rejects.toMatchObject({ code: 'OUTCOME_UNKNOWN' });
  });

  it('C5: a caught-up, connected learner is promoted, one change per check; a lagging one is not', () => {
    const { membership, host } = fakeMembership('n1');
    host.conf = { voters: ['n1', 'n2', 'n3'], learners: ['n4', 'n5'] };
    host.progress = {
      n2: { match: 5000, next: 5001, state: 'replicate' },
      n3: { match: 5000, next: 5001, state: 'replicate' },
      n4: { match: 3000, next: 3001, state: 'replicate' }, // 2000 behind: not yet
      n5: { match: 4500, next: 4501, state: 'replicate' }, // within 1000, but not connected
    };
    const checks = (n: number) => {
      for (let i = 0; i < n * membershipLimits.promotionCheckTicks; i++) membership.tick();
    };
    checks(2);
    expect(host.proposals).toEqual([]);
    host.connected.add('n5');
    checks(1);
    expect(host.proposals).toEqual([{ type: 'addVoter', node: 'n5' }]);
    host.conf = { voters: ['n1', 'n2', 'n3', 'n5'], learners: ['n4'] };
    host.progress.n4 = { match: 4999, next: 5000, state: 'replicate' };
    host.connected.add('n4');
    checks(1);
    expect(host.proposals).toEqual([
      { type: 'addVoter', node: 'n5' },
      { type: 'addVoter', node: 'n4' },
    ]);
    host.role = 'follower';
    checks(2);
    expect(host.proposals).toHaveLength(2);
  });

  it('C5: a change asked on a follower is run by the leader, and its answer relayed', async () => {
    const leader = fakeMembership('n1');
    const follower = fakeMembership('n2');
    follower.host.role = 'follower';
    follower.host.leaderId = 'n1';
    follower.host.deliver = (to, message) => {
      expect(to).toBe('n1');
      if (message.kind === 'admin') leader.membership.onAdminRequest('n2', message.body);
    };
    leader.host.deliver = (to, message) => {
      expect(to).toBe('n2');
      if (message.kind === 'adminResult') follower.membership.onAdminResult('n1', message.body);
    };
    const added = follower.membership.change('addMember', 'n4', '127.0.0.1:7504', 'ws://127.0.0.1:7505');
    expect(follower.host.proposals).toEqual([]);
    expect(leader.host.proposals).toHaveLength(1);
    leader.membership.onConfChangeApplied(5001, 2, leader.host.proposals[0]!);
    await expect(added).resolves.toBeUndefined();
    // The leader's typed refusal travels back as the same error.
    await expect(follower.membership.change('removeMember', 'n9')).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/not a member/),
    });
    // No answer at all: OUTCOME_UNKNOWN once the wait runs out.
    leader.host.deliver = null;
    const lost = follower.membership.change('removeMember', 'n3');
    for (let i = 0; i < membershipLimits.confChangeWaitTicks + 20; i++) follower.membership.tick();
    await expect(lost).rejects.toMatchObject({ code: 'OUTCOME_UNKNOWN' });
    // …unless the change applies here first: then that is the answer (the leader may have removed itself).
    const removed = follower.membership.change('removeMember', 'n1');
    follower.membership.onConfChangeApplied(6000, 3, { type: 'remove', node: 'n1' });
    await expect(removed).resolves.toBeUndefined();
    const transferred = follower.membership.change('transferLeader', 'n3');
    follower.membership.onRoleChanged(false, 'n3');
    await expect(transferred).resolves.toBeUndefined();
  });

  it('C5: a node that applies its own removal says so once and stops taking part', () => {
    const { membership, host } = fakeMembership('n3');
    membership.onConfChangeApplied(10, 2, { type: 'remove', node: 'n3' });
    membership.onConfChangeApplied(10, 2, { type: 'remove', node: 'n3' });
    expect(host.removedCalls).toBe(1);
  });

  it('C5: the list shows roles, addresses, the leader, and match/lag on the leader', () => {
    const { membership, host } = fakeMembership('n1');
    membership.directory.learn('n1', addresses(7501));
    host.conf = { voters: ['n1', 'n2'], learners: ['n4'] };
    host.progress = { n2: { match: 4990, next: 4991, state: 'replicate' } };
    const view = membership.list();
    expect(view).toEqual([
      {
        id: 'n1',
        role: 'voter',
        peerAddress: '127.0.0.1:7501',
        clientUrl: 'ws://127.0.0.1:7502',
        leader: true,
        matchIndex: 5000,
        lag: 0,
      },
      {
        id: 'n2',
        role: 'voter',
        peerAddress: null,
        clientUrl: null,
        leader: false,
        matchIndex: 4990,
        lag: 10,
      },
      { id: 'n4', role: 'learner', peerAddress: null, clientUrl: null, leader: false },
    ]);
  });
});

describe('C5: the workload checker of the membership tests', () => {
  it('C5: flags two owners at once and a repeated sequence, passes a clean history', async () => {
    const { historyAnomalies } = await import('./membership-harness.ts');
    const grant = (sequence: number, grantedAtMs: number, unlockSentAtMs: number, worker = 0) => ({
      name: 'x',
      sequence,
      worker,
      grantedAtMs,
      unlockSentAtMs,
    });
    expect(historyAnomalies([grant(1, 0, 10), grant(2, 11, 20), grant(5, 21, Infinity)])).toEqual([]);
    expect(historyAnomalies([grant(1, 0, 10), grant(2, 5, 20, 1)])).toHaveLength(1);
    expect(historyAnomalies([grant(3, 0, 10), grant(3, 11, 20, 1)])).toHaveLength(1);
  });
});

describe('C5/C7: forwarded membership changes between peers are checked like every peer body', () => {
  it('C5/C7: admin bodies round-trip; malformed ones are refused with a reason', async () => {
    const { decodePeerBody, encodePeerBody } = await import('../../src/server/peer-messages.ts');
    const admin: PeerBody = {
      kind: 'admin',
      body: {
        id: 7,
        op: 'addMember',
        member: 'n4',
        peerAddress: '127.0.0.1:1',
        clientUrl: 'ws://127.0.0.1:2',
      },
    };
    expect(decodePeerBody('admin', encodePeerBody(admin))).toEqual({ ok: true, message: admin });
    const result: PeerBody = { kind: 'adminResult', body: { id: 7, code: 'UNAVAILABLE', message: 'busy' } };
    expect(decodePeerBody('adminResult', encodePeerBody(result))).toEqual({ ok: true, message: result });
    const packr = new Packr({ useRecords: false, moreTypes: false });
    for (const [kind, body] of [
      ['admin', { id: 1, op: 'dropTables', member: 'n4', peerAddress: '', clientUrl: '' }],
      ['admin', { id: -1, op: 'removeMember', member: 'n4', peerAddress: '', clientUrl: '' }],
      ['admin', { id: 1, op: 'removeMember', member: 'x'.repeat(600), peerAddress: '', clientUrl: '' }],
      ['admin', { id: 1, op: 'removeMember', member: 4 }],
      ['adminResult', { id: 1, code: 'NOPE', message: '' }],
      ['adminResult', { id: 1, code: '', message: 'x'.repeat(2000) }],
    ] as const)
      expect(decodePeerBody(kind, packr.pack(body)).ok).toBe(false);
  });
});

describe('C5/C7: membership request frames are checked field by field', () => {
  it('C5/C7: well-formed admin frames parse; missing or oversized fields answer INVALID_ARGUMENT', async () => {
    const { parseClientFrame } = await import('../../src/server/validate-frame.ts');
    const add = { t: 'req', id: 3, op: 'addMember', member: 'n4', peerAddress: 'h:1', clientUrl: 'ws://h:2' };
    expect(parseClientFrame(add)).toEqual({ ok: true, frame: add });
    expect(parseClientFrame({ t: 'req', id: 4, op: 'members' })).toEqual({
      ok: true,
      frame: { t: 'req', id: 4, op: 'members' },
    });
    expect(parseClientFrame({ t: 'req', id: 5, op: 'transferLeader', member: 'n2', extra: 1 })).toEqual({
      ok: true,
      frame: { t: 'req', id: 5, op: 'transferLeader', member: 'n2' },
    });
    for (const bad of [
      { ...add, member: '' },
      { ...add, peerAddress: 7 },
      { ...add, clientUrl: 'x'.repeat(600) },
      { t: 'req', id: 6, op: 'removeMember' },
      { t: 'req', id: 6, op: 'transferLeader', member: 'x'.repeat(200) },
    ]) {
      const parsed = parseClientFrame(bad);
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.error.code).toBe('INVALID_ARGUMENT');
    }
  });
});
