// The hostile-input fuzzer (C7), shared by `npm test` (test/fuzz/fuzz.test.ts, a short run) and
// `npm run fuzz` (scripts/fuzz.ts, as long as you like). It starts a live node and throws fast-check
// generated input at both of its ports — random bytes, mutated valid frames, valid frames out of order,
// oversized names, deep nesting, wrong types, floods — one socket per case, and checks:
//   - the node never crashes (no fatal error, it stays leader and keeps answering a real client);
//   - every error it sends carries a known code, and a frame it cannot accept closes the socket;
//   - the lock table's locks are exactly what they were (the fuzz principal holds no acquire permission;
//     a session the fuzz opens may come and go, a lock may not);
//   - memory stays bounded (heap growth below a limit, every fuzz socket gone at the end).

import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { connect } from '../../src/client/index.ts';
import { isErrorCode } from '../../src/errors.ts';
import { clientFrameBytesMax } from '../../src/protocol.ts';
import { hashPassword } from '../../src/security/users.ts';
import { peerPath } from '../../src/transport/handshake.ts';
import { type LiveCluster, startLiveCluster } from '../security/live.ts';

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export interface FuzzReport {
  cases: number;
  framesClient: number;
  framesPeer: number;
  closedByServer: number;
  typedErrors: number;
  problems: string[];
  heapGrowthBytes: number;
}

type Port = 'client' | 'peer';
interface Case {
  readonly port: Port;
  readonly kind: string;
  readonly frames: readonly (Uint8Array | string)[];
  /** The server must close this socket (the input can never be valid). */
  readonly mustClose: boolean;
  /** Send the first frame (a valid hello), wait for the welcome, then the rest: fuzz the open session. */
  readonly afterWelcome?: boolean;
}

const fuzzPassword = 'fuzz-password';
const hello = (password = fuzzPassword) => packr.pack({ t: 'hello', v: 1, principal: 'fuzz', password });
const validRequests = [
  { t: 'req', id: 1, op: 'lock', requestNo: 1, name: 'fuzz/a', scope: 'UNLOCK_ON_SESSION_LOSS' },
  {
    t: 'req',
    id: 2,
    op: 'lock',
    requestNo: 2,
    name: 'held',
    scope: 'UNLOCK_ON_CONNECTION_LOSS',
    timeoutMs: 5,
  },
  { t: 'req', id: 3, op: 'unlock', requestNo: 3, name: 'held', sequence: 1 },
  { t: 'req', id: 4, op: 'cancel', requestNo: 1 },
  { t: 'req', id: 5, op: 'ping' },
  { t: 'req', id: 6, op: 'status' },
  { t: 'req', id: 7, op: 'locks', prefix: '', limit: 10 },
  { t: 'req', id: 8, op: 'close' },
];
const validFrames = [hello(), ...validRequests.map((frame) => packr.pack(frame))];

const mutate = fc
  .record({
    frame: fc.constantFrom(...validFrames),
    edits: fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), op: fc.nat(2) }), {
      minLength: 1,
      maxLength: 6,
    }),
  })
  .map(({ frame, edits }) => {
    let bytes = Array.from(frame);
    for (const { at, byte, op } of edits) {
      const i = at % (bytes.length + 1);
      if (op === 0) bytes[i % bytes.length] = byte;
      else if (op === 1) bytes.splice(i, 0, byte);
      else bytes = bytes.slice(0, i);
    }
    return Uint8Array.from(bytes);
  });

function nested(depth: number, map: boolean): Uint8Array {
  const bytes = new Uint8Array(map ? depth * 3 + 1 : depth + 1);
  let at = 0;
  for (let d = 0; d < depth; d++) {
    if (map) {
      bytes[at++] = 0x81;
      bytes[at++] = 0xa1;
      bytes[at++] = 0x78;
    } else bytes[at++] = 0x91;
  }
  bytes[at] = 0x01;
  return bytes;
}

const wrongTypes = fc
  .record({
    base: fc.constantFrom(...validRequests, { t: 'hello', v: 1, principal: 'fuzz', password: fuzzPassword }),
    key: fc.constantFrom(
      't',
      'v',
      'id',
      'op',
      'requestNo',
      'name',
      'scope',
      'timeoutMs',
      'sequence',
      'prefix',
      'limit',
      'principal',
      'password',
      'session',
    ),
    value: fc.oneof(
      fc.anything({
        maxDepth: 3,
        withBigInt: false,
        withDate: false,
        withMap: false,
        withSet: false,
        withTypedArray: false,
      }),
      fc.constantFrom(-1, 0, 1.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, '', [], {}, null, true),
    ),
  })
  .map(({ base, key, value }) => {
    try {
      return packr.pack({ ...base, [key]: value });
    } catch {
      return packr.pack(base);
    }
  });

