// `raftlock lock NAME -- CMD ARGS…`: holds a lock while a command runs.
//
// The child gets RAFTLOCK_LOCK and RAFTLOCK_SEQUENCE (the fencing token, S8) in its environment. When
// ownership ends for any reason — a loss notice, a dropped connection for UNLOCK_ON_CONNECTION_LOSS, or
// the client's clock reaching `safeUntil()`, which already stops short of the cluster's own bound by the
// safety margin — the child gets SIGTERM at once, before the cluster can grant the lock to anyone else
// (S10), and SIGKILL if it is still running `--kill-after` ms later. SIGINT/SIGTERM/SIGHUP sent to
// raftlock are passed on to the child. When the child exits the lock is released.
//
// Exit status: the child's (128 + signal number if a signal ended it) when the lock was held throughout;
// 3 (`exitLockLost`) when ownership ended while the child ran, whatever the child did; otherwise the code
// of what went wrong before the child started (exit-codes.ts), e.g. TIMEOUT's when the lock was not
// acquired in time.

import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import { connect, type Session, SessionLockScope } from '../client/index.ts';
import { InvalidArgumentError } from '../errors.ts';
import { clientCredentials, clientOptionsUsage, clientParseOptions } from './client-options.ts';
import { exitLockLost } from './exit-codes.ts';

export const lockUsage = `raftlock lock NAME [--scope session|connection] [--timeout MS] [--kill-after MS]
             [--safety-margin MS] [--servers URLS] [--principal NAME] [--password-file FILE] [--ca FILE]
             -- CMD ARGS…
  runs CMD while holding NAME; CMD's environment has RAFTLOCK_LOCK and RAFTLOCK_SEQUENCE
  --scope          session (UNLOCK_ON_SESSION_LOSS, default) or connection (UNLOCK_ON_CONNECTION_LOSS)
  --timeout MS     give up waiting for the lock after MS (exit status: TIMEOUT's code)
  --kill-after MS  SIGKILL the child this long after SIGTERM when ownership ended (default 5000)
  --safety-margin MS  how early to stop before the cluster's bound (default 250)
  exit status: the command's; 3 if ownership ended while it ran; 10+ for a raftlock error code
${clientOptionsUsage}`;

const scopes: Record<string, SessionLockScope> = {
  session: SessionLockScope.UNLOCK_ON_SESSION_LOSS,
  connection: SessionLockScope.UNLOCK_ON_CONNECTION_LOSS,
  UNLOCK_ON_SESSION_LOSS: SessionLockScope.UNLOCK_ON_SESSION_LOSS,
  UNLOCK_ON_CONNECTION_LOSS: SessionLockScope.UNLOCK_ON_CONNECTION_LOSS,
};

function milliseconds(text: string | undefined, flag: string, fallback: number | undefined) {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${flag} must be a whole number of milliseconds, got ${text}`);
  }
  return value;
}

export async function runLockExec(argv: readonly string[]): Promise<number> {
  const split = argv.indexOf('--');
  const own = split < 0 ? argv : argv.slice(0, split);
  const command = split < 0 ? [] : argv.slice(split + 1);
  const { values, positionals } = parseArgs({
    args: [...own],
    options: {
      ...clientParseOptions,
      scope: { type: 'string', default: 'session' },
      timeout: { type: 'string' },
      'kill-after': { type: 'string' },
      'safety-margin': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(`${lockUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new InvalidArgumentError(`expected one lock name\n${lockUsage}`);
  if (command.length === 0) throw new InvalidArgumentError(`expected -- CMD ARGS…\n${lockUsage}`);
  const name = positionals[0]!;
  const scope = scopes[values.scope];
  if (scope === undefined) throw new InvalidArgumentError(`--scope must be session or connection`);
  const timeoutMs = milliseconds(values.timeout, '--timeout', undefined);
  const killAfterMs = milliseconds(values['kill-after'], '--kill-after', 5_000)!;
  const safetyMarginMs = milliseconds(values['safety-margin'], '--safety-margin', undefined);

  const session = await connect({
    ...clientCredentials(values),
    ...(safetyMarginMs === undefined ? {} : { safetyMarginMs }),
  });
  try {
    const lock = await session.lock(name, scope, timeoutMs === undefined ? {} : { timeoutMs });
    const child = spawn(command[0]!, command.slice(1), {
      stdio: 'inherit',
      env: { ...process.env, RAFTLOCK_LOCK: name, RAFTLOCK_SEQUENCE: String(lock.getSequence()) },
    });
    let lostReason: string | null = null;
    let killTimer: NodeJS.Timeout | null = null;
    const endOwnership = () => {
      const reason = String(lock.signal.reason);
      if (reason === 'unlocked') return;
      lostReason = reason;
      process.stderr.write(`raftlock: lock ${name} no longer owned (${reason}); sending SIGTERM\n`);
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      killTimer.unref();
    };
    if (lock.signal.aborted) endOwnership();
    else lock.signal.addEventListener('abort', endOwnership, { once: true });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    const forwarded: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const signal of forwarded) process.on(signal, forward);
    const status = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        resolve(code ?? 128 + (signal === null ? 0 : (constants.signals[signal] ?? 0)));
      });
    }).finally(() => {
      for (const signal of forwarded) process.off(signal, forward);
      lock.signal.removeEventListener('abort', endOwnership);
      if (killTimer !== null) clearTimeout(killTimer);
    });
    if (lostReason !== null) {
      process.stderr.write(`raftlock: ownership of ${name} ended while the command ran (${lostReason})\n`);
      return exitLockLost;
    }
    await lock.unlock();
    return status;
  } finally {
    await closeWithin(session, closeWaitMs);
  }
}

/** How long raftlock waits to close its session; a session it cannot reach expires in the cluster. */
const closeWaitMs = 3_000;

async function closeWithin(session: Session, waitMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, waitMs);
  });
  await Promise.race([session.close().catch(() => undefined), gaveUp]);
  clearTimeout(timer);
}
