// `raftlock restore --from FILE --data-dir DIR --voters IDS`: seeds an empty data directory of a new
// cluster's node from a backup (src/backup/restore.ts). Run it for every node of the new cluster with
// the same file and the same voters, then start the nodes as usual.

import { parseArgs } from 'node:util';
import { restoreDataDir } from '../backup/restore.ts';
import { InvalidArgumentError } from '../errors.ts';

export const restoreUsage = `raftlock restore --from FILE --data-dir DIR --voters ID,ID,ID [--sequence-skip N]
  seeds an EMPTY data directory for a node of a new cluster from a backup (every node: same file, same voters)
  --voters         the new cluster's node ids, as its nodes' --id / --peers name them
  --sequence-skip  add N to the sequence counter: new grants get sequences above any the old cluster
                   granted after the backup (default 0)`;

export async function runRestore(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      from: { type: 'string' },
      'data-dir': { type: 'string' },
      voters: { type: 'string' },
      'sequence-skip': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${restoreUsage}\n`);
    return 0;
  }
  if (values.from === undefined || values['data-dir'] === undefined || values.voters === undefined)
    throw new InvalidArgumentError('restore needs --from FILE, --data-dir DIR and --voters IDS');
  const skipText = values['sequence-skip'] ?? '0';
  const sequenceSkip = Number(skipText);
  if (!/^\d+$/.test(skipText) || !Number.isSafeInteger(sequenceSkip))
    throw new InvalidArgumentError(`--sequence-skip: not a non-negative integer: ${skipText}`);
  const report = await restoreDataDir({
    from: values.from,
    dataDir: values['data-dir'],
    voters: values.voters.split(','),
    sequenceSkip,
  });
  const { header } = report;
  process.stdout.write(
    `restored ${report.dataDir}: backup of cluster ${header.clusterId} taken ${header.createdAt} at index ${report.index} ` +
      `(term ${report.term}), ${header.locks} locks, ${header.sessions} sessions, last sequence ${report.lastSequence}; ` +
      `voters ${report.voters.join(',')}\n`,
  );
  return 0;
}
