/**
 * The Hugging Face access token the studio sends to the Hub. HF_TOKEN from the environment wins
 * (as huggingface_hub reads it) and cannot be changed from the studio. Otherwise a token set in
 * Settings is encrypted by the desktop shell's encryptor (Electron's safeStorage) and only its
 * ciphertext is written, to the data folder's hub-token.bin (never settings.json). Without an
 * encryptor that protects it (headless, or a Linux desktop without a secret store) the token
 * is kept in memory until the app closes. Last comes huggingface_hub's own token file (written
 * by `hf auth login`), read and never written: after Settings, because a token typed into the
 * studio is the more deliberate choice. The token itself never leaves this module except to
 * the Hub client; the studio only learns where it comes from.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HubTokenStatus } from '../../shared';
import { DownloadError } from './errors';

/**
 * Encrypts strings for this user on this machine (Electron's safeStorage has this shape).
 * `available()` is false when the ciphertext would not protect the token.
 */
export interface SecretEncryptor {
  available(): boolean;
  encrypt(plain: string): Buffer;
  decrypt(cipher: Buffer): string;
}

export const tokenFileName = 'hub-token.bin';

export class HubTokenStore {
  readonly file: string;
  #memory: string | null = null;
  #stored: string | null = null;
  #loadProblem: string | null = null;

  constructor(
    dataDir: string,
    private readonly encryptor: SecretEncryptor | null,
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.file = path.join(dataDir, tokenFileName);
    this.#load();
  }

  /**
   * HF_TOKEN, else the token set in the studio, else null; huggingface_hub's token file comes
   * after these in `hubConfigFrom`.
   */
  token(): string | null {
    return this.#environment() ?? this.#stored ?? this.#memory;
  }

