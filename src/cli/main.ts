// The `raftlock` command: dispatches to its subcommands; errors become the exit status (exit-codes.ts).

import { isRaftlockError } from '../errors.ts';
import { backupUsage, runBackup } from './backup.ts';
import { clusterUsage, runClusterUp } from './cluster-up.ts';
import { exitCodeFor } from './exit-codes.ts';
import { lockUsage, runLockExec } from './lock-exec.ts';
import { locksUsage, runLocks } from './locks.ts';
import { membersUsage, runLeader, runMembers } from './members.ts';
import { restoreUsage, runRestore } from './restore.ts';
import { runStart, startUsage } from './start.ts';
import { runStatus, statusUsage } from './status.ts';
import { runUser, userUsage } from './user.ts';

const usage = `usage:
  ${startUsage.split('\n').join('\n  ')}

  ${clusterUsage.split('\n').join('\n  ')}

  ${statusUsage.split('\n').join('\n  ')}

  ${lockUsage.split('\n').join('\n  ')}

  ${locksUsage.split('\n').join('\n  ')}

  ${membersUsage.split('\n').join('\n  ')}

  ${userUsage.split('\n').join('\n  ')}

  ${backupUsage.split('\n').join('\n  ')}

  ${restoreUsage.split('\n').join('\n  ')}`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'start':
      return runStart(rest);
    case 'cluster':
      if (rest[0] === 'up') return runClusterUp(rest.slice(1));
      break;
    case 'status':
      return runStatus(rest);
    case 'user':
      return runUser(rest);
    case 'lock':
      return runLockExec(rest);
    case 'locks':
      return runLocks(rest);
    case 'members':
      return runMembers(rest);
    case 'leader':
      return runLeader(rest);
    case 'backup':
      return runBackup(rest);
    case 'restore':
      return runRestore(rest);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${usage}\n`);
      return 0;
    default:
      break;
  }
  process.stderr.write(`${usage}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The server and cluster commands return only once everything is closed; exit promptly anyway.
    // `lock` may leave a session it cannot reach still reconnecting; that must not hold the exit either.
    if (!promptExit.has(argvCommand() ?? '')) return;
    setTimeout(() => process.exit(code), 100).unref();
  },
  (error: unknown) => {
    const message = isRaftlockError(error)
      ? `${error.code}: ${error.message}`
      : String((error as Error)?.stack ?? error);
    process.stderr.write(`raftlock: ${message}\n`);
    process.exit(exitCodeFor(error));
  },
);

const promptExit = new Set(['start', 'cluster', 'lock', 'locks', 'members', 'leader', 'backup', 'restore']);

function argvCommand(): string | undefined {
  return process.argv[2];
}
