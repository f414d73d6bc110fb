// The desktop studio and the machine's power (issue 17 item 4, src/main/electron/power.ts):
// whether it runs on battery (Linux's power-supply class, polled and on Electron's events), and
// one sleep blocker held while the queue has work. Electron itself cannot run here, so its
// powerSaveBlocker is a recording stand-in and main.ts's wiring is checked statically.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BatteryWatch,
  SleepBlocker,
  linuxOnBattery,
  queueHasWork,
} from '../../src/main/electron/power';
import type { QueueState } from '../../src/shared';

/** A /sys/class/power_supply lookalike: each supply a folder of one-line files. */
function powerSupplies(supplies: Record<string, Record<string, string>>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-power-'));
  for (const [name, fields] of Object.entries(supplies)) {
    fs.mkdirSync(path.join(root, name));
    for (const [field, value] of Object.entries(fields))
      fs.writeFileSync(path.join(root, name, field), `${value}\n`);
  }
  return root;
}

describe('on battery, on Linux', () => {
  const roots: string[] = [];
  const supplies = (s: Record<string, Record<string, string>>) => {
    const root = powerSupplies(s);
    roots.push(root);
    return root;
  };
  afterEach(() => {
    for (const root of roots.splice(0)) fs.rmSync(root, { recursive: true, force: true });
  });

  const battery = (status: string, scope?: string) => ({
    type: 'Battery',
    status,
    ...(scope ? { scope } : {}),
  });

  it('a laptop unplugged: its battery discharges and no adapter is online', () => {
    expect(
      linuxOnBattery(
        supplies({ AC: { type: 'Mains', online: '0' }, BAT0: battery('Discharging') }),
      ),
    ).toBe(true);
    expect(linuxOnBattery(supplies({ BAT1: battery('Discharging', 'System') }))).toBe(true);
  });

  it('plugged in (charging, full, or discharging under load while the adapter is online)', () => {
    expect(
      linuxOnBattery(supplies({ AC: { type: 'Mains', online: '1' }, BAT0: battery('Charging') })),
    ).toBe(false);
    expect(
      linuxOnBattery(supplies({ AC: { type: 'Mains', online: '1' }, BAT0: battery('Full') })),
    ).toBe(false);
    expect(
      linuxOnBattery(
        supplies({ ADP1: { type: 'Mains', online: '1' }, BAT0: battery('Discharging') }),
      ),
    ).toBe(false);
    // USB-C power delivery reports a USB supply, online 1 or 2.
    expect(
      linuxOnBattery(
        supplies({ ucsi: { type: 'USB', online: '2' }, BAT0: battery('Discharging') }),
      ),
    ).toBe(false);
  });

  it('a desktop, a mouse battery, nothing readable: not on battery', () => {
    expect(linuxOnBattery(supplies({}))).toBe(false);
    expect(linuxOnBattery(supplies({ AC: { type: 'Mains', online: '1' } }))).toBe(false);
    expect(linuxOnBattery(supplies({ hidpp_battery_0: battery('Discharging', 'Device') }))).toBe(
      false,
    );
    expect(linuxOnBattery(path.join(os.tmpdir(), 'ls-no-such-power-folder'))).toBe(false);
    expect(linuxOnBattery(supplies({ BAT0: {} }))).toBe(false);
  });
});

describe('following the battery', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('reports the state at start when on battery, then each change, by event or by polling', () => {
    let onBattery = true;
    const changes: boolean[] = [];
    const watch = new BatteryWatch(
      () => onBattery,
      (b) => changes.push(b),
      30_000,
    );
    watch.start();
    expect(changes).toEqual([true]);
    // Plugged in: an 'on-ac' event reads it at once.
    onBattery = false;
    watch.check();
    expect(changes).toEqual([true, false]);
    // Unplugged where no event comes (Linux, Windows): the next poll finds it.
    onBattery = true;
    vi.advanceTimersByTime(29_999);
    expect(changes).toEqual([true, false]);
    vi.advanceTimersByTime(1);
    expect(changes).toEqual([true, false, true]);
    vi.advanceTimersByTime(120_000);
    expect(changes).toEqual([true, false, true]);
    watch.dispose();
    onBattery = false;
    vi.advanceTimersByTime(120_000);
    expect(changes).toEqual([true, false, true]);
  });

  it('says nothing at start on mains power, and a failing read counts as mains power', () => {
    const changes: boolean[] = [];
    let fail = false;
    let onBattery = false;
    const watch = new BatteryWatch(
      () => {
        if (fail) throw new Error('no power information');
        return onBattery;
      },
      (b) => changes.push(b),
    );
    watch.start();
    expect(changes).toEqual([]);
    onBattery = true;
    watch.check();
    fail = true;
    watch.check();
    expect(changes).toEqual([true, false]);
    expect(watch.onBattery).toBe(false);
    watch.dispose();
  });
});

