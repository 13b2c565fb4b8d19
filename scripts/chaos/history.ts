// The history of a chaos run, Jepsen style: every client operation is an `invoke` followed by `ok`,
// `fail` (it certainly did not take effect) or `info` (outcome unknown), with monotonic timestamps
// (`performance.now()` of the one process that runs every client, so instants compare across sessions).
// Observations that are not operations — a guarded write to the fenced resource, the end of a grant
// with the last instant `isOwned()` was seen true — are single `ok` / `fail` events.

import { appendFileSync } from 'node:fs';

export type EventType = 'invoke' | 'ok' | 'fail' | 'info';

export type HistoryEvent =
  /** `session.lock(name, scope)`; ok carries the grant's sequence and scope. */
  | {
      readonly f: 'acquire';
      readonly type: EventType;
      readonly process: number;
      readonly session: number;
      readonly name: string;
      readonly timeMs: number;
      readonly scope?: string;
      readonly sequence?: number;
      readonly error?: string;
    }
  /** `lock.unlock()` of grant `sequence`; ok carries whether it was owned. */
  | {
      readonly f: 'release';
      readonly type: EventType;
      readonly process: number;
      readonly session: number;
      readonly name: string;
      readonly timeMs: number;
      readonly sequence: number;
      readonly owned?: boolean;
      readonly error?: string;
    }
  /** `session.close()` at the end of the run: releases whatever the session holds. */
  | {
      readonly f: 'close';
      readonly type: EventType;
      readonly process: number;
      readonly session: number;
      readonly timeMs: number;
      readonly error?: string;
    }
  /** A write to the fenced resource made right after `isOwned()` said true; fail = rejected as stale. */
  | {
      readonly f: 'write';
      readonly type: 'ok' | 'fail';
      readonly process: number;
      readonly session: number;
      readonly name: string;
      readonly timeMs: number;
      readonly sequence: number;
    }
  /** Grant `sequence` stopped being owned (lock.signal aborted) for `reason`. */
  | {
      readonly f: 'end';
      readonly type: 'ok';
      readonly process: number;
      readonly session: number;
      readonly name: string;
      readonly timeMs: number;
      readonly sequence: number;
      readonly reason: string;
      /** The last instant `isOwned()` returned true for this grant; -1 if it never did. */
      readonly lastOwnedMs: number;
    };

export class HistoryRecorder {
  readonly events: HistoryEvent[] = [];
  private readonly originMs = performance.now();

  constructor(private readonly file: string | null = null) {}

  /** Milliseconds since the recorder started, monotonic. */
  now(): number {
    return performance.now() - this.originMs;
  }

  add(event: HistoryEvent): void {
    this.events.push(event);
    if (this.file !== null) appendFileSync(this.file, `${JSON.stringify(event)}\n`);
  }
}

/** One grant a client learned of, with how it ended. */
export interface Grant {
  readonly process: number;
  readonly session: number;
  readonly name: string;
  readonly sequence: number;
  readonly scope: string;
  readonly invokeMs: number;
  readonly okMs: number;
  /** Set when the grant ended during the run. */
  end: { readonly reason: string; readonly timeMs: number; readonly lastOwnedMs: number } | null;
  /** The unlock of this grant, if the client called one. */
  release: {
    readonly invokeMs: number;
    readonly type: EventType;
    readonly timeMs: number;
    owned?: boolean;
  } | null;
  /** Times a later lock() call got this same grant back after its unlock failed (see grantsOf). */
  readonly regrants: number[];
  /** The close of its session at the end of the run, if it still held the grant then. */
  close: { readonly invokeMs: number; readonly type: EventType; readonly timeMs: number } | null;
}

/** Pairs invocations with completions (one operation at a time per process) and collects the grants. */
export function grantsOf(events: readonly HistoryEvent[]): Grant[] {
  const grants: Grant[] = [];
  const byKey = new Map<string, Grant>();
  const openAcquire = new Map<number, number>();
  const openRelease = new Map<number, number>();
  const openClose = new Map<number, number>();
  const held = new Map<number, Set<Grant>>();
  for (const event of events) {
    switch (event.f) {
      case 'acquire':
        if (event.type === 'invoke') openAcquire.set(event.process, event.timeMs);
        else if (event.type === 'ok') {
          const key = `${event.process}/${event.name}/${event.sequence}`;
          const earlier = byKey.get(key);
          if (earlier !== undefined && earlier.release !== null && earlier.release.type !== 'ok') {
            // The unlock of this grant failed and the cluster kept it: this lock() got the same grant
            // back (S4). One grant in the cluster, so one in the history; checkRegrants reports it, since
            // the client had reported it ended (S6, S10).
            earlier.regrants.push(event.timeMs);
            earlier.release = null;
            earlier.end = null;
            break;
          }
          const grant: Grant = {
            process: event.process,
            session: event.session,
            name: event.name,
            sequence: event.sequence!,
            scope: event.scope ?? 'UNLOCK_ON_SESSION_LOSS',
            invokeMs: openAcquire.get(event.process) ?? event.timeMs,
            okMs: event.timeMs,
            end: null,
            release: null,
            close: null,
            regrants: [],
          };
          grants.push(grant);
          byKey.set(key, grant);
          const set = held.get(event.process) ?? new Set();
          set.add(grant);
          held.set(event.process, set);
        }
        break;
      case 'release':
        if (event.type === 'invoke') openRelease.set(event.process, event.timeMs);
        else {
          const grant = byKey.get(`${event.process}/${event.name}/${event.sequence}`);
          if (grant !== undefined)
            grant.release = {
              invokeMs: openRelease.get(event.process) ?? event.timeMs,
              type: event.type,
              timeMs: event.timeMs,
              ...(event.owned === undefined ? {} : { owned: event.owned }),
            };
        }
        break;
      case 'close':
        if (event.type === 'invoke') openClose.set(event.process, event.timeMs);
        else {
          const invokeMs = openClose.get(event.process) ?? event.timeMs;
          for (const grant of held.get(event.process) ?? []) {
            // Still held when close() was called: close() released it.
            if (grant.end !== null && !(grant.end.reason === 'sessionClosed' && grant.end.timeMs >= invokeMs))
              continue;
            grant.close = { invokeMs, type: event.type, timeMs: event.timeMs };
          }
          held.delete(event.process);
        }
        break;
      case 'end': {
        const grant = byKey.get(`${event.process}/${event.name}/${event.sequence}`);
        if (grant !== undefined) {
          grant.end = { reason: event.reason, timeMs: event.timeMs, lastOwnedMs: event.lastOwnedMs };
        }
        break;
      }
      case 'write':
        break;
      default:
        event satisfies never;
    }
  }
  return grants;
}
