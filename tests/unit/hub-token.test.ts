// The Hub token's keeping (issue 13, item 1): HF_TOKEN wins and cannot be edited; a token set in
// Settings is written only as the encryptor's ciphertext, never in clear and never in
// settings.json; without an encryptor that protects it, it lives in memory only; clearing works;
// the desktop's encryptor is Electron's safeStorage, unavailable on Linux's 'basic_text'.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hubConfigFrom } from '../../src/main/downloads/hub';
import {
  HubTokenStore,
  type SecretEncryptor,
  hubTokenFilePath,
  readHubTokenFile,
} from '../../src/main/downloads/token';
import { safeStorageEncryptor } from '../../src/main/electron/secrets';

const TOKEN = 'hf_SecretValue123';
/** An environment whose huggingface_hub token file does not exist (whatever this machine has). */
const noTokenFile = { HF_TOKEN_PATH: path.join(os.tmpdir(), 'ls-no-such-folder', 'token') };
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-token-'));
  dirs.push(d);
  return d;
}

/** A reversible "encryption" (XOR with a key and a marker) that shows which bytes were written. */
function fakeEncryptor(key = 0x5a, available = true): SecretEncryptor & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    available: () => available,
    encrypt: (plain) => {
      calls.push('encrypt');
      return Buffer.concat([Buffer.from('v10'), Buffer.from(plain).map((b) => b ^ key)]);
    },
    decrypt: (cipher) => {
      calls.push('decrypt');
      if (cipher.subarray(0, 3).toString() !== 'v10') throw new Error('bad cipher');
      return Buffer.from(cipher.subarray(3).map((b) => b ^ key)).toString();
    },
  };
}

/** Every byte under `dir`, as one string, to look for the token in clear. */
function everything(dir: string): string {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => fs.readFileSync(path.join(e.parentPath, e.name), 'latin1'))
    .join('\n');
}

describe('the Hub token store', () => {
  it('keeps a token set in Settings as ciphertext only, reads it back in a new session, and clears it', () => {
    const dir = tempDir();
    const logs: string[] = [];
    const enc = fakeEncryptor();
    const store = new HubTokenStore(dir, enc, noTokenFile, (l) => logs.push(l));
    expect(store.status()).toEqual({ source: 'none', editable: true, note: null });
    expect(store.set(`  ${TOKEN}\n`)).toEqual({ source: 'stored', editable: true, note: null });
    expect(store.token()).toBe(TOKEN);
    expect(enc.calls).toEqual(['encrypt']);
    const written = fs.readFileSync(path.join(dir, 'hub-token.bin'));
    expect(written.equals(enc.encrypt(TOKEN))).toBe(true);
    expect(everything(dir)).not.toContain(TOKEN);
    expect(fs.existsSync(path.join(dir, 'settings.json'))).toBe(false);

    const again = new HubTokenStore(dir, fakeEncryptor(), noTokenFile);
    expect(again.status().source).toBe('stored');
    expect(again.token()).toBe(TOKEN);

    expect(again.clear()).toEqual({ source: 'none', editable: true, note: null });
    expect(again.token()).toBeNull();
    expect(fs.existsSync(path.join(dir, 'hub-token.bin'))).toBe(false);
    expect(new HubTokenStore(dir, fakeEncryptor(), noTokenFile).token()).toBeNull();
    expect(logs.join('\n')).not.toContain(TOKEN);
    expect(logs).toEqual(['hub token set (encrypted in the data folder)']);
  });

  it('keeps the token in memory only, and says so, when there is no encryptor or it protects nothing', () => {
    for (const enc of [null, fakeEncryptor(0x5a, false)]) {
      const dir = tempDir();
      const store = new HubTokenStore(dir, enc, noTokenFile);
      const status = store.set(TOKEN);
      expect(status.source).toBe('memory');
      expect(status.note).toMatch(
        enc
          ? /no secret store .* kept only until the app closes/
          : /kept only until the server stops; set HF_TOKEN/,
      );
      expect(store.token()).toBe(TOKEN);
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(new HubTokenStore(dir, enc, noTokenFile).token()).toBeNull();
    }
  });

  it('uses HF_TOKEN first, shown as from the environment and not editable', () => {
    const dir = tempDir();
    const stored = new HubTokenStore(dir, fakeEncryptor(), noTokenFile);
    stored.set(TOKEN);
    const store = new HubTokenStore(dir, fakeEncryptor(), {
      ...noTokenFile,
      HF_TOKEN: ' hf_fromenv ',
    });
    expect(store.token()).toBe('hf_fromenv');
    expect(store.status()).toEqual({
      source: 'environment',
      editable: false,
      note: 'The token comes from the HF_TOKEN environment variable; change it there.',
    });
    expect(() => store.set('hf_other')).toThrow(
      'The token comes from the HF_TOKEN environment variable; change or unset it there.',
    );
    expect(() => store.clear()).toThrow(/HF_TOKEN/);
    expect(store.token()).toBe('hf_fromenv');
  });

  it('refuses a token with spaces, and a ciphertext this machine cannot decrypt is not used', () => {
    const dir = tempDir();
    const store = new HubTokenStore(dir, fakeEncryptor(), noTokenFile);
    expect(() => store.set('hf_a b')).toThrow(
      'A Hugging Face token is one word of letters and digits (it starts with hf_).',
    );
    store.set(TOKEN);
    fs.writeFileSync(path.join(dir, 'hub-token.bin'), Buffer.from('garbage'));
    const other = new HubTokenStore(dir, fakeEncryptor(), noTokenFile);
    expect(other.token()).toBeNull();
    expect(other.status().note).toBe(
      'The saved token could not be decrypted on this machine; set it again.',
    );
  });
});

