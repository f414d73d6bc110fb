/**
 * The Hugging Face access token the studio sends to the Hub. HF_TOKEN from the environment wins
 * (as huggingface_hub reads it) and cannot be changed from the studio. Otherwise a token set in
 * Settings is encrypted by the desktop shell's encryptor (Electron's safeStorage) and only its
 * ciphertext is written, to the data folder's hub-token.bin (never settings.json). Without an
 * encryptor that protects it (headless, or a Linux desktop without a secret store) the token
 * is kept in memory until the app closes. The token itself never leaves this class except to
 * the Hub client; the studio only learns where it comes from.
 */
import fs from 'node:fs';
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

  /** The token the Hub gets: HF_TOKEN, else the one set in the studio, else null. */
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
    return { source: 'none', editable: true, note: this.#loadProblem ?? memoryNote };
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
