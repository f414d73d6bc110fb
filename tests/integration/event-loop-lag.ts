/**
 * Runs `work` while measuring how late a timer 5 ms apart fires (the event loop's lag): the
 * cheap calls of the host run on this loop. Returns the worst lag in ms.
 */
export async function worstLagWhile(work: Promise<unknown>): Promise<number> {
  let worst = 0;
  let done = false;
  void work.then(
    () => (done = true),
    () => (done = true),
  );
  while (!done) {
    const t = performance.now();
    await new Promise((r) => setTimeout(r, 5));
    worst = Math.max(worst, performance.now() - t - 5);
  }
  return worst;
}
