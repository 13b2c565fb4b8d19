// Clients of the lock table under the simulator: a handful of sessions that open, acquire (both
// scopes, a few hot names, some with deadlines), release (with and without a fencing sequence),
// cancel, lose and regain connections (epochs), close and expire — and retry. Each call makes one
// proposal payload: an encoded lock-table entry stamped with the leader's time (virtual time, with
// a little jitter so a new leader's clock can lag). Proposals may be lost on leader changes; the
// clients resend a request they have not seen committed with the same request number, and also
// repeat committed ones at random, so dedupe (exactly once) is exercised all the time.
//
// The clients learn what happened from the committed history (`LockHistory.onCommitted`), like a
// real client learns from its answers: session ids, epochs, grants. They also check exactly-once:
// a retried request must get the answer its first application earned.

import type { ErrorCode } from '../../src/errors.ts';
import type { AcquireCommand, Command, ReleaseCommand, Result, SessionId } from '../../src/locks/index.ts';
import { encodeEntry, SessionLockScope } from '../../src/locks/index.ts';
import { type CommittedEntry, type LockHistory, LockViolation, simLockLimits } from './lock-table-machine.ts';

type RequestCommand = AcquireCommand | ReleaseCommand;

const hotNames = ['a', 'b', 'c'];
const sessionsTarget = 5;
/** A request not seen committed this many ticks after it was sent is sent again. */
const resendAfterTicks = 40;
const window = simLockLimits.dedupeResultsPerSessionMax!;

interface ClientSession {
  readonly id: SessionId;
  nextRequestNo: number;
  /** The connection epoch as last committed. */
  epoch: number;
  /** Locks held, as the committed effects say: name → sequence. */
  readonly held: Map<string, number>;
  /** Acquires sent, recent first-sent last (for cancel). */
  readonly acquires: AcquireCommand[];
  /** Requests (acquire/release) sent, by number, and when last sent. */
  readonly sent: Map<number, { command: Command; tick: number; committed: boolean }>;
  /** Highest request number seen committed. */
  committedMax: number;
}

type AcquireStatus =
  | { kind: 'granted'; sequence: number }
  | { kind: 'waiting' }
  | { kind: 'error'; code: ErrorCode };

const waitEndCodes: Record<string, ErrorCode> = {
  cancelled: 'ABORTED',
  timeout: 'TIMEOUT',
  connectionLost: 'CONNECTION_LOST',
  sessionClosed: 'SESSION_CLOSED',
  sessionExpired: 'SESSION_CLOSED',
};

export class LockWorkload {
  private readonly sessions = new Map<SessionId, ClientSession>();
  private lastOpenTick = Number.NEGATIVE_INFINITY;
  private principals = 0;
  /** First answer of each acquire (updated by its grant or end) and release: the exactly-once oracle. */
  private readonly acquireStatus = new Map<string, AcquireStatus>();
  private readonly releaseAnswer = new Map<string, string>();
  /** Stats for the report. */
  retries = 0;
  dedupeHits = 0;
  commands = 0;

  constructor(history: LockHistory) {
    history.onCommitted((committed) => this.learn(committed));
  }

  /** The payload factory: one lock-table entry (1–3 commands, or none: time only). */
  payload = (random: () => number, context: { now: number; tick: number }): Uint8Array => {
    // The leader's clock: virtual time, sometimes a little behind (a new leader's clock may lag).
    const timeMs = Math.max(0, context.now - (random() < 0.2 ? Math.floor(random() * 40) : 0));
    const count = random() < 0.7 ? 1 : 1 + Math.floor(random() * 3);
    const commands: Command[] = [];
    for (let k = 0; k < count; k++) {
      const command = this.next(random, context.tick, timeMs);
      if (command !== null) commands.push(command);
    }
    this.commands += commands.length;
    return encodeEntry({ timeMs, commands });
  };

