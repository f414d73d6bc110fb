// What the engine's threads do while the studio is in the background (issue 17 item 4,
// src/engine/models/priority.ts), and when the desktop shell says the studio is there
// (src/main/electron/background.ts; Electron itself cannot run here, so its wiring is checked
// statically).
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BACKGROUND_NICENESS,
  canRaisePriority,
  threadPolicy,
} from '../../src/engine/models/priority';
import { BackgroundTracker } from '../../src/main/electron/background';
import { Settings, SettingsPatch } from '../../src/shared/settings';

const fore = { background: false, onBattery: false, mode: 'gentle' } as const;
const back = { background: true, onBattery: false, mode: 'gentle' } as const;

describe('the background thread policy', () => {
  it('in front: spinning only on a quiet machine, normal priority, whatever the setting', () => {
    expect(threadPolicy(fore, 0.5, 2, true)).toEqual({ spinning: true, niceness: 0 });
    expect(threadPolicy(fore, 2, 2, true)).toEqual({ spinning: false, niceness: 0 });
    expect(threadPolicy({ ...fore, mode: 'full' }, 0.5, 2, true)).toEqual({
      spinning: true,
      niceness: 0,
    });
  });

  it('in the background and gentle: no spinning even when quiet, and low priority', () => {
    expect(threadPolicy(back, 0.1, 8, true)).toEqual({
      spinning: false,
      niceness: BACKGROUND_NICENESS,
    });
    expect(threadPolicy(back, 30, 2, true)).toEqual({
      spinning: false,
      niceness: BACKGROUND_NICENESS,
    });
    expect(BACKGROUND_NICENESS).toBeGreaterThan(0);
  });

  it('no priority change where it could never be raised back: spinning off alone', () => {
    expect(threadPolicy(back, 0.1, 8, false)).toEqual({ spinning: false, niceness: 0 });
  });

  it('knows where the priority can be raised back', () => {
    const limits = (soft: string) =>
      `Limit  Soft Limit  Hard Limit  Units\nMax nice priority         ${soft}                    ${soft}                    \n`;
    const status = (caps: string) => `Name:\tnode\nCapEff:\t${caps}\n`;
    const linux = (caps: string, soft: string) =>
      canRaisePriority('linux', { status: status(caps), limits: limits(soft) });
    // CAP_SYS_NICE (bit 23): root in a container, or a granted capability.
    expect(linux('000001fffeffffff', '0')).toBe(true);
    expect(linux('0000000000800000', '0')).toBe(true);
    // A person's desktop session: no capability, RLIMIT_NICE 0 (or short of 20).
    expect(linux('0000000000000000', '0')).toBe(false);
    expect(linux('00000000007fffff', '19')).toBe(false);
    // An RLIMIT_NICE that reaches nice 0 (limits.conf "nice 0" sets it to 20).
    expect(linux('0', '20')).toBe(true);
    expect(linux('0', 'unlimited')).toBe(true);
    expect(canRaisePriority('win32', null)).toBe(true);
  });

  it('"keep full speed" in the background behaves as in front', () => {
    const full = { background: true, onBattery: false, mode: 'full' } as const;
    expect(threadPolicy(full, 0.5, 2, true)).toEqual({ spinning: true, niceness: 0 });
    expect(threadPolicy(full, 5, 2, true)).toEqual({ spinning: false, niceness: 0 });
  });

  it('on battery and gentle: no spinning even when quiet, priority as the windows decide', () => {
    const battery = { ...fore, onBattery: true };
    expect(threadPolicy(battery, 0.1, 8, true)).toEqual({ spinning: false, niceness: 0 });
    expect(threadPolicy({ ...back, onBattery: true }, 0.1, 8, true)).toEqual({
      spinning: false,
      niceness: BACKGROUND_NICENESS,
    });
    // "keep full speed" keeps it on battery too.
    expect(threadPolicy({ ...battery, mode: 'full' }, 0.1, 8, true)).toEqual({
      spinning: true,
      niceness: 0,
    });
  });

  it('is a setting, gentle by default, that old settings files load without', () => {
    expect(Settings.parse({}).backgroundMode).toBe('gentle');
    expect(SettingsPatch.parse({ backgroundMode: 'full' })).toEqual({ backgroundMode: 'full' });
    expect(SettingsPatch.safeParse({ backgroundMode: 'fast' }).success).toBe(false);
  });
});

/** A tracker with a one-second delay, and the changes it reported. */
function tracker(): { t: BackgroundTracker; changes: boolean[] } {
  const changes: boolean[] = [];
  return { t: new BackgroundTracker((b) => changes.push(b), 1000), changes };
}

describe('the desktop studio in the background', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('goes to the background a second after the last window loses focus', () => {
    const { t, changes } = tracker();
    t.update(true);
    expect(changes).toEqual([]);
    t.update(false);
    vi.advanceTimersByTime(999);
    expect(changes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(changes).toEqual([true]);
    expect(t.background).toBe(true);
    // More blur/minimize/hide events change nothing.
    t.update(false);
    vi.advanceTimersByTime(5000);
    expect(changes).toEqual([true]);
  });

  it('comes back at once when a window is focused again', () => {
    const { t, changes } = tracker();
    t.update(false);
    vi.advanceTimersByTime(1000);
    t.update(true);
    expect(changes).toEqual([true, false]);
    t.update(true);
    expect(changes).toEqual([true, false]);
  });

  it('ignores focus passing briefly through "no window" (between its windows, a dialog)', () => {
    const { t, changes } = tracker();
    t.update(false);
    vi.advanceTimersByTime(400);
    t.update(true);
    vi.advanceTimersByTime(5000);
    expect(changes).toEqual([]);
    t.update(false);
    t.dispose();
    vi.advanceTimersByTime(5000);
    expect(changes).toEqual([]);
  });

  it('main wires every window event to the tracker and the tracker to the host', () => {
    const main = fs.readFileSync(
      path.resolve(import.meta.dirname, '../../src/main/electron/main.ts'),
      'utf8',
    );
    expect(main).toMatch(/new BackgroundTracker\(\(b\) => host\?\.setBackground\(b\)\)/);
    expect(main).toMatch(/for \(const event of backgroundWindowEvents\)\s+window\.on\(/);
    expect(main).toMatch(/isFocused\(\)/);
  });
});
