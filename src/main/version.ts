declare const __APP_VERSION__: string | undefined;

/** Injected by the build from package.json; source runs (tests) report a dev version. */
export const appVersion: string =
  typeof __APP_VERSION__ === 'string' ? __APP_VERSION__ : '0.0.0-dev';
