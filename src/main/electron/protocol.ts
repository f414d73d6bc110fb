import { protocol } from 'electron';
import { securityHeaders } from '../security';
import { readRegularFileInside, readStaticFile } from '../static-files';

import { appScheme } from './navigation';

export { appOrigin, appScheme } from './navigation';

/** Must run before `app.whenReady()`. */
export function registerAppScheme(): void {
  protocol.registerSchemesAsPrivileged([
    { scheme: appScheme, privileges: { standard: true, secure: true, supportFetchAPI: true } },
  ]);
}

/** The file behind a /media/... path (the library's images, thumbnails and uploads). */
export type MediaReader = (urlPath: string) => { file: string; contentType: string } | null;

/**
 * Serves the renderer and, under /media/, the library's files: only regular files inside the
 * data folder `mediaRoot`, never through a symbolic link (see readRegularFileInside).
 */
export function handleAppProtocol(
  rendererDir: string,
  readMedia?: MediaReader,
  mediaRoot?: string,
): void {
  protocol.handle(appScheme, async (request) => {
    const url = new URL(request.url);
    if (url.host !== 'app' || request.method !== 'GET')
      return new Response('Not found', { status: 404 });
    if (url.pathname.startsWith('/media/')) {
      const media = readMedia?.(url.pathname) ?? null;
      const body = media && mediaRoot ? await readRegularFileInside(mediaRoot, media.file) : null;
      if (!media || !body)
        return new Response('Not found', { status: 404, headers: securityHeaders });
      return new Response(new Uint8Array(body), {
        status: 200,
        headers: {
          ...securityHeaders,
          'Content-Type': media.contentType,
          'Cache-Control': 'private, max-age=86400',
        },
      });
    }
    const file = await readStaticFile(rendererDir, url.pathname);
    if (!file) return new Response('Not found', { status: 404, headers: securityHeaders });
    return new Response(new Uint8Array(file.body), {
      status: 200,
      headers: { ...securityHeaders, 'Content-Type': file.contentType },
    });
  });
}
