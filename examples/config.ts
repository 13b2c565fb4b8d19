// Where the examples find the cluster: server URLs as arguments, else RAFTLOCK_SERVERS (comma-separated),
// else the three nodes `npm start` (raftlock cluster up) opens. Credentials from RAFTLOCK_PRINCIPAL and
// RAFTLOCK_PASSWORD, else the default user.

import type { ConnectOptions } from 'raftlock';

export function connectOptions(argv: readonly string[] = process.argv.slice(2)): ConnectOptions {
  const fromEnv = process.env.RAFTLOCK_SERVERS?.split(',').filter((url) => url.length > 0) ?? [];
  const servers =
    argv.length > 0
      ? argv
      : fromEnv.length > 0
        ? fromEnv
        : ['ws://127.0.0.1:7401', 'ws://127.0.0.1:7402', 'ws://127.0.0.1:7403'];
  return {
    servers,
    principal: process.env.RAFTLOCK_PRINCIPAL ?? 'control',
    password: process.env.RAFTLOCK_PASSWORD ?? 'password',
  };
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Runs `main` when the file is the entry point; exits 1 on any error. */
export function runIfMain(url: string, main: () => Promise<void>): void {
  if (process.argv[1] === undefined || !url.endsWith(process.argv[1].replace(/\\/g, '/'))) return;
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