/** A queue with jobs in these states. */
function queue(paused: boolean, ...states: QueueState['jobs'][number]['state'][]): QueueState {
  return {
    paused,
    pausedReason: null,
    jobs: states.map((state, i) => ({ id: `j${i}`, state }) as QueueState['jobs'][number]),
  };
}

describe('keeping the system awake for the queue', () => {
  it('the queue has work while a job runs, or jobs wait and it is not paused', () => {
    expect(queueHasWork(queue(false, 'running', 'queued'))).toBe(true);
    expect(queueHasWork(queue(false, 'queued', 'done'))).toBe(true);
    // Paused: the running job still finishes, the queued ones wait for the person.
    expect(queueHasWork(queue(true, 'running', 'queued'))).toBe(true);
    expect(queueHasWork(queue(true, 'queued', 'queued'))).toBe(false);
    expect(queueHasWork(queue(false, 'done', 'failed', 'cancelled'))).toBe(false);
    expect(queueHasWork(queue(false))).toBe(false);
  });

  /** A stand-in for Electron's powerSaveBlocker that records what is held. */
  function recorder(failStart = false) {
    const held = new Set<number>();
    const calls: string[] = [];
    let next = 1;
    return {
      held,
      calls,
      api: {
        start(type: 'prevent-app-suspension') {
          calls.push(`start ${type}`);
          if (failStart) throw new Error('no power service');
          held.add(next);
          return next++;
        },
        stop(id: number) {
          calls.push(`stop ${id}`);
          return held.delete(id);
        },
      },
    };
  }

  it('holds one blocker while busy, however often the queue changes, and none once idle', () => {
    const r = recorder();
    const sleep = new SleepBlocker(r.api);
    sleep.update(true);
    sleep.update(true);
    sleep.update(true);
    expect(r.calls).toEqual(['start prevent-app-suspension']);
    expect(sleep.holding).toBe(true);
    sleep.update(false);
    sleep.update(false);
    expect(r.held.size).toBe(0);
    expect(sleep.holding).toBe(false);
    sleep.update(true);
    expect(r.calls).toEqual([
      'start prevent-app-suspension',
      'stop 1',
      'start prevent-app-suspension',
    ]);
    // Quitting with work left: the blocker is stopped, once.
    sleep.dispose();
    sleep.dispose();
    expect(r.held.size).toBe(0);
    expect(r.calls.filter((c) => c.startsWith('stop'))).toEqual(['stop 1', 'stop 2']);
  });

  it('a blocker that fails to start is logged, the queue goes on, and nothing leaks', () => {
    const r = recorder(true);
    const logs: string[] = [];
    const sleep = new SleepBlocker(r.api, (l) => logs.push(l));
    sleep.update(true);
    expect(sleep.holding).toBe(false);
    expect(logs).toEqual([
      'The system could not be kept awake for the queue: Error: no power service',
    ]);
    sleep.update(false);
    sleep.dispose();
    expect(r.calls.filter((c) => c.startsWith('stop'))).toEqual([]);
  });

  it('a stop that throws still forgets the blocker (it is not stopped twice)', () => {
    const r = recorder();
    const logs: string[] = [];
    const api = {
      ...r.api,
      stop: (id: number) => {
        r.api.stop(id);
        throw new Error('gone');
      },
    };
    const sleep = new SleepBlocker(api, (l) => logs.push(l));
    sleep.update(true);
    sleep.update(false);
    sleep.dispose();
    expect(r.calls).toEqual(['start prevent-app-suspension', 'stop 1']);
    expect(logs).toHaveLength(1);
  });
});

describe('the desktop shell wires power to the host', () => {
  const main = fs.readFileSync(
    path.resolve(import.meta.dirname, '../../src/main/electron/main.ts'),
    'utf8',
  );
  const willQuit = main.slice(main.indexOf("app.on('will-quit'"));

  it('the battery: Electron on macOS and Windows, sysfs on Linux, events and polling', () => {
    expect(main).toMatch(
      /process\.platform === 'linux' \? linuxOnBattery\(\) : powerMonitor\.isOnBatteryPower\(\)/,
    );
    expect(main).toMatch(/\(onBattery\) => host\?\.setOnBattery\(onBattery\)/);
    for (const event of ['on-battery', 'on-ac', 'resume'])
      expect(main).toContain(`powerMonitor.on('${event}', () => battery.check());`);
    expect(main).toMatch(/battery\.start\(\);/);
    expect(willQuit).toMatch(/battery\.dispose\(\);/);
  });

  it('sleep: powerSaveBlocker follows every queue change, and is stopped on quit', () => {
    expect(main).toMatch(/new SleepBlocker\(powerSaveBlocker,/);
    expect(main).toMatch(
      /if \(event === 'queueChanged'\) sleep\.update\(queueHasWork\(payload as QueueState\)\);/,
    );
    expect(main).toMatch(/setInterval\(refreshSleep, 60_000\)/);
    expect(willQuit).toMatch(/sleep\.dispose\(\);/);
  });
});
