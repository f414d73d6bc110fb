import type { EventName, EventPayload } from '../shared';

type Listener = (event: EventName, payload: unknown) => void;

/** Fan-out of host events to every connected transport. */
export class EventHub {
  #listeners = new Set<Listener>();

  emit<E extends EventName>(event: E, payload: EventPayload<E>): void {
    for (const listener of this.#listeners) {
      try {
        listener(event, payload);
      } catch {
        // A broken transport must not stop the others from hearing the event.
      }
    }
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