const clientCase: fc.Arbitrary<Case> = fc.oneof(
  fc
    .uint8Array({ minLength: 1, maxLength: 2048 })
    .map((bytes) => ({ port: 'client' as const, kind: 'random bytes', frames: [bytes], mustClose: true })),
  fc.uint8Array({ minLength: 1, maxLength: 512 }).map((bytes) => ({
    port: 'client' as const,
    kind: 'random bytes after hello',
    afterWelcome: true,
    frames: [hello(), bytes],
    mustClose: false,
  })),
  fc.array(mutate, { minLength: 1, maxLength: 4 }).map((frames) => ({
    port: 'client' as const,
    kind: 'mutated frames',
    afterWelcome: true,
    frames: [hello(), ...frames],
    mustClose: false,
  })),
  fc.array(fc.constantFrom(...validFrames), { minLength: 1, maxLength: 8 }).map((frames) => ({
    port: 'client' as const,
    kind: 'valid frames out of order',
    frames,
    mustClose: false,
  })),
  fc.integer({ min: 513, max: clientFrameBytesMax + 4096 }).map((length) => ({
    port: 'client' as const,
    kind: 'oversized name',
    afterWelcome: true,
    frames: [
      hello(),
      packr.pack({
        t: 'req',
        id: 1,
        op: 'lock',
        requestNo: 1,
        name: 'x'.repeat(length),
        scope: 'UNLOCK_ON_SESSION_LOSS',
      }),
    ],
    mustClose: false,
  })),
  fc.record({ depth: fc.integer({ min: 9, max: 60_000 }), map: fc.boolean() }).map(({ depth, map }) => ({
    port: 'client' as const,
    kind: 'deep nesting',
    frames: [nested(depth, map)],
    mustClose: true,
  })),
  fc.array(wrongTypes, { minLength: 1, maxLength: 4 }).map((frames) => ({
    port: 'client' as const,
    kind: 'wrong types',
    afterWelcome: true,
    frames: [hello(), ...frames],
    mustClose: false,
  })),
  fc
    .record({ count: fc.integer({ min: 200, max: 2_000 }), garbage: fc.boolean() })
    .map(({ count, garbage }) => ({
      port: 'client' as const,
      kind: 'flood',
      afterWelcome: true,
      frames: [
        hello(),
        ...Array.from({ length: count }, (_, i) =>
          garbage
            ? packr.pack({ t: 'req', id: i, op: 'lock', requestNo: 0, name: '' })
            : packr.pack({ t: 'req', id: i, op: 'ping' }),
        ),
      ],
      mustClose: false,
    })),
  fc
    .constantFrom('text frame', '{"t":"hello"}')
    .map((text) => ({ port: 'client' as const, kind: 'text frame', frames: [text], mustClose: true })),
);

const peerCase: fc.Arbitrary<Case> = fc.oneof(
  fc
    .uint8Array({ minLength: 1, maxLength: 4096 })
    .map((bytes) => ({ port: 'peer' as const, kind: 'peer random bytes', frames: [bytes], mustClose: true })),
  fc
    .record({
      cluster: fc.string({ maxLength: 200 }),
      from: fc.string({ maxLength: 200 }),
      to: fc.constantFrom('n1', 'n2', ''),
      nonce: fc.uint8Array({ minLength: 0, maxLength: 40 }),
      proof: fc.uint8Array({ minLength: 0, maxLength: 40 }),
      v: fc.constantFrom(1, 2, 0, -1),
    })
    .map((hello) => ({
      port: 'peer' as const,
      kind: 'peer forged hello',
      frames: [
        packr.pack({
          t: 'hello',
          ...hello,
          nonce: Buffer.from(hello.nonce),
          proof: Buffer.from(hello.proof),
        }),
      ],
      mustClose: true,
    })),
  fc.record({ depth: fc.integer({ min: 5, max: 4_000 }), map: fc.boolean() }).map(({ depth, map }) => ({
    port: 'peer' as const,
    kind: 'peer deep nesting',
    frames: [nested(Math.min(depth, map ? 1_300 : 4_000), map)],
    mustClose: true,
  })),
  fc.constantFrom(...validFrames).map((frame) => ({
    port: 'peer' as const,
    kind: 'client frame on peer port',
    frames: [frame],
    mustClose: true,
  })),
  fc.integer({ min: 4_097, max: 100_000 }).map((length) => ({
    port: 'peer' as const,
    kind: 'peer oversized frame',
    frames: [new Uint8Array(length)],
    mustClose: true,
  })),
);

function lockState(cluster: LiveCluster): string {
  const table = cluster.servers[0]!.node.lockTable;
  return JSON.stringify({ locks: table.listLocks(), lastSequence: table.lastSequence });
}

