/**
 * Whether the desktop studio is in the background: none of its windows focused (another program
 * in front, or every window minimized or hidden, which also takes the focus away). The engine
 * then yields the CPU when Settings says so (src/engine/models/priority.ts).
 *
 * Entering the background waits `delayMs`: focus passes through "no window" when it moves between
 * the studio's own windows or to a short native dialog, and each change reaches the engine's
 * threads. Coming back is immediate, so a person never waits on a slow generation in front.
 */
export class BackgroundTracker {
  #background = false;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly onChange: (background: boolean) => void,
    private readonly delayMs = 1000,
  ) {}

  get background(): boolean {
    return this.#background;
  }

  /** Call on every focus, blur, minimize, restore, hide and show with whether a window has focus. */
  update(anyFocused: boolean): void {
    if (anyFocused) {
      this.#cancel();
      if (this.#background) {
        this.#background = false;
        this.onChange(false);
      }
      return;
    }
    if (this.#background || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#background = true;
      this.onChange(true);
    }, this.delayMs);
  }

  /** Stops a pending change (the app is quitting). */
  dispose(): void {
    this.#cancel();
  }

  #cancel(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/** The window events after which the studio may have gone to or come from the background. */
export const backgroundWindowEvents = [
  'focus',
  'blur',
  'minimize',
  'restore',
  'hide',
  'show',
] as const;
