// The simulator's agenda: a binary min-heap ordered by (time, sequence number). The sequence number
// makes ties deterministic — events at the same virtual time run in the order they were scheduled.

import { assert } from '../../src/assert.ts';

export interface Scheduled {
  time: number;
  seq: number;
}

export class EventQueue<T extends Scheduled> {
  private heap: T[] = [];
  private nextSeq = 0;

  constructor(private readonly sizeMax: number) {}

  get size(): number {
    return this.heap.length;
  }

  /** Adds an event; returns false (and drops it) when the queue is full. */
  push(event: T): boolean {
    if (this.heap.length >= this.sizeMax) return false;
    event.seq = this.nextSeq++;
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = event;
    return true;
  }

  peekTime(): number {
    return this.heap.length === 0 ? Number.POSITIVE_INFINITY : this.heap[0]!.time;
  }

  pop(): T {
    const heap = this.heap;
    assert(heap.length > 0, 'event queue: pop from an empty queue');
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      const n = heap.length;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= n) break;
        const right = left + 1;
        const child = right < n && before(heap[right]!, heap[left]!) ? right : left;
        if (!before(heap[child]!, last)) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}
