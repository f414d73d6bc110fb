import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { dispatch } from '../../src/main/dispatch';
import {
  type EventName,
  StudioError,
  type Transport,
  createStudioClient,
  methodNames,
  studioMethods,
} from '../../src/shared';

const dirs: string[] = [];
function host(): StudioHost {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-contract-'));
  dirs.push(dir);
  return new StudioHost({ shell: 'headless', dataDir: dir, version: '1.2.3' });
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** An in-memory transport pair, as VS Code tests its IPC without Electron. */
function memoryTransport(h: StudioHost): Transport {
  return {
    call: (method, input) =>
      dispatch(h.service, method, JSON.parse(JSON.stringify(input ?? null)) ?? undefined),
    subscribe: (listener) =>
      h.events.subscribe((event: EventName, payload) => listener(event, payload)),
  };
}

describe('dispatch', () => {
  it('refuses names that are not contract methods, including prototype members', async () => {
    const h = host();
    for (const name of [
      'nope',
      '__proto__',
      'constructor',
      'toString',
      'hasOwnProperty',
      42,
      null,
    ]) {
      const r = await dispatch(h.service, name, undefined);
      expect(r).toMatchObject({ ok: false, error: { code: 'unknown-method' } });
    }
  });

  it('validates input with the method schema and names the bad field', async () => {
    const h = host();
    const r = await dispatch(h.service, 'updateSettings', { threads: 'many' });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe('invalid-argument');
      expect(r.error.message).toMatch(/"threads"/);
    }
    const extra = await dispatch(h.service, 'updateSettings', { theme: 'dark', evil: true });
    expect(extra).toMatchObject({ ok: false, error: { code: 'invalid-argument' } });
    const argForNoArg = await dispatch(h.service, 'getAppInfo', { unexpected: 1 });
    expect(argForNoArg).toMatchObject({ ok: false, error: { code: 'invalid-argument' } });
  });

  it('hides internal errors behind a sentence and reports them to the host', async () => {
    const h = host();
    const seen: unknown[] = [];
    const broken = {
      ...h.service,
      getSettings: () => {
        throw new Error('secret stack detail');
      },
    };
    const r = await dispatch(broken, 'getSettings', undefined, {
      onUnexpectedError: (_m, e) => seen.push(e),
    });
    expect(r).toEqual({
      ok: false,
      error: { code: 'internal', message: 'Something went wrong inside Latent Studio.' },
    });
    expect(seen).toHaveLength(1);
    const full = {
      ...h.service,
      getSettings: () => {
        throw Object.assign(new Error('x'), { code: 'ENOSPC' });
      },
    };
    expect(await dispatch(full, 'getSettings', undefined)).toMatchObject({
      ok: false,
      error: { code: 'disk-full' },
    });
  });
});

describe('createStudioClient', () => {
  it('exposes every contract method and round-trips values', async () => {
    const h = host();
    const api = createStudioClient(memoryTransport(h));
    for (const name of methodNames)
      expect(typeof (api as unknown as Record<string, unknown>)[name]).toBe('function');
    expect(Object.keys(studioMethods).sort()).toEqual([...methodNames].sort());
    const info = await api.getAppInfo();
    expect(info).toMatchObject({ name: 'Latent Studio', version: '1.2.3', shell: 'headless' });
    const s = await api.updateSettings({ theme: 'dark', threads: 3 });
    expect(s).toMatchObject({ theme: 'dark', threads: 3 });
    expect(await api.getSettings()).toEqual(s);
  });

  it('rejects with a StudioError carrying the code', async () => {
    const api = createStudioClient(memoryTransport(host()));
    const err = await api.updateSettings({ threads: -1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StudioError);
    expect((err as StudioError).code).toBe('invalid-argument');
  });

  it('delivers events to subscribers and stops after unsubscribe', async () => {
    const h = host();
    const api = createStudioClient(memoryTransport(h));
    const got: string[] = [];
    const off = api.on('settingsChanged', (s) => got.push(s.theme));
    await api.updateSettings({ theme: 'light' });
    off();
    await api.updateSettings({ theme: 'dark' });
    expect(got).toEqual(['light']);
  });
});
