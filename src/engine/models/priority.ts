/**
 * The engine's threads while the studio is in the background or on battery (issue 17 item 4).
 *
 * When a person works in another program, a generation should take only the CPU they leave
 * idle; on battery it should not burn energy on threads that wait. Two levers reach every
 * thread that computes for the engine:
 *
 * - Spinning: ONNX Runtime's intra-op threads spin while they wait for work, burning cores the
 *   person's program wants. `session.intra_op.allow_spinning` is fixed when a session is created,
 *   so it applies to sessions created while in the background; a session already loaded keeps
 *   its setting (reloading a model to change it would cost more than it saves).
 * - OS priority (niceness): on Linux nice is per thread (setpriority(2) with a thread id), and a
 *   thread starts with the nice value of the thread that creates it. onnxruntime-node creates a
 *   session's intra-op pool on the thread that calls `InferenceSession.create` and runs
 *   `session.run` on the calling thread too (both the engine worker's thread: checked in
 *   /proc/self/task). So lowering the worker's own thread covers every session created later,
 *   and the pool threads of sessions already loaded are found by their ids, recorded when they
 *   appear during `track`. The host's main thread (IPC, SQLite) keeps its priority.
 *   On Windows priority is a process-wide class (os.setPriority maps 10 to BELOW_NORMAL) that a
 *   process may raise again, so the whole host goes below normal while in the background.
 *   But an unprivileged process may lower a priority and never raise it again: Linux needs
 *   CAP_SYS_NICE or an RLIMIT_NICE that reaches nice 0 (setpriority(2); most desktops set
 *   neither), macOS needs root. There the engine would stay slow after the person returns, so
 *   the priority is lowered only where `canRaisePriority()` says it can be raised back; elsewhere
 *   the background policy is spinning off alone. If raising back is refused anyway, the threads
 *   stay low and `apply` says so.
 */
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

/** The nice value of the engine's threads while the studio is in the background and gentle. */
export const BACKGROUND_NICENESS = 10;

/** What the host tells the engine about the studio's windows, the power and the person's setting. */
export interface BackgroundState {
  /** No window of the studio is focused (minimized, hidden, or another program in front). */
  background: boolean;
  /** The machine runs on its battery (a laptop unplugged); false where the host cannot tell. */
  onBattery: boolean;
  /**
   * 'gentle': yield the CPU while in the background and stop spinning on battery; 'full': keep
   * full speed always.
   */
  mode: 'gentle' | 'full';
}

/** How the engine's threads run: a pure decision from the situation (see `threadPolicy`). */
export interface ThreadPolicy {
  /** session.intra_op.allow_spinning for sessions created now. */
  spinning: boolean;
  /** The nice value for the engine's threads (0 normal, higher is lower priority). */
  niceness: number;
}

/**
 * The policy for the situation. In the foreground on mains power (or 'full'): spinning only
 * while the machine is quiet (1-minute load average below the usable cores; measured in
 * `npm run bench:threads`), normal priority. 'gentle' in the background: no spinning, and
 * BACKGROUND_NICENESS when the priority can be raised back afterwards (`canRaise`). 'gentle' on
 * battery: no spinning (a spinning thread burns energy waiting for work), but the priority stays
 * as the windows decide: nice changes which program runs first, not how much work a generation
 * costs, so in front it would only make the person wait longer for the same energy
 * (README "Performance", threads).
 */
export function threadPolicy(
  state: BackgroundState,
  load: number,
  cores: number,
  canRaise?: boolean,
): ThreadPolicy {
  // Windows reports a load average of 0: no signal, keep ORT's default (spinning).
  const quiet = load < cores;
  if (state.mode === 'full') return { spinning: quiet, niceness: 0 };
  if (!state.background) return { spinning: quiet && !state.onBattery, niceness: 0 };
  return { spinning: false, niceness: (canRaise ?? canRaiseOnce()) ? BACKGROUND_NICENESS : 0 };
}

let canRaiseKnown: boolean | undefined;
/**
 * canRaisePriority() for this process, read once: its capabilities and limits do not change
 * while it runs, and every session's options ask the policy (only the background asks this).
 */
function canRaiseOnce(): boolean {
  canRaiseKnown ??= canRaisePriority();
  return canRaiseKnown;
}

const CAP_SYS_NICE = 23n;

/**
 * Whether this process may raise its threads' priority back to normal after lowering it:
 * Windows always (priority classes); Linux with CAP_SYS_NICE in /proc/self/status's CapEff or a
 * soft RLIMIT_NICE of 20 or more (/proc/self/limits, "Max nice priority": the lowest nice value
 * reachable is 20 minus it); elsewhere only root.
 */
