// Per-session answers for retried requests (exactly-once, C2), kept for a window of request numbers:
// those in (requestNoMax − windowSize, requestNoMax]. Clients number requests upward and have at most
// `requestsInFlightPerSessionMax` ≤ windowSize outstanding, so every retry lands inside the window.
//
// Stored as a direct-mapped table indexed by `requestNo & (capacity − 1)` — one array read per lookup,
// no Map, no allocation per request — which starts small and doubles up to the window's size (rounded
// up to a power of two), where numbers inside the window can no longer collide. A slot may still hold
// an answer that has left the window; it is dead and ignored. What the window holds (and so every answer
// and the snapshot) depends only on the request numbers seen, never on the table's capacity.

import { assert } from '../assert.ts';
import type { DedupeValue, SessionState } from './state.ts';

const capacityMin = 4;

function inWindow(session: SessionState, requestNo: number, windowSize: number): boolean {
  return requestNo > session.requestNoMax - windowSize;
}

/** The answer recorded for `requestNo`, or undefined if there is none inside the window. */
export function findAnswer(
  session: SessionState,
  requestNo: number,
  windowSize: number,
): DedupeValue | undefined {
  const keys = session.answerKeys;
  if (keys === null || !inWindow(session, requestNo, windowSize)) return undefined;
  const slot = requestNo & (keys.length - 1);
  return keys[slot] === requestNo ? session.answerValues[slot] : undefined;
}

/** Records the answer for a request number that has none yet; moves the window up if it is the newest. */
export function rememberAnswer(
  session: SessionState,
  requestNo: number,
  value: DedupeValue,
  windowSize: number,
): void {
  if (requestNo > session.requestNoMax) session.requestNoMax = requestNo;
  assert(inWindow(session, requestNo, windowSize), 'answers are recorded only inside the window');
  if (session.answerKeys === null) {
    session.answerKeys = new Array<number>(capacityMin).fill(0);
    session.answerValues = new Array<DedupeValue | undefined>(capacityMin).fill(undefined);
  }
  for (;;) {
    const keys = session.answerKeys;
    const slot = requestNo & (keys.length - 1);
    const occupant = keys[slot] as number;
    if (occupant === 0 || occupant === requestNo || !inWindow(session, occupant, windowSize)) {
      keys[slot] = requestNo;
      session.answerValues[slot] = value;
      return;
    }
    // A live answer holds the slot: only possible while the table is smaller than the window.
    assert(keys.length < windowSize, 'no two request numbers in the window share a slot at full size');
    grow(session, windowSize);
  }
}

/** Sizes an empty table for `count` answers up front, sparing a restore the doublings. */
export function reserveAnswers(session: SessionState, count: number): void {
  if (session.answerKeys !== null || count === 0) return;
  let capacity = capacityMin;
  while (capacity < count) capacity *= 2;
  session.answerKeys = new Array<number>(capacity).fill(0);
  session.answerValues = new Array<DedupeValue | undefined>(capacity).fill(undefined);
}

function grow(session: SessionState, windowSize: number): void {
  const oldKeys = session.answerKeys as number[];
  const oldValues = session.answerValues;
  const capacity = oldKeys.length * 2;
  const keys = new Array<number>(capacity).fill(0);
  const values = new Array<DedupeValue | undefined>(capacity).fill(undefined);
  for (let i = 0; i < oldKeys.length; i++) {
    const key = oldKeys[i] as number;
    if (key === 0 || !inWindow(session, key, windowSize)) continue;
    const slot = key & (capacity - 1);
    assert(keys[slot] === 0, 'doubling the table separates colliding request numbers');
    keys[slot] = key;
    values[slot] = oldValues[i];
  }
  session.answerKeys = keys;
  session.answerValues = values;
}

/** The answers inside the window, by request number: the canonical order for snapshots and checks. */
export function answersInOrder(session: SessionState, windowSize: number): [number, DedupeValue][] {
  const keys = session.answerKeys;
  const answers: [number, DedupeValue][] = [];
  if (keys === null) return answers;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as number;
    if (key !== 0 && inWindow(session, key, windowSize))
      answers.push([key, session.answerValues[i] as DedupeValue]);
  }
  return answers.sort((a, b) => a[0] - b[0]);
}