/** Runs one case: sends its frames, collects what comes back, waits for the server to close (or closes). */
function runCase(cluster: LiveCluster, c: Case, report: FuzzReport): Promise<void> {
  const url = c.port === 'client' ? cluster.urls[0]! : `ws://127.0.0.1:${cluster.peerPorts[0]!}${peerPath}`;
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    let sent = 0;
    let closedByUs = false;
    let quiet: NodeJS.Timeout | null = null;
    // Once everything is sent, a socket the node keeps open is closed by us after 150 ms without an answer.
    const armQuiet = () => {
      if (c.mustClose || sent < c.frames.length) return;
      if (quiet !== null) clearTimeout(quiet);
      quiet = setTimeout(() => {
        closedByUs = true;
        ws.close(1000);
      }, 150);
    };
    const sendAll = (upTo = c.frames.length) => {
      if (sent >= upTo) return;
      const from = sent;
      sent = upTo;
      for (const frame of c.frames.slice(from, upTo)) {
        if (ws.readyState !== WebSocket.OPEN) break;
        ws.send(frame, { binary: typeof frame !== 'string' });
        if (c.port === 'client') report.framesClient++;
        else report.framesPeer++;
      }
      armQuiet();
    };
    const giveUp = setTimeout(() => {
      closedByUs = true;
      ws.terminate();
    }, 3_000);
    ws.on('open', () => {
      if (c.port === 'client') sendAll(c.afterWelcome === true ? 1 : c.frames.length);
    });
    ws.on('message', (data) => {
      if (c.port === 'peer') {
        sendAll(); // after the challenge
        return;
      }
      let frame: { t?: unknown; code?: unknown; ok?: unknown; error?: { code?: unknown } };
      try {
        frame = unpackr.unpack(data as Buffer) as typeof frame;
      } catch {
        report.problems.push(`${c.kind}: the node sent an undecodable frame`);
        return;
      }
      if (frame.t === 'welcome') sendAll();
      armQuiet();
      const code =
        frame.t === 'error'
          ? frame.code
          : frame.t === 'res' && frame.ok === false
            ? frame.error?.code
            : undefined;
      if (code !== undefined) {
        if (isErrorCode(code)) report.typedErrors++;
        else report.problems.push(`${c.kind}: untyped error ${JSON.stringify(code)}`);
      }
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      clearTimeout(giveUp);
      if (quiet !== null) clearTimeout(quiet);
      if (!closedByUs) report.closedByServer++;
      else if (c.mustClose) report.problems.push(`${c.kind}: the node did not close the socket`);
      resolve();
    });
  });
}

export async function fuzzUsers() {
  return {
    users: [
      { principal: 'control', password: 'password', roles: ['admin'] },
      // No acquire permission at all: nothing a fuzz session does may change a lock (S12).
      { principal: 'fuzz', password: await hashPassword(fuzzPassword), roles: ['reader'] },
    ],
  };
}

export async function runFuzz(options: {
  readonly runs: number;
  readonly seed?: number;
  readonly log?: (line: string) => void;
}): Promise<FuzzReport> {
  const cluster = await startLiveCluster({ size: 1, users: await fuzzUsers() });
  const report: FuzzReport = {
    cases: 0,
    framesClient: 0,
    framesPeer: 0,
    closedByServer: 0,
    typedErrors: 0,
    problems: [],
    heapGrowthBytes: 0,
  };
  try {
    await cluster.waitForLeader();
    // Some state to protect: a held lock with a waiter.
    const owner = await connect({ servers: cluster.urls, principal: 'control', password: 'password' });
    const waiter = await connect({ servers: cluster.urls, principal: 'control', password: 'password' });
    await owner.lock('held');
    void waiter.lock('held').catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const before = lockState(cluster);
    const heapBefore = process.memoryUsage().heapUsed;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ arbitrary: clientCase, weight: 3 }, { arbitrary: peerCase, weight: 1 }),
        async (c) => {
          report.cases++;
          await runCase(cluster, c, report);
          if (cluster.fatal.length > 0) throw new Error(`node crashed: ${String(cluster.fatal[0])}`);
          if (report.cases % 200 === 0)
            options.log?.(`${report.cases} cases, ${report.framesClient + report.framesPeer} frames`);
        },
      ),
      { numRuns: options.runs, seed: options.seed, endOnFailure: true },
    );
    // The node still serves a real client, and no lock moved.
    const lock = await owner.listLocks();
    if (!lock.some((l) => l.name === 'held')) report.problems.push('the held lock vanished');
    if (lockState(cluster) !== before)
      report.problems.push(`locks changed: ${before} → ${lockState(cluster)}`);
    if (!cluster.servers[0]!.node.isLeader) report.problems.push('the node lost leadership');
    (globalThis as { gc?: () => void }).gc?.();
    report.heapGrowthBytes = process.memoryUsage().heapUsed - heapBefore;
    const deadline = Date.now() + 5_000;
    while (cluster.servers[0]!.gateway.connectionCount > 2 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    if (cluster.servers[0]!.gateway.connectionCount > 2)
      report.problems.push(`${cluster.servers[0]!.gateway.connectionCount} client sockets left open`);
    await waiter.close();
    await owner.close();
  } finally {
    await cluster.stop();
  }
  return report;
}
