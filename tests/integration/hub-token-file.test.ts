// huggingface_hub's token file as the third source of the Hub token (src/main/downloads/token.ts):
// `npm run models` (the bundled entry, in child processes with a temporary HOME, HF_HOME and
// HF_TOKEN_PATH) and the headless studio download a gated repo from the loopback Hub, whose
// log shows the Authorization header each request carried. The file is never written.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { tempDir } from './library-helpers';
import { openHubHost } from './host-helpers';

const RESOURCES = path.join(import.meta.dirname, '..', '..', 'resources');
let cli: string;
let hub: FakeHub;
let fixtureDir: string;

beforeAll(async () => {
  cli = await bundleEntry('src/main/models-cli.ts', 'models-cli-token');
  fixtureDir = await fixtureModel('worker-tiny', {});
  hub = await startFakeHub([{ id: 'studio/gated-sd', dir: fixtureDir, gated: true }]);
});
afterAll(async () => {
  await hub?.close();
});

/** A file holding `token` (with the newline `hf auth login` writes) at `file`. */
function tokenFile(file: string, token: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${token}\n`);
  return file;
}

/** `download studio/gated-sd` into a fresh data folder, with `home` as HOME and `env` added. */
function download(
  home: string,
  env: Record<string, string> = {},
): Promise<{ code: number | null; stderr: string }> {
  hub.requests.length = 0;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [cli, 'download', 'studio/gated-sd', '--quiet', '--data-dir', tempDir('ls-token-cli-')],
      {
        env: {
          ...process.env,
          HOME: home,
          USERPROFILE: home,
          HF_ENDPOINT: hub.url,
          HF_TOKEN: '',
          HF_HOME: '',
          HF_TOKEN_PATH: '',
          XDG_CACHE_HOME: '',
          HF_HUB_DISABLE_IMPLICIT_TOKEN: '',
          LATENT_STUDIO_RESOURCES_DIR: RESOURCES,
          ...env,
        },
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/** The Authorization headers the Hub host and the CDN host were sent, each set of distinct values. */
function sent(): { hub: (string | null)[]; cdn: (string | null)[] } {
  const distinct = (host: 'hub' | 'cdn') => [
    ...new Set(hub.requests.filter((r) => r.host === host).map((r) => r.authorization)),
  ];
  return { hub: distinct('hub'), cdn: distinct('cdn') };
}

describe("npm run models with huggingface_hub's token file", () => {
  it('reads ~/.cache/huggingface/token when HF_TOKEN is unset, sends it to the Hub only, never writes it', async () => {
    const home = tempDir('ls-token-home-');
    const file = tokenFile(path.join(home, '.cache', 'huggingface', 'token'), hub.token);
    const before = fs.statSync(file);
    const run = await download(home);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const headers = sent();
    expect(headers.hub).toEqual([`Bearer ${hub.token}`]);
    // Redirected LFS files come from the CDN host, which never gets the token.
    expect(hub.requests.some((r) => r.host === 'cdn')).toBe(true);
    expect(headers.cdn).toEqual([null]);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${hub.token}\n`);
    expect(fs.statSync(file).mtimeMs).toBe(before.mtimeMs);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['token']);
  });

  it('follows HF_TOKEN_PATH over HF_HOME over XDG_CACHE_HOME, and HF_TOKEN over them all', async () => {
    const home = tempDir('ls-token-home-');
    const hfHome = tempDir('ls-token-hfhome-');
    tokenFile(path.join(hfHome, 'token'), hub.token);
    const wrong = tokenFile(path.join(tempDir('ls-token-path-'), 'my-token'), 'hf_wrong');
    const xdg = tempDir('ls-token-xdg-');
    tokenFile(path.join(xdg, 'huggingface', 'token'), 'hf_xdg');

    const viaPath = await download(home, { HF_HOME: hfHome, HF_TOKEN_PATH: wrong });
    expect(viaPath.code).toBe(1);
    expect(viaPath.stderr).toMatch(/is gated: accept its conditions on its Hub page/);
    expect(sent().hub).toContain('Bearer hf_wrong');

    const viaHome = await download(home, { HF_HOME: hfHome, XDG_CACHE_HOME: xdg });
    expect(viaHome.code).toBe(0);
    expect(sent().hub).toEqual([`Bearer ${hub.token}`]);

    const viaXdg = await download(home, { XDG_CACHE_HOME: xdg });
    expect(viaXdg.code).toBe(1);
    expect(sent().hub).toContain('Bearer hf_xdg');

    const viaEnv = await download(home, { HF_TOKEN: hub.token, HF_TOKEN_PATH: wrong });
    expect(viaEnv.code).toBe(0);
    expect(sent().hub).toEqual([`Bearer ${hub.token}`]);
  });

  it('sends no token from the file when HF_HUB_DISABLE_IMPLICIT_TOKEN is set', async () => {
    const home = tempDir('ls-token-home-');
    tokenFile(path.join(home, '.cache', 'huggingface', 'token'), hub.token);
    const run = await download(home, { HF_HUB_DISABLE_IMPLICIT_TOKEN: '1' });
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toMatch(
      /needs a Hugging Face access token \(it is gated or private\); add one in Settings, or set HF_TOKEN\.$/,
    );
    expect(sent().hub).toEqual([null]);
  });
});

describe("the studio with huggingface_hub's token file", () => {
  it('uses it after a token set in Settings, and says where the token comes from', async () => {
    const saved = { path: process.env.HF_TOKEN_PATH, home: process.env.HF_HOME };
    const hfHome = tempDir('ls-token-studio-');
    const file = tokenFile(path.join(hfHome, 'token'), hub.token);
    delete process.env.HF_TOKEN_PATH;
    process.env.HF_HOME = hfHome;
    const h = await openHubHost(
      [
        { id: 'studio/gated-a', dir: fixtureDir, gated: true },
        { id: 'studio/gated-b', dir: fixtureDir, gated: true },
      ],
      'ls-token-studio-data-',
    );
    try {
      const status = await h.host.service.getHubToken(undefined);
      expect(status.source).toBe('file');
      expect(status.note).toContain(file);
      const downloads = h.host.downloads.manager;
      const a = await downloads.wait((await downloads.add('studio/gated-a')).id);
      expect(a.state).toBe('done');
      const auth = (repo: string) =>
        new Set(h.hub.requests.filter((r) => r.url.includes(repo)).map((r) => r.authorization));
      expect(auth('/studio/gated-a/resolve/')).toEqual(new Set([`Bearer ${h.hub.token}`]));

      // A token saved in Settings comes first (headless: kept in memory).
      expect((await h.host.service.setHubToken({ token: 'hf_fromSettings' })).source).toBe(
        'memory',
      );
      const b = await downloads.wait((await downloads.add('studio/gated-b')).id);
      expect(b.error_code).toBe('forbidden');
      expect(auth('/studio/gated-b/resolve/')).toEqual(new Set(['Bearer hf_fromSettings']));

      // Cleared: the file's token again; the file itself is untouched.
      expect((await h.host.service.clearHubToken(undefined)).source).toBe('file');
      await downloads.cancel(b.id).catch(() => undefined);
      const again = await downloads.wait((await downloads.add('studio/gated-b')).id);
      expect(again.state).toBe('done');
      expect(fs.readFileSync(file, 'utf8')).toBe(`${hub.token}\n`);
    } finally {
      await h.close();
      if (saved.path === undefined) delete process.env.HF_TOKEN_PATH;
      else process.env.HF_TOKEN_PATH = saved.path;
      if (saved.home === undefined) delete process.env.HF_HOME;
      else process.env.HF_HOME = saved.home;
    }
  });
});