export function canRaisePriority(
  platform: NodeJS.Platform = process.platform,
  proc: { status: string; limits: string } | null = platform === 'linux' ? readProc() : null,
): boolean {
  if (platform === 'win32') return true;
  if (platform === 'linux' && proc) {
    const caps = /^CapEff:\s*([0-9a-f]+)/im.exec(proc.status)?.[1];
    if (caps && (BigInt(`0x${caps}`) >> CAP_SYS_NICE) & 1n) return true;
    const soft = /^Max nice priority\s+(\S+)/im.exec(proc.limits)?.[1];
    return soft === 'unlimited' || Number(soft) >= 20;
  }
  return process.getuid?.() === 0;
}

function readProc(): { status: string; limits: string } | null {
  try {
    return {
      status: readFileSync('/proc/self/status', 'utf8'),
      limits: readFileSync('/proc/self/limits', 'utf8'),
    };
  } catch {
    return null;
  }
}

/** Ids of this process's threads (Linux); empty elsewhere. */
export function processThreadIds(): number[] {
  if (process.platform !== 'linux') return [];
  try {
    return readdirSync('/proc/self/task').map(Number).filter(Number.isInteger);
  } catch {
    return [];
  }
}

/** The id of the calling thread (Linux), from /proc/thread-self; null elsewhere. */
export function currentThreadId(): number | null {
  if (process.platform !== 'linux') return null;
  try {
    const id = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ', 1)[0]);
    return Number.isInteger(id) ? id : null;
  } catch {
    return null;
  }
}

/** What applying a niceness did. */
export interface NicenessResult {
  /** The nice value the engine's threads have now. */
  niceness: number;
  /** Threads whose priority was changed. */
  threads: number;
  /** Why the wanted value could not be set (raising priority refused by the OS); null when set. */
  refused: string | null;
}

/**
 * The engine's threads: the thread that creates sessions (the worker's), and the threads ONNX
 * Runtime starts while a session is created there. One per process (the engine worker's).
 */
export class EngineThreads {
  readonly #ids = new Set<number>();
  #niceness = 0;

  /** The nice value last applied (new sessions inherit it on Linux). */
  get niceness(): number {
    return this.#niceness;
  }

  /**
   * Runs `create` (a session creation) and records the threads that appeared meanwhile: ONNX
   * Runtime's pool, and any other thread the process happened to start then (libuv's file-system
   * pool, on its first use), which only shares the engine's priority while in the background.
   */
  async track<T>(create: () => Promise<T>): Promise<T> {
    const self = currentThreadId();
    if (self === null) return create();
    this.#ids.add(self);
    const before = new Set(processThreadIds());
    try {
      return await create();
    } finally {
      for (const id of processThreadIds()) if (!before.has(id)) this.#ids.add(id);
    }
  }

  /**
   * Sets the engine's threads to `niceness`: on Linux each recorded thread that still lives,
   * elsewhere the process's priority (a class on Windows). `threadPolicy` asks for a change only
   * where it can be undone (see the file's comment).
   */
  apply(niceness: number): NicenessResult {
    if (niceness === this.#niceness) return { niceness: this.#niceness, threads: 0, refused: null };
    if (process.platform !== 'linux') {
      try {
        os.setPriority(niceness);
        this.#niceness = niceness;
        return { niceness, threads: 1, refused: null };
      } catch (e) {
        return { niceness: this.#niceness, threads: 0, refused: refusal(e) };
      }
    }
    const self = currentThreadId();
    if (self !== null) this.#ids.add(self);
    const alive = new Set(processThreadIds());
    let changed = 0;
    let refused: string | null = null;
    for (const id of [...this.#ids]) {
      if (!alive.has(id)) {
        this.#ids.delete(id);
        continue;
      }
      try {
        os.setPriority(id, niceness);
        changed++;
      } catch (e) {
        refused ??= refusal(e);
      }
    }
    // Partly refused (only raising can be): the lowest priority any thread kept is what holds.
    if (!refused) this.#niceness = niceness;
    return { niceness: refused ? this.#niceness : niceness, threads: changed, refused };
  }
}

function refusal(e: unknown): string {
  const code = (e as { code?: string }).code ?? '';
  const denied = /EACCES|EPERM/.test(code) || /permission|not permitted/i.test(String(e));
  return denied
    ? 'The system does not let the studio raise its own priority again; the engine stays at low priority until the studio restarts.'
    : `The engine's priority could not be changed: ${e instanceof Error ? e.message : String(e)}`;
}

/** The engine's threads in this process (the engine worker owns the sessions). */
export const engineThreads = new EngineThreads();
