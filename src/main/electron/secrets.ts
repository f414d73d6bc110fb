import type { SafeStorage } from 'electron';
import type { SecretEncryptor } from '../downloads/token';

/**
 * Electron's safeStorage as the Hub token's encryptor. On Linux without a secret store
 * (kwallet, gnome-libsecret) safeStorage "encrypts" with a hard-coded password, which
 * getSelectedStorageBackend() reports as 'basic_text' (Electron's safeStorage docs): that
 * protects nothing, so it counts as unavailable and the token stays in memory.
 */
export function safeStorageEncryptor(
  storage: Pick<
    SafeStorage,
    'isEncryptionAvailable' | 'encryptString' | 'decryptString' | 'getSelectedStorageBackend'
  >,
  platform: NodeJS.Platform = process.platform,
): SecretEncryptor {
  return {
    available: () =>
      storage.isEncryptionAvailable() &&
      !(platform === 'linux' && storage.getSelectedStorageBackend() === 'basic_text'),
    encrypt: (plain) => storage.encryptString(plain),
    decrypt: (cipher) => storage.decryptString(cipher),
  };
}