  private next(random: () => number, tick: number, timeMs: number): Command | null {
    const open = [...this.sessions.values()];
    if (open.length < sessionsTarget && tick - this.lastOpenTick > 20) {
      this.lastOpenTick = tick;
      return { type: 'openSession', principal: `p${++this.principals}`, reconnectionWindowMs: 1000 };
    }
    if (open.length === 0) return null;
    const s = open[Math.floor(random() * open.length)]!;
    // Resend what was lost (same request number: the exactly-once path).
    for (const [, request] of s.sent) {
      if (!request.committed && tick - request.tick > resendAfterTicks) {
        request.tick = tick;
        this.retries++;
        return request.command;
      }
    }
    const r = random();
    if (r < 0.42) {
      const name =
        random() < 0.85 ? hotNames[Math.floor(random() * hotNames.length)]! : `n${Math.floor(random() * 12)}`;
      const scope =
        random() < 0.3 ? SessionLockScope.UNLOCK_ON_CONNECTION_LOSS : SessionLockScope.UNLOCK_ON_SESSION_LOSS;
      const deadlineMs = random() < 0.25 ? timeMs + 20 + Math.floor(random() * 400) : undefined;
      const command: AcquireCommand = {
        type: 'acquire',
        session: s.id,
        requestNo: s.nextRequestNo++,
        name,
        scope,
        ...(deadlineMs === undefined ? {} : { deadlineMs }),
      };
      s.acquires.push(command);
      if (s.acquires.length > 8) s.acquires.shift();
      return this.track(s, command, tick);
    }
    if (r < 0.64) {
      const heldNames = [...s.held.keys()];
      const name =
        heldNames.length > 0 && random() < 0.75
          ? heldNames[Math.floor(random() * heldNames.length)]!
          : hotNames[Math.floor(random() * hotNames.length)]!;
      const held = s.held.get(name);
      const fence = random();
      const sequence =
        held === undefined || fence < 0.4 ? undefined : fence < 0.9 ? held : Math.max(1, held - 1);
      return this.track(
        s,
        {
          type: 'release',
          session: s.id,
          requestNo: s.nextRequestNo++,
          name,
          ...(sequence === undefined ? {} : { sequence }),
        },
        tick,
      );
    }
    if (r < 0.72) {
      if (s.acquires.length === 0) return null;
      const acquire = s.acquires[Math.floor(random() * s.acquires.length)]!;
      return { type: 'cancel', session: s.id, requestNo: acquire.requestNo };
    }
    if (r < 0.84) {
      // A repeat of a request already sent (committed or not): dedupe must answer it as the first time.
      const numbers = [...s.sent.keys()];
      if (numbers.length === 0) return null;
      this.retries++;
      return s.sent.get(numbers[Math.floor(random() * numbers.length)]!)!.command;
    }
    if (r < 0.9) {
      const epoch = random() < 0.15 ? Math.max(0, s.epoch - 1) : s.epoch;
      return { type: 'connectionLost', session: s.id, epoch };
    }
    if (r < 0.96) {
      return { type: 'reconnect', session: s.id, epoch: s.epoch + (random() < 0.85 ? 1 : 0) };
    }
    if (r < 0.98) return { type: 'expireSession', session: s.id, epoch: s.epoch };
    return { type: 'closeSession', session: s.id };
  }

  private track(s: ClientSession, command: RequestCommand, tick: number): Command {
    s.sent.set(command.requestNo, { command, tick, committed: false });
    // Keep the client's outstanding requests inside the dedupe window, like the real client.
    for (const number of s.sent.keys()) {
      if (number > command.requestNo - window / 2) break;
      s.sent.delete(number);
    }
    return command;
  }