describe("huggingface_hub's token file", () => {
  const home = path.join(path.sep, 'home', 'ada');
  const at = (env: NodeJS.ProcessEnv) => hubTokenFilePath(env, home, 'linux');

  it('is found where huggingface_hub looks: HF_TOKEN_PATH, HF_HOME, XDG_CACHE_HOME, ~/.cache', () => {
    expect(at({})).toBe(path.join(home, '.cache', 'huggingface', 'token'));
    expect(at({ XDG_CACHE_HOME: '/var/cache/ada' })).toBe('/var/cache/ada/huggingface/token');
    expect(at({ XDG_CACHE_HOME: '/var/cache/ada', HF_HOME: '/data/hf' })).toBe('/data/hf/token');
    expect(at({ HF_HOME: '/data/hf', HF_TOKEN_PATH: '/secrets/hf' })).toBe('/secrets/hf');
    // `~` and variables are expanded (os.path.expanduser, expandvars); unknown ones stay.
    expect(at({ HF_HOME: '~/hf' })).toBe(path.join(home, 'hf', 'token'));
    expect(at({ HF_TOKEN_PATH: '$DATA/hf/${WHO}-token', DATA: '/data', WHO: 'ada' })).toBe(
      '/data/hf/ada-token',
    );
    expect(at({ HF_TOKEN_PATH: '/x/$NOPE/token' })).toBe('/x/$NOPE/token');
    expect(hubTokenFilePath({ HF_HOME: '%APPDATA%\\hf', APPDATA: 'C:\\A' }, home, 'win32')).toBe(
      path.join('C:\\A\\hf', 'token'),
    );
    // Set but empty counts as unset.
    expect(at({ HF_TOKEN_PATH: '', HF_HOME: '' })).toBe(at({}));
  });

  it('gives its one line without line breaks, and nothing when empty, not a token, or disabled', () => {
    const dir = tempDir();
    const file = path.join(dir, 'token');
    const env = { HF_TOKEN_PATH: file };
    expect(readHubTokenFile(env)).toBeNull();
    fs.writeFileSync(file, `${TOKEN}\r\n`);
    expect(readHubTokenFile(env)).toEqual({ file, token: TOKEN });
    // huggingface_hub's true values, in any case.
    for (const flag of ['1', 'true', 'ON', 'yes'])
      expect(readHubTokenFile({ ...env, HF_HUB_DISABLE_IMPLICIT_TOKEN: flag })).toBeNull();
    expect(readHubTokenFile({ ...env, HF_HUB_DISABLE_IMPLICIT_TOKEN: '0' })?.token).toBe(TOKEN);
    fs.writeFileSync(file, '  \n');
    expect(readHubTokenFile(env)).toBeNull();
    fs.writeFileSync(file, 'hf_two words\n');
    expect(readHubTokenFile(env)).toBeNull();
    // Through HF_HOME, with a temporary home.
    fs.mkdirSync(path.join(dir, 'hf'));
    fs.writeFileSync(path.join(dir, 'hf', 'token'), 'hf_fromHome');
    expect(readHubTokenFile({ HF_HOME: '~/hf' }, dir)?.token).toBe('hf_fromHome');
  });

  it('comes after HF_TOKEN and a token set in the studio, is shown as such, and is never written', () => {
    const dir = tempDir();
    const file = path.join(tempDir(), 'token');
    fs.writeFileSync(file, 'hf_fromFile\n');
    const before = fs.statSync(file);
    const env = { HF_TOKEN_PATH: file };

    const store = new HubTokenStore(dir, fakeEncryptor(), env);
    const fromFile = store.status();
    expect(fromFile).toEqual({
      source: 'file',
      editable: true,
      note: `The token comes from huggingface_hub's token file ${file} (hf auth login); a token saved here takes its place.`,
    });
    // Settings' token is what `hubConfigFrom` is given; the file comes after it.
    expect(hubConfigFrom(env, store.token()).token).toBe('hf_fromFile');
    store.set(TOKEN);
    expect(store.status().source).toBe('stored');
    expect(hubConfigFrom(env, store.token()).token).toBe(TOKEN);
    store.clear();
    expect(store.status()).toEqual(fromFile);
    expect(hubConfigFrom({ ...env, HF_TOKEN: 'hf_env' }, null).token).toBe('hf_env');
    expect(new HubTokenStore(dir, null, { ...env, HF_TOKEN: 'hf_env' }).status().source).toBe(
      'environment',
    );
    // Disabled: not read, and Settings says why.
    const off = new HubTokenStore(dir, fakeEncryptor(), {
      ...env,
      HF_HUB_DISABLE_IMPLICIT_TOKEN: '1',
    });
    expect(off.status()).toEqual({
      source: 'none',
      editable: true,
      note: "huggingface_hub's token file is not read because HF_HUB_DISABLE_IMPLICIT_TOKEN is set.",
    });
    expect(hubConfigFrom({ ...env, HF_HUB_DISABLE_IMPLICIT_TOKEN: '1' }, null).token).toBeNull();

    const after = fs.statSync(file);
    expect(fs.readFileSync(file, 'utf8')).toBe('hf_fromFile\n');
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.mode).toBe(before.mode);
  });
});

