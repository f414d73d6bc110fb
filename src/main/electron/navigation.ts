/**
 * Where the studio's windows may go, as data so it is tested without Electron. App content is
 * served from studio://app/, never file:// (Electron security checklist #18); main.ts applies
 * this to every `will-navigate` and `will-redirect`.
 */
export const appScheme = 'studio';
export const appOrigin = `${appScheme}://app`;

/**
 * Whether a window may navigate to `url`: only to our own pages. Everything else is refused,
 * file:// above all, which is where Chromium goes when a file is dropped on a page that does not
 * take the drop (checklist #13: limit navigation).
 */
export function mayNavigate(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return (
    parsed.protocol === `${appScheme}:` && parsed.host === 'app' && url.startsWith(`${appOrigin}/`)
  );
}