  /** What the clients learn from one committed entry, and the exactly-once check of its answers. */
  private learn({ index, entry, results, effects }: CommittedEntry): void {
    // Retries are checked once the entry's effects are in: a deadline at the start of the entry, or a
    // grant or cancel by an earlier command of the batch, may have moved the request on before the
    // retry applied — and a later command may move it on again (closeSession hands a lock to the
    // request, the retry answers that grant, a cancel then releases it: waiting → granted → ABORTED).
    // Effects are one flat list, not split per command, so a retried acquire may answer any status its
    // request had during the entry: the one before it, or one it took on in it.
    const retries: { command: RequestCommand; result: Result; before: string | undefined }[] = [];
    const during = new Map<string, string[]>();
    const setStatus = (k: string, status: AcquireStatus): void => {
      this.acquireStatus.set(k, status);
      during.get(k)?.push(JSON.stringify(status));
    };
    const cancelled: string[] = [];
    entry.commands.forEach((command, i) => {
      const result = results[i]!;
      switch (command.type) {
        case 'openSession':
          if (result.kind === 'opened') {
            this.sessions.set(result.session, {
              id: result.session,
              nextRequestNo: 1,
              epoch: 0,
              held: new Map(),
              acquires: [],
              sent: new Map(),
              committedMax: 0,
            });
          }
          return;
        case 'reconnect': {
          const s = this.sessions.get(command.session);
          if (s !== undefined && result.kind === 'done') s.epoch = Math.max(s.epoch, command.epoch);
          return;
        }
        case 'acquire':
        case 'release': {
          const s = this.sessions.get(command.session);
          if (s !== undefined) {
            const sent = s.sent.get(command.requestNo);
            if (sent !== undefined) sent.committed = true;
          }
          const before = this.firstAnswer(command, result);
          if (before !== undefined) {
            retries.push({ command, result, before });
            const k = `${command.session}:${command.requestNo}`;
            if (command.type === 'acquire' && !during.has(k)) during.set(k, [before]);
          }
          if (s !== undefined) s.committedMax = Math.max(s.committedMax, command.requestNo);
          return;
        }
        case 'cancel':
          // The grant won the race and the cancel released it: the call now ends ABORTED.
          if (result.kind === 'cancelled' && result.outcome === 'released')
            cancelled.push(`${command.session}:${command.requestNo}`);
          return;
        default:
          return;
      }
    });
    for (const effect of effects) {
      const s = this.sessions.get(effect.session);
      switch (effect.kind) {
        case 'granted':
          s?.held.set(effect.name, effect.sequence);
          for (const requestNo of effect.requestNos)
            setStatus(`${effect.session}:${requestNo}`, { kind: 'granted', sequence: effect.sequence });
          break;
        case 'released':
          if (s?.held.get(effect.name) === effect.sequence) s.held.delete(effect.name);
          break;
        case 'waitEnded':
          setStatus(`${effect.session}:${effect.requestNo}`, {
            kind: 'error',
            code: waitEndCodes[effect.reason]!,
          });
          break;
        case 'sessionEnded':
          this.sessions.delete(effect.session);
          break;
        default:
          break;
      }
    }
    for (const k of cancelled) setStatus(k, { kind: 'error', code: 'ABORTED' });
    for (const { command, result, before } of retries) {
      const k = `${command.session}:${command.requestNo}`;
      const statuses = (command.type === 'acquire' ? during.get(k) : undefined) ?? [before];
      const s = this.sessions.get(command.session);
      if (!statuses.some((earned) => this.answers(command, result, earned, s))) {
        const later = statuses.filter((earned) => earned !== before);
        throw new LockViolation(
          `exactly once: entry ${index} answers retried ${command.type} ${k} with ${JSON.stringify(result)}; its first application earned ${before}${later.length === 0 ? '' : ` (then ${later.join(', then ')})`}`,
        );
      }
    }
  }

  /**
   * Records the answer of a request's first application and returns undefined; for a later
   * application (a retry), returns what the first one earned (JSON), to compare with.
   */
  private firstAnswer(command: RequestCommand, result: Result): string | undefined {
    const k = `${command.session}:${command.requestNo}`;
    const known = command.type === 'acquire' ? this.acquireStatus.get(k) : this.releaseAnswer.get(k);
    if (known !== undefined) {
      this.dedupeHits++;
      return typeof known === 'string' ? known : JSON.stringify(known);
    }
    const gone =
      result.kind === 'error' && (result.code === 'SESSION_CLOSED' || result.code === 'SESSION_NOT_FOUND');
    if (gone) return undefined; // not recorded by the table either
    if (command.type === 'acquire') {
      if (result.kind === 'granted')
        this.acquireStatus.set(k, { kind: 'granted', sequence: result.sequence });
      else if (result.kind === 'waiting') this.acquireStatus.set(k, { kind: 'waiting' });
      else if (result.kind === 'error') this.acquireStatus.set(k, { kind: 'error', code: result.code });
    } else {
      this.releaseAnswer.set(k, JSON.stringify(result));
    }
    return undefined;
  }

  /** Exactly once: whether `result` is the answer a retry of a request that earned `earned` may get (C2). */
  private answers(
    command: RequestCommand,
    result: Result,
    earned: string | undefined,
    s: ClientSession | undefined,
  ): boolean {
    if (result.kind === 'error' && result.code === 'SESSION_CLOSED') return true; // the session is gone
    // Below the dedupe window the table can no longer tell; only there may it say so.
    if (result.kind === 'error' && result.code === 'STALE_REQUEST')
      return s !== undefined && command.requestNo <= s.committedMax - window;
    if (earned === undefined) return false;
    if (command.type === 'release') return JSON.stringify(result) === earned;
    const status = JSON.parse(earned) as AcquireStatus;
    if (status.kind === 'granted') return result.kind === 'granted' && result.sequence === status.sequence;
    if (status.kind === 'waiting') return result.kind === 'waiting';
    return result.kind === 'error' && result.code === status.code;
  }
}
