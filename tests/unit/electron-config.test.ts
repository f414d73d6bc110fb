// The desktop shell's checklist items that cannot run here (no Electron binary), checked
// statically: the fuses electron-builder flips, the menu of a packaged build, and the quit
// that waits for the engine.
import fs from 'node:fs';
import path from 'node:path';
import type { Configuration, FuseOptionsV1 } from 'app-builder-lib';
import { getConfig, validateConfiguration } from 'app-builder-lib/out/util/config/config';
import { DebugLogger } from 'builder-util';
import type { MenuItemConstructorOptions } from 'electron';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { developerRoles, menuTemplate } from '../../src/main/electron/menu';
import { gracefulQuit } from '../../src/main/electron/quit';

const repo = path.resolve(import.meta.dirname, '..', '..');

describe('electron-builder.yml', () => {
  // Read and validated by electron-builder itself, as `npm run package` does.
  let config: Configuration;
  beforeAll(async () => {
    config = await getConfig(repo, path.join(repo, 'electron-builder.yml'), null);
  });

  it("passes electron-builder's own schema validation, which refuses a misspelled fuse", async () => {
    await expect(validateConfiguration(config, new DebugLogger(false))).resolves.toBeUndefined();
    const misspelled = {
      ...config,
      electronFuses: { ...config.electronFuses, runAsNodes: false },
    } as Configuration;
    await expect(validateConfiguration(misspelled, new DebugLogger(false))).rejects.toThrow(
      /electronFuses/,
    );
  }, 60_000);

  it('flips the fuses of the security checklist', () => {
    const expected = {
      runAsNode: false,
      enableNodeOptionsEnvironmentVariable: false,
      enableNodeCliInspectArguments: false,
      enableEmbeddedAsarIntegrityValidation: true,
      onlyLoadAppFromAsar: true,
      enableCookieEncryption: true,
      grantFileProtocolExtraPrivileges: false,
    } satisfies FuseOptionsV1;
    expect(config.electronFuses).toEqual(expected);
    // onlyLoadAppFromAsar needs the app packed into an asar.
    expect(config.asar).toBe(true);
  });

  it("uses only keys electron-builder's own schema knows, with boolean values", () => {
    const scheme = JSON.parse(
      fs.readFileSync(path.join(repo, 'node_modules', 'app-builder-lib', 'scheme.json'), 'utf8'),
    ) as {
      properties: Record<string, { anyOf?: { $ref?: string }[] }>;
      definitions: Record<string, { properties: Record<string, { type: string }> }>;
    };
    const ref = scheme.properties.electronFuses.anyOf?.find((a) => a.$ref)?.$ref;
    expect(ref).toBe('#/definitions/FuseOptionsV1');
    const known = scheme.definitions.FuseOptionsV1.properties;
    for (const [key, value] of Object.entries(config.electronFuses ?? {})) {
      expect(known[key], key).toBeDefined();
      expect(known[key].type).toBe('boolean');
      expect(typeof value).toBe('boolean');
    }
  });
});

/** Every role and accelerator in a menu template, submenus included. */
function flatten(items: MenuItemConstructorOptions[]): MenuItemConstructorOptions[] {
  return items.flatMap((item) => [
    item,
    ...(Array.isArray(item.submenu) ? flatten(item.submenu) : []),
  ]);
}

describe('the application menu', () => {
  it.each(['linux', 'win32', 'darwin'] as const)(
    'a packaged build on %s has no developer tools and no reload',
    (platform) => {
      const items = flatten(menuTemplate({ isPackaged: true, platform }));
      const roles = items.map((i) => i.role?.toString().toLowerCase());
      for (const role of developerRoles) expect(roles).not.toContain(role.toLowerCase());
      expect(items.map((i) => i.label)).not.toContain('Developer');
      const accelerators = items.map((i) => i.accelerator).filter(Boolean);
      expect(accelerators.join(' ')).not.toMatch(/Shift\+I|F12|Alt\+Cmd\+I/i);
      // Still a usable menu: copy and paste work in text fields, and there is a way out.
      expect(roles).toEqual(expect.arrayContaining(['copy', 'paste', 'undo']));
      expect(roles).toContain(platform === 'darwin' ? 'appmenu' : 'quit');
    },
  );

  it('a checkout gets the Developer menu with the developer tools', () => {
    const items = flatten(menuTemplate({ isPackaged: false, platform: 'linux' }));
    expect(items.map((i) => i.role)).toEqual(expect.arrayContaining([...developerRoles]));
  });
});

describe('graceful quit', () => {
  afterEach(() => vi.useRealTimers());

  const event = () => ({ preventDefault: vi.fn() });

  it('holds the first quit until the host has closed, then quits once and lets it through', async () => {
    let finishClose!: () => void;
    const close = vi.fn(() => new Promise<void>((r) => (finishClose = r)));
    const quit = vi.fn();
    const onBeforeQuit = gracefulQuit({ close, quit, timeoutMs: 60_000 });

    const first = event();
    onBeforeQuit(first);
    expect(first.preventDefault).toHaveBeenCalledOnce();
    expect(close).toHaveBeenCalledOnce();

    // Cmd+Q again while the engine finishes its step: still held, no second close.
    const again = event();
    onBeforeQuit(again);
    expect(again.preventDefault).toHaveBeenCalledOnce();
    expect(close).toHaveBeenCalledOnce();
    await new Promise((r) => setTimeout(r, 5));
    expect(quit).not.toHaveBeenCalled();

    finishClose();
    await vi.waitFor(() => expect(quit).toHaveBeenCalledOnce());
    const last = event();
    onBeforeQuit(last);
    expect(last.preventDefault).not.toHaveBeenCalled();
    expect(close).toHaveBeenCalledOnce();
  });

  it('quits anyway when the host does not close within the limit, and says so', async () => {
    vi.useFakeTimers();
    const quit = vi.fn();
    const log = vi.fn();
    const onBeforeQuit = gracefulQuit({
      close: () => new Promise<void>(() => {}),
      quit,
      timeoutMs: 15_000,
      log,
    });
    onBeforeQuit(event());
    await vi.advanceTimersByTimeAsync(14_999);
    expect(quit).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(quit).toHaveBeenCalledOnce();
    expect(log).toHaveBeenCalledWith(expect.stringMatching(/did not stop within 15000 ms/));
  });

  it('quits when closing fails, with the reason in the log', async () => {
    const quit = vi.fn();
    const log = vi.fn();
    gracefulQuit({
      close: () => Promise.reject(new Error('disk gone')),
      quit,
      timeoutMs: 1000,
      log,
    })(event());
    await vi.waitFor(() => expect(quit).toHaveBeenCalledOnce());
    expect(log).toHaveBeenCalledWith(expect.stringContaining('disk gone'));
  });
});
