// `raftlock locks`: every lock with its owner, sequence, scope and waiters (S15), read linearizably
// through a session, page by page.

import { parseArgs } from 'node:util';
import { connect, type LockView } from '../client/index.ts';
import { clientCredentials, clientOptionsUsage, clientParseOptions, formatTable } from './client-options.ts';

export const locksUsage = `raftlock locks [--prefix P] [--json] [--servers URLS] [--principal NAME] [--password-file FILE] [--ca FILE]
  lists locks, owners (session ids), sequences, scopes and waiters (S15)
${clientOptionsUsage}`;

/** Rows per `listLocks` page. */
const pageSize = 1_000;

export async function runLocks(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      ...clientParseOptions,
      prefix: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${locksUsage}\n`);
    return 0;
  }
  const credentials = clientCredentials(values);
  const session = await connect(credentials);
  try {
    const locks: LockView[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await session.listLocks({
        ...(values.prefix === undefined ? {} : { prefix: values.prefix }),
        ...(after === undefined ? {} : { after }),
        limit: pageSize,
      });
      locks.push(...page);
      if (page.length < pageSize) break;
      after = page[page.length - 1]!.name;
    }
    if (values.json === true) {
      process.stdout.write(`${JSON.stringify(locks, null, 2)}\n`);
    } else {
      const rows = [['NAME', 'OWNER', 'SEQUENCE', 'SCOPE', 'WAITERS']];
      for (const lock of locks) {
        rows.push([
          lock.name,
          String(lock.owner),
          String(lock.sequence),
          lock.scope,
          lock.waiters.length === 0 ? '-' : lock.waiters.join(','),
        ]);
      }
      process.stdout.write(`${formatTable(rows)}\n`);
    }
    return 0;
  } finally {
    await session.close().catch(() => undefined);
  }
}
