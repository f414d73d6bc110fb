import { describeError } from './errors';

export interface Notice {
  id: number;
  kind: 'error' | 'info';
  text: string;
  action?: { label: string; run: () => void | Promise<void> };
}

/** How many notices show at once; older ones give way, so they never cover the studio. */
export const maxNotices = 3;

/**
 * Passing messages (errors from main, "deleted — undo"), the one place the studio reports what
 * happened. Every one fades after a while (problems that block Generate are shown beside the
 * Generate button instead, for as long as they last); the same message again replaces the
 * earlier one instead of stacking.
 */
export class Notices {
  items = $state.raw<Notice[]>([]);
  #nextId = 1;
  /** Expiry timers by notice id; bookkeeping only, nothing renders from it. */
  #timers: Record<number, ReturnType<typeof setTimeout>> = {};

  push(kind: Notice['kind'], text: string, action?: Notice['action'], ttlMs = 8000): number {
    const id = this.#nextId++;
    const same = this.items.filter((n) => n.text === text && n.kind === kind);
    for (const n of same) this.#clearTimer(n.id);
    const kept = this.items.filter((n) => !same.includes(n));
    const dropped = kept.slice(0, Math.max(0, kept.length - (maxNotices - 1)));
    for (const n of dropped) this.#clearTimer(n.id);
    this.items = [...kept.slice(dropped.length), { id, kind, text, action }];
    this.#timers[id] = setTimeout(() => this.dismiss(id), ttlMs > 0 ? ttlMs : 8000);
    return id;
  }

  error(err: unknown, context?: string): void {
    this.push('error', describeError(err, context), undefined, 10_000);
  }

  #clearTimer(id: number): void {
    clearTimeout(this.#timers[id]);
    delete this.#timers[id];
  }

  dismiss(id: number): void {
    this.#clearTimer(id);
    this.items = this.items.filter((n) => n.id !== id);
  }
}
