/**
 * The desktop studio and the machine's power (issue 17 item 4): whether it runs on its battery,
 * and keeping the system awake while the queue works. Plain decisions, no Electron import: the
 * shell (main.ts) hands in powerMonitor and powerSaveBlocker.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { QueueState } from '../../shared';

/**
 * Whether a Linux machine runs on its battery, from the kernel's power-supply class
 * (Documentation/ABI/testing/sysfs-class-power): on battery when no mains, USB or wireless
 * supply is `online` and a battery that powers the system (`scope` not `Device`, which marks a
 * mouse's or a headset's) is `Discharging`. A desktop without a battery, or a folder that cannot
 * be read, is not on battery. Electron's powerMonitor.isOnBatteryPower() is a stub that answers
 * false on Linux (electron/electron#29614), hence this.
 */
export function linuxOnBattery(root = '/sys/class/power_supply'): boolean {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return false;
  }
  const read = (name: string, field: string) => {
    try {
      return fs.readFileSync(path.join(root, name, field), 'utf8').trim();
    } catch {
      return '';
    }
  };
  let discharging = false;
  for (const name of names) {
    const type = read(name, 'type');
    if (type === 'Mains' || type === 'USB' || type === 'Wireless') {
      const online = read(name, 'online');
      if (online !== '' && online !== '0') return false;
    } else if (type === 'Battery' && read(name, 'scope') !== 'Device') {
      if (read(name, 'status') === 'Discharging') discharging = true;
    }
  }
  return discharging;
}

/**
 * Follows whether the machine is on battery and reports each change. `read` answers now (the
 * shell's: powerMonitor.isOnBatteryPower(), linuxOnBattery() on Linux). Electron emits
 * 'on-battery' on macOS only and 'on-ac' on macOS and Windows, and nothing on Linux, so besides
 * `check()` on those events the answer is read again every `pollMs`: a few small reads.
 */
export class BatteryWatch {
  #onBattery = false;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly read: () => boolean,
    private readonly onChange: (onBattery: boolean) => void,
    private readonly pollMs = 30_000,
  ) {}

  get onBattery(): boolean {
    return this.#onBattery;
  }

  /** Reads the state now (reporting it when on battery, as the engine starts on mains) and polls. */
  start(): void {
    this.check();
    this.#timer ??= setInterval(() => this.check(), this.pollMs);
    this.#timer.unref?.();
  }

  /** Reads the state again; reports it when it changed. A failed read counts as mains power. */
  check(): void {
    let now: boolean;
    try {
      now = this.read();
    } catch {
      now = false;
    }
    if (now === this.#onBattery) return;
    this.#onBattery = now;
    this.onChange(now);
  }

  /** Stops polling (the app is quitting). */
  dispose(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}

/** Electron's powerSaveBlocker, the part used here. */
export interface PowerSaveBlockerApi {
  start(type: 'prevent-app-suspension'): number;
  stop(id: number): boolean;
}

/**
 * Whether the queue has work that sleep would cut: a job running, or jobs queued while the queue
 * is not paused (paused, or paused by itself after failures or a full disk, nothing would start).
 */
export function queueHasWork(queue: QueueState): boolean {
  return queue.jobs.some(
    (job) => job.state === 'running' || (!queue.paused && job.state === 'queued'),
  );
}

/**
 * Holds one 'prevent-app-suspension' blocker while the queue has work and none while it is idle:
 * the system does not suspend in the middle of a batch or an upscale, and may again as soon as
 * the queue is done. The display may still sleep. `update` may be called as often as the queue
 * changes; it starts or stops the blocker only on a change. A blocker that fails to start is
 * logged and the queue goes on; `dispose` (on quit) stops one still held.
 */
export class SleepBlocker {
  #id: number | null = null;

  constructor(
    private readonly blocker: PowerSaveBlockerApi,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /** Whether a blocker is held now. */
  get holding(): boolean {
    return this.#id !== null;
  }

  /** Call with whether the queue has work (`queueHasWork`) whenever it may have changed. */
  update(busy: boolean): void {
    if (busy && this.#id === null) {
      try {
        this.#id = this.blocker.start('prevent-app-suspension');
      } catch (err) {
        this.log(`The system could not be kept awake for the queue: ${String(err)}`);
      }
    } else if (!busy) this.#release();
  }

  /** Stops the blocker if one is held (the app is quitting). */
  dispose(): void {
    this.#release();
  }

  #release(): void {
    if (this.#id === null) return;
    const id = this.#id;
    this.#id = null;
    try {
      this.blocker.stop(id);
    } catch (err) {
      this.log(`The system's sleep blocker could not be stopped: ${String(err)}`);
    }
  }
}
