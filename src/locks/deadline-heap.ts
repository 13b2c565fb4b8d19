// A binary min-heap of pending acquire requests by deadline, so each entry finds the waits it must
// time out in O(log n) instead of scanning every wait. Items keep their own slot (`heapIndex`) so a
// grant or a cancel can take them out from the middle.
//
// The order is total — (deadlineMs, session id, request number) — so the sequence of pops depends only
// on the set of items, never on how the array happens to be laid out. That is what lets a restored
// table, which rebuilds the heap in a different layout, time out waits in exactly the same order.

import { assert } from '../assert.ts';

export interface DeadlineItem {
  readonly deadlineMs: number;
  readonly sessionId: number;
  readonly requestNo: number;
  /** Slot in the heap's array, or -1 when not in the heap. */
  heapIndex: number;
}

function before(a: DeadlineItem, b: DeadlineItem): boolean {
  if (a.deadlineMs !== b.deadlineMs) return a.deadlineMs < b.deadlineMs;
  if (a.sessionId !== b.sessionId) return a.sessionId < b.sessionId;
  return a.requestNo < b.requestNo;
}

export class DeadlineHeap<T extends DeadlineItem> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    assert(item.heapIndex === -1, 'an item is in the deadline heap at most once');
    item.heapIndex = this.items.length;
    this.items.push(item);
    this.up(item.heapIndex);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top !== undefined) this.remove(top);
    return top;
  }

  remove(item: T): void {
    const at = item.heapIndex;
    assert(this.items[at] === item, 'removing an item that is not in the deadline heap');
    const last = this.items.pop() as T;
    item.heapIndex = -1;
    if (last === item) return;
    this.items[at] = last;
    last.heapIndex = at;
    this.up(at);
    this.down(last.heapIndex);
  }

  /** Checks the heap property and every item's slot; for tests and invariant checks. */
  check(): void {
    for (let i = 0; i < this.items.length; i++) {
      const item = this.items[i] as T;
      assert(item.heapIndex === i, 'deadline heap slot out of date');
      if (i > 0) assert(!before(item, this.items[(i - 1) >> 1] as T), 'deadline heap order broken');
    }
  }

  private up(at: number): void {
    const items = this.items;
    const item = items[at] as T;
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const parent = items[parentAt] as T;
      if (!before(item, parent)) break;
      items[at] = parent;
      parent.heapIndex = at;
      at = parentAt;
    }
    items[at] = item;
    item.heapIndex = at;
  }

  private down(at: number): void {
    const items = this.items;
    const length = items.length;
    const item = items[at] as T;
    for (;;) {
      const leftAt = 2 * at + 1;
      if (leftAt >= length) break;
      const rightAt = leftAt + 1;
      let childAt = leftAt;
      if (rightAt < length && before(items[rightAt] as T, items[leftAt] as T)) childAt = rightAt;
      const child = items[childAt] as T;
      if (!before(child, item)) break;
      items[at] = child;
      child.heapIndex = at;
      at = childAt;
    }
    items[at] = item;
    item.heapIndex = at;
  }
}