  status(): HubTokenStatus {
    if (this.#environment())
      return {
        source: 'environment',
        editable: false,
        note: 'The token comes from the HF_TOKEN environment variable; change it there.',
      };
    const canStore = this.#canEncrypt();
    const memoryNote = canStore
      ? null
      : this.encryptor
        ? 'This system has no secret store to encrypt the token with, so it is kept only until the app closes.'
        : 'The token is kept only until the server stops; set HF_TOKEN in its environment to keep one.';
    if (this.#stored) return { source: 'stored', editable: true, note: null };
    if (this.#memory) return { source: 'memory', editable: true, note: memoryNote };
    const file = readHubTokenFile(this.env);
    if (file)
      return {
        source: 'file',
        editable: true,
        note: `The token comes from huggingface_hub's token file ${file.file} (hf auth login); a token saved here takes its place.`,
      };
    const ignored = implicitTokenDisabled(this.env)
      ? "huggingface_hub's token file is not read because HF_HUB_DISABLE_IMPLICIT_TOKEN is set."
      : null;
    return {
      source: 'none',
      editable: true,
      note: [this.#loadProblem ?? memoryNote, ignored].filter(Boolean).join(' ') || null,
    };
  }

  /** Sets the token (encrypted to disk when it can be, else in memory). */
  set(token: string): HubTokenStatus {
    this.#assertEditable();
    const value = token.trim();
    if (!/^[\x21-\x7e]{1,1000}$/.test(value))
      throw new DownloadError(
        'bad-input',
        'A Hugging Face token is one word of letters and digits (it starts with hf_).',
      );
    if (this.#canEncrypt()) {
      const cipher = this.encryptor!.encrypt(value);
      writeAtomically(this.file, cipher);
      this.#stored = value;
      this.#memory = null;
    } else {
      this.#memory = value;
      this.#stored = null;
    }
    this.#loadProblem = null;
    this.log(`hub token set (${this.#stored ? 'encrypted in the data folder' : 'in memory'})`);
    return this.status();
  }

  clear(): HubTokenStatus {
    this.#assertEditable();
    this.#memory = null;
    this.#stored = null;
    this.#loadProblem = null;
    fs.rmSync(this.file, { force: true });
    this.log('hub token cleared');
    return this.status();
  }

  #environment(): string | null {
    return this.env.HF_TOKEN?.trim() || null;
  }

  #canEncrypt(): boolean {
    try {
      return this.encryptor?.available() ?? false;
    } catch {
      return false;
    }
  }

  #assertEditable(): void {
    if (this.#environment())
      throw new DownloadError(
        'bad-input',
        'The token comes from the HF_TOKEN environment variable; change or unset it there.',
      );
  }

  #load(): void {
    let cipher: Buffer;
    try {
      cipher = fs.readFileSync(this.file);
    } catch {
      return;
    }
    if (!this.#canEncrypt()) {
      this.#loadProblem =
        'A saved token cannot be read because this system has no secret store now; set it again.';
      return;
    }
    try {
      this.#stored = this.encryptor!.decrypt(cipher);
    } catch {
      // Another user's or machine's ciphertext: useless here, and it must not be sent anywhere.
      this.#loadProblem = 'The saved token could not be decrypted on this machine; set it again.';
      this.log('hub token: the saved token could not be decrypted');
    }
  }
}

function writeAtomically(file: string, data: Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Values huggingface_hub reads as true in a flag variable (constants.ENV_VARS_TRUE_VALUES). */
const trueValues = new Set(['1', 'ON', 'YES', 'TRUE']);

/**
 * HF_HUB_DISABLE_IMPLICIT_TOKEN: huggingface_hub then sends no token a call did not ask for
 * (utils/_headers.py get_token_to_send). Here it keeps the token file unread; HF_TOKEN and a
 * token typed into Settings are this app's own explicit configuration and are still sent.
 */
function implicitTokenDisabled(env: NodeJS.ProcessEnv): boolean {
  return trueValues.has((env.HF_HUB_DISABLE_IMPLICIT_TOKEN ?? '').toUpperCase());
}

/**
 * Where huggingface_hub keeps its token (constants.py): HF_TOKEN_PATH, else HF_HOME/token, else
 * XDG_CACHE_HOME/huggingface/token, else ~/.cache/huggingface/token; each with `~` and
 * environment variables expanded, as os.path.expanduser and expandvars do. An empty variable
 * counts as unset (Python would take it as a path relative to the working folder).
 */
export function hubTokenFilePath(
  env: NodeJS.ProcessEnv = process.env,
  home: string = os.homedir(),
  platform: NodeJS.Platform = process.platform,
): string {
  const expand = (p: string) => expandVars(expandUser(p, home), env, platform);
  if (env.HF_TOKEN_PATH) return expand(env.HF_TOKEN_PATH);
  const hfHome =
    env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(home, '.cache'), 'huggingface');
  return path.join(expand(hfHome), 'token');
}

/**
 * The token in huggingface_hub's token file, never written here: null when the file is absent,
 * unreadable, empty or not one word of printable characters, or when
 * HF_HUB_DISABLE_IMPLICIT_TOKEN is set. Line breaks and surrounding spaces are dropped, as
 * huggingface_hub's _clean_token does. Read at each use, so a later `hf auth login` counts.
 */
export function readHubTokenFile(
  env: NodeJS.ProcessEnv = process.env,
  home: string = os.homedir(),
): { file: string; token: string } | null {
  if (implicitTokenDisabled(env)) return null;
  const file = hubTokenFilePath(env, home);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const token = text.replace(/[\r\n]/g, '').trim();
  return /^[\x21-\x7e]{1,1000}$/.test(token) ? { file, token } : null;
}

function expandUser(p: string, home: string): string {
  return p === '~' || p.startsWith('~/') || p.startsWith('~\\') ? home + p.slice(1) : p;
}

/** $NAME and ${NAME} (and %NAME% on Windows); unknown names stay as written, as in Python. */
function expandVars(p: string, env: NodeJS.ProcessEnv, platform: NodeJS.Platform): string {
  const pattern =
    platform === 'win32' ? /\$(\w+)|\$\{([^}]+)\}|%([^%]+)%/g : /\$(\w+)|\$\{([^}]+)\}/g;
  return p.replace(
    pattern,
    (all, a?: string, b?: string, c?: string) => env[a ?? b ?? c ?? ''] ?? all,
  );
}
