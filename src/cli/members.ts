// `raftlock members …` and `raftlock leader transfer ID`: cluster membership from the command line (C5),
// through a client session with the `admin` permission. Changes go to the leader: a node that does not
// lead answers NOT_LEADER with the leader's URL, and the command asks there.

import { parseArgs } from 'node:util';
import { connect, type MembersResult, type Session } from '../client/index.ts';
import { InvalidArgumentError, isRaftlockError, type RaftlockError } from '../errors.ts';
import {
  type ClientCredentials,
  clientCredentials,
  clientOptionsUsage,
  clientParseOptions,
  formatTable,
} from './client-options.ts';

export const membersUsage = `raftlock members [--json] [client options]
raftlock members add ID --peer-url HOST:PORT --client-url ws://HOST:PORT [client options]
raftlock members remove ID [client options]
raftlock leader transfer ID [client options]
  lists the members (role, addresses, leader, replication lag), adds one as a learner (the leader
  promotes it to voter once it has caught up), removes one, or hands leadership to a voter (C5);
  needs the admin permission
${clientOptionsUsage}`;

/** How long a change keeps looking for the leader (elections, a change still in progress). */
const leaderSearchMs = 20_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Errors after which asking again (elsewhere, or a little later) may succeed. */
function retryable(error: RaftlockError): boolean {
  return (
    error.code === 'NOT_LEADER' ||
    error.code === 'TRANSFERRING' ||
    error.code === 'CONNECTION_LOST' ||
    (error.code === 'UNAVAILABLE' && /in progress/.test(error.message))
  );
}

/**
 * Runs `work` on a session with the leader: connects to any server and follows NOT_LEADER hints,
 * waiting through elections and a membership change still in progress, up to `leaderSearchMs`.
 */
export async function onLeader<T>(
  credentials: ClientCredentials,
  work: (session: Session) => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + leaderSearchMs;
  let servers = credentials.servers;
  for (;;) {
    const session = await connect({ ...credentials, servers, connectDeadlineMs: 10_000 });
    try {
      return await work(session);
    } catch (error) {
      if (!isRaftlockError(error) || !retryable(error) || Date.now() >= deadline) throw error;
      const hint = (error as RaftlockError & { leaderUrl?: string }).leaderUrl;
      servers =
        hint === undefined
          ? credentials.servers
          : [hint, ...credentials.servers.filter((server) => server !== hint)];
      if (hint === undefined || error.code !== 'NOT_LEADER') await sleep(250);
    } finally {
      await session.close().catch(() => undefined);
    }
  }
}

/** The leader's view when it can be had (it alone knows replication lag), else the first node's. */
export async function listMembers(credentials: ClientCredentials): Promise<MembersResult> {
  const session = await connect(credentials);
  let result: MembersResult;
  try {
    result = await session.members();
  } finally {
    await session.close().catch(() => undefined);
  }
  if (result.leader === null || result.leader === result.node) return result;
  const leaderUrl = result.members.find((member) => member.id === result.leader)?.clientUrl;
  if (leaderUrl === null || leaderUrl === undefined) return result;
  try {
    const leader = await connect({ ...credentials, servers: [leaderUrl], connectDeadlineMs: 3_000 });
    try {
      return await leader.members();
    } finally {
      await leader.close().catch(() => undefined);
    }
  } catch {
    return result;
  }
}

function printMembers(result: MembersResult, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const rows = [['ID', 'ROLE', 'LEADER', 'PEER', 'CLIENT', 'MATCH', 'LAG']];
  for (const member of result.members) {
    rows.push([
      member.id,
      member.role,
      member.leader ? 'yes' : '',
      member.peerAddress ?? '?',
      member.clientUrl ?? '?',
      member.matchIndex === undefined ? '-' : String(member.matchIndex),
      member.lag === undefined ? '-' : String(member.lag),
    ]);
  }
  process.stdout.write(`${formatTable(rows)}\n(as seen by ${result.node})\n`);
}

/** `raftlock members [add|remove] …` */
export async function runMembers(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      ...clientParseOptions,
      json: { type: 'boolean' },
      'peer-url': { type: 'string' },
      'client-url': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    process.stdout.write(`${membersUsage}\n`);
    return 0;
  }
  const credentials = clientCredentials(values);
  const [action, id, ...extra] = positionals;
  if (extra.length > 0) throw new InvalidArgumentError(`unexpected arguments: ${extra.join(' ')}`);
  switch (action) {
    case undefined:
    case 'list':
      printMembers(await listMembers(credentials), values.json === true);
      return 0;
    case 'add': {
      if (id === undefined) throw new InvalidArgumentError('members add needs an ID');
      const peerAddress = values['peer-url'];
      const clientUrl = values['client-url'];
      if (peerAddress === undefined || clientUrl === undefined)
        throw new InvalidArgumentError(
          'members add needs --peer-url HOST:PORT and --client-url ws://HOST:PORT',
        );
      await onLeader(credentials, (session) => session.addMember({ id, peerAddress, clientUrl }));
      process.stdout.write(`added ${id} as a learner; the leader promotes it once it has caught up\n`);
      return 0;
    }
    case 'remove':
      if (id === undefined) throw new InvalidArgumentError('members remove needs an ID');
      await onLeader(credentials, (session) => session.removeMember(id));
      process.stdout.write(`removed ${id}\n`);
      return 0;
    default:
      throw new InvalidArgumentError(`unknown members action ${JSON.stringify(action)} (add, remove)`);
  }
}

/** `raftlock leader transfer ID` */
export async function runLeader(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: { ...clientParseOptions, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    process.stdout.write(`${membersUsage}\n`);
    return 0;
  }
  const [action, id, ...extra] = positionals;
  if (action !== 'transfer' || id === undefined || extra.length > 0)
    throw new InvalidArgumentError('usage: raftlock leader transfer ID');
  const credentials = clientCredentials(values);
  await onLeader(credentials, (session) => session.transferLeader(id));
  process.stdout.write(`${id} leads\n`);
  return 0;
}
