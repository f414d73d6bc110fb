/**
 * Quitting waits for the engine. Electron quits by tearing the process down, and a worker
 * terminated while it is inside an ONNX Runtime session.run aborts the whole process (a crash
 * report instead of a clean exit, and a job left half saved). So the first `before-quit` is
 * held back (preventDefault) while the host closes (the queue lets the step in flight finish,
 * the library closes), for at most `timeoutMs`; then quit is asked for again and that one goes
 * through. Written against two small callbacks so that it is tested without Electron.
 */

/** The part of Electron's before-quit event used here. */
export interface QuitEvent {
  preventDefault(): void;
}

export interface GracefulQuitOptions {
  /** Closes the host (StudioHost.close). */
  close: () => Promise<void>;
  /** Asks to quit again (app.quit); the second before-quit is let through. */
  quit: () => void;
  /** The longest wait for `close` before quitting anyway. */
  timeoutMs: number;
  log?: (line: string) => void;
}

/** The default wait: a denoising step of a large model on a slow CPU fits in it. */
export const quitTimeoutMs = 15_000;

/** Returns the before-quit listener. */
export function gracefulQuit(options: GracefulQuitOptions): (event: QuitEvent) => void {
  let state: 'open' | 'closing' | 'closed' = 'open';
  return (event) => {
    if (state === 'closed') return;
    event.preventDefault();
    if (state === 'closing') return;
    state = 'closing';
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), options.timeoutMs);
    });
    const closed = options.close().then(
      () => 'closed' as const,
      (err: unknown) => {
        options.log?.(`quit: closing the host failed: ${(err as Error)?.message ?? String(err)}`);
        return 'failed' as const;
      },
    );
    void Promise.race([closed, timedOut]).then((outcome) => {
      clearTimeout(timer);
      if (outcome === 'timeout')
        options.log?.(
          `quit: the engine did not stop within ${options.timeoutMs} ms; quitting anyway`,
        );
      state = 'closed';
      options.quit();
    });
  };
}
