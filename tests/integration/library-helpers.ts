// Shared by the library tests: a real HostContext over a temp data folder, PNG builders.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type EventName, type GenerationInput, GenerationSettings } from '../../src/shared';
import { EventHub } from '../../src/main/events';
import type { Db } from '../../src/main/library/db';
import { migrate, migrations, schemaVersion } from '../../src/main/library/migrations';
import { Library, type LibraryOptions } from '../../src/main/library/service';
import { encodePngWithMetadata } from '../../src/main/library/png-metadata';
import type { DesktopIntegration, HostContext } from '../../src/main/services';
import { SettingsStore } from '../../src/main/settings-store';

export interface TestContext extends HostContext {
  logs: string[];
  emitted: Array<{ event: EventName; payload: unknown }>;
}

/**
 * Runs migration `version` again on a library whose tables the caller took back to how they were
 * before it (its tables, triggers and indexes dropped), as an upgrade from the version before
 * would run it; the library stays at the latest version, since later migrations already ran.
 */
export function replayMigration(db: Db, version: number): void {
  const step = migrations.find((m) => m.version === version);
  if (!step) throw new Error(`No migration ${version}.`);
  db.pragma(`user_version = ${version - 1}`);
  migrate(db, [step]);
  db.pragma(`user_version = ${schemaVersion}`);
}

export function tempDir(prefix = 'ls-lib-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function makeContext(
  dataDir: string,
  opts: { resourcesDir?: string | null; desktop?: DesktopIntegration | null } = {},
): TestContext {
  const events = new EventHub();
  const emitted: TestContext['emitted'] = [];
  events.subscribe((event, payload) => emitted.push({ event, payload }));
  const logs: string[] = [];
  return {
    dataDir,
    resourcesDir: opts.resourcesDir ?? null,
    workerPath: null,
    sqliteNativeBinding: null,
    desktop: opts.desktop ?? null,
    events,
    settings: new SettingsStore(dataDir),
    updateEngineStatus: () => {},
    log: (line) => logs.push(line),
    logs,
    emitted,
  };
}

export async function openLibrary(
  dataDir: string,
  opts: {
    resourcesDir?: string | null;
    desktop?: DesktopIntegration | null;
    library?: LibraryOptions;
  } = {},
): Promise<{ library: Library; context: TestContext }> {
  const context = makeContext(dataDir, opts);
  const library = new Library(context, { backupIntervalMs: 0, ...opts.library });
  await library.ready;
  return { library, context };
}

export function settingsOf(partial: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({ model: 'model-x', prompt: 'a cat', seed: 1, ...partial });
}

/** A small PNG whose pixels depend on `seed` (noise compresses badly: `noisy` makes big files). */
export async function pngOf(
  settings: GenerationSettings | null,
  seed = 1,
  size = 64,
  noisy = false,
): Promise<Uint8Array> {
  const rgb = new Uint8Array(size * size * 3);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < rgb.length; i++) {
    if (noisy) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      rgb[i] = x & 255;
    } else rgb[i] = (i * 7 + seed * 31) & 255;
  }
  return encodePngWithMetadata(rgb, size, size, 3, settings ? { settings } : null);
}

export async function saveOne(
  library: Library,
  partial: Partial<GenerationInput> = {},
  opts: { images?: number; parentId?: string | null; size?: number } = {},
) {
  const settings = settingsOf(partial);
  const n = opts.images ?? 1;
  const images = [];
  for (let i = 0; i < n; i++) {
    const seed = settings.seed + i;
    images.push({
      png: await pngOf({ ...settings, seed }, seed, opts.size ?? 64),
      width: opts.size ?? 64,
      height: opts.size ?? 64,
      seed,
      batchIndex: i,
    });
  }
  return library.saveGeneration({
    settings,
    images,
    family: 'sd1',
    provider: 'cpu',
    fallbackReason: null,
    timings: { total: 12.5 },
    parentId: opts.parentId ?? null,
  });
}

/**
 * One contract call over the headless server's HTTP transport, as the studio makes it: the
 * value, or an Error carrying the StudioError code.
 */
export async function callServer<T = unknown>(
  server: { url: string; token: string },
  method: string,
  input?: unknown,
): Promise<T> {
  const res = await fetch(`${server.url}/api/call/${method}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${server.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ input }),
  });
  const envelope = (await res.json()) as {
    ok: boolean;
    value?: T;
    error?: { code: string; message: string };
  };
  if (!envelope.ok)
    throw Object.assign(new Error(envelope.error!.message), { code: envelope.error!.code });
  return envelope.value as T;
}

/** Polls `fn` every 20 ms until it returns something truthy; fails after `ms` naming `what`. */
export async function until<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 60_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
