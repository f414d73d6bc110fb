import { describeError } from './errors';

export interface Notice {
  id: number;
  kind: 'error' | 'info';
  text: string;
  action?: { label: string; run: () => void | Promise<void> };
}

/** Passing messages (errors from main, "deleted — undo"); each fades after a while. */
export class Notices {
  items = $state.raw<Notice[]>([]);
  #nextId = 1;

  push(kind: Notice['kind'], text: string, action?: Notice['action'], ttlMs = 8000): number {
    const id = this.#nextId++;
    this.items = [...this.items.slice(-4), { id, kind, text, action }];
    if (ttlMs > 0) setTimeout(() => this.dismiss(id), ttlMs);
    return id;
  }

  error(err: unknown, context?: string): void {
    const text = describeError(err);
    this.push('error', context ? `${context}: ${text}` : text, undefined, 12_000);
  }

  dismiss(id: number): void {
    this.items = this.items.filter((n) => n.id !== id);
  }
}
