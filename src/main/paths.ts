import os from 'node:os';
import path from 'node:path';

export const appName = 'Latent Studio';

/**
 * The per-user data folder, the same one Electron's `app.getPath('userData')` gives, so the
 * desktop app and the headless server share settings, models and history.
 */
export function defaultDataDir(
  platform: NodeJS.Platform = process.platform,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const home = os.homedir();
  if (platform === 'win32')
    return path.join(env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), appName);
  if (platform === 'darwin') return path.join(home, 'Library', 'Application Support', appName);
  return path.join(env.XDG_CONFIG_HOME ?? path.join(home, '.config'), appName);
}