describe("the desktop's encryptor", () => {
  const storage = (available: boolean, backend: string) => ({
    isEncryptionAvailable: () => available,
    getSelectedStorageBackend: () => backend as 'basic_text',
    encryptString: (s: string) => Buffer.from(`enc:${s}`),
    decryptString: (b: Buffer) => b.toString().slice(4),
  });

  it("is safeStorage, unavailable when it is, and on Linux's hard-coded 'basic_text' password", () => {
    expect(safeStorageEncryptor(storage(true, 'gnome_libsecret'), 'linux').available()).toBe(true);
    expect(safeStorageEncryptor(storage(true, 'basic_text'), 'linux').available()).toBe(false);
    expect(safeStorageEncryptor(storage(false, 'unknown'), 'darwin').available()).toBe(false);
    expect(safeStorageEncryptor(storage(true, 'unknown'), 'win32').available()).toBe(true);
    const enc = safeStorageEncryptor(storage(true, 'kwallet'), 'linux');
    expect(enc.decrypt(enc.encrypt(TOKEN))).toBe(TOKEN);
  });

  it('is what the desktop shell hands the host, and main/electron alone imports safeStorage', () => {
    const repo = path.resolve(import.meta.dirname, '..', '..');
    const main = fs.readFileSync(path.join(repo, 'src/main/electron/main.ts'), 'utf8');
    expect(main).toMatch(/import \{[^}]*\bsafeStorage\b[^}]*\} from 'electron'/);
    expect(main).toMatch(/desktop: \{[\s\S]*?secrets: safeStorageEncryptor\(safeStorage\)/);
    const token = fs.readFileSync(path.join(repo, 'src/main/downloads/token.ts'), 'utf8');
    expect(token).not.toMatch(/from 'electron'/);
  });
});
