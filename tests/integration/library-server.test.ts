// The library through the headless transport: contract calls over loopback HTTP, and /media
// with the session cookie (what <img> sends) or the token, refused without either.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { type RunningServer, startServer } from '../../src/main/server/server';
import type { GalleryPage } from '../../src/shared';
import { fixtureModel } from '../fixtures/models';
import { callServer, pngOf, saveOne, tempDir } from './library-helpers';

let dataDir: string;
let host: StudioHost;
let server: RunningServer;

beforeAll(async () => {
  dataDir = tempDir('ls-libserver-');
  const resourcesDir = path.join(dataDir, 'resources');
  fs.cpSync(await fixtureModel('sd15', {}), path.join(resourcesDir, 'models', 'tiny'), {
    recursive: true,
  });
  host = new StudioHost({
    shell: 'headless',
    dataDir: path.join(dataDir, 'data'),
    version: '0.0.0',
    resourcesDir,
    log: () => {},
  });
  await host.library.ready;
  server = await startServer({ host, port: 0 });
});
afterAll(async () => {
  await server.close();
  await host.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const call = <T = unknown>(method: string, input?: unknown) => callServer<T>(server, method, input);

describe('the library over the headless server', () => {
  it('lists the built-in model', async () => {
    const models =
      await call<Array<{ name: string; builtIn: boolean; family: string }>>('listModels');
    expect(models).toEqual([
      expect.objectContaining({ name: 'tiny', builtIn: true, family: 'sd1' }),
    ]);
  });

  it('uploads an image and refuses a broken one', async () => {
    const png = Buffer.from(await pngOf(null, 1, 80));
    const up = await call<{ imageId: string; width: number }>('uploadImage', {
      data: png.toString('base64'),
      purpose: 'init',
    });
    expect(up.width).toBe(80);
    await expect(
      call('uploadImage', { data: png.subarray(0, 40).toString('base64'), purpose: 'mask' }),
    ).rejects.toMatchObject({ code: 'invalid-argument' });
  });

  it('searches, deletes and undoes; serves /media only with the cookie or the token', async () => {
    const saved = await saveOne(host.library, { prompt: 'served over http' }, { images: 2 });
    const page = await call<GalleryPage>('searchGallery', { text: 'served' });
    expect(page.total).toBe(2);
    const item = page.items[0];

    // Without the cookie or token: 401.
    expect((await fetch(`${server.url}${item.url}`)).status).toBe(401);
    // POST /api/session needs the token; then the cookie opens /media.
    expect((await fetch(`${server.url}/api/session`, { method: 'POST' })).status).toBe(401);
    const session = await fetch(`${server.url}/api/session`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.token}` },
    });
    expect(session.status).toBe(204);
    const setCookie = session.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\/media/);
    expect(setCookie).not.toContain(server.token);
    const cookie = setCookie.split(';')[0];
    const image = await fetch(`${server.url}${item.url}`, { headers: { Cookie: cookie } });
    expect(image.status).toBe(200);
    expect(image.headers.get('content-type')).toBe('image/png');
    const body = Buffer.from(await image.arrayBuffer());
    expect(body.equals(fs.readFileSync(host.library.resolveImage(item.imageId).file))).toBe(true);
    const thumb = await fetch(`${server.url}${item.thumbUrl}`, { headers: { Cookie: cookie } });
    expect(thumb.headers.get('content-type')).toBe('image/webp');
    const withToken = await fetch(`${server.url}${item.url}`, {
      headers: { Authorization: `Bearer ${server.token}` },
    });
    expect(withToken.status).toBe(200);
    expect(
      (await fetch(`${server.url}${item.url}`, { headers: { Cookie: 'studio_media=wrong' } }))
        .status,
    ).toBe(401);
    expect(
      (await fetch(`${server.url}/media/images/nope`, { headers: { Cookie: cookie } })).status,
    ).toBe(404);
    expect(
      (await fetch(`${server.url}/media/../library.sqlite`, { headers: { Cookie: cookie } }))
        .status,
    ).toBe(404);
    // A foreign origin is refused before anything else.
    expect(
      (
        await fetch(`${server.url}${item.url}`, {
          headers: { Cookie: cookie, Origin: 'http://evil.example' },
        })
      ).status,
    ).toBe(403);

    const deleted = await call<{ deleted: number; undoToken: string; trashedTo: string }>(
      'deleteImages',
      { imageIds: saved.imageIds },
    );
    expect(deleted).toMatchObject({ deleted: 2, trashedTo: 'app-trash' });
    expect((await call<GalleryPage>('searchGallery', { text: 'served' })).total).toBe(0);
    expect((await fetch(`${server.url}${item.url}`, { headers: { Cookie: cookie } })).status).toBe(
      404,
    );
    expect(await call('undoDelete', { token: deleted.undoToken })).toEqual({ restored: 2 });
    expect((await call<GalleryPage>('searchGallery', { text: 'served' })).total).toBe(2);
    expect((await fetch(`${server.url}${item.url}`, { headers: { Cookie: cookie } })).status).toBe(
      200,
    );
    await expect(call('revealImage', { imageId: item.imageId })).rejects.toMatchObject({
      code: 'unavailable',
    });
    expect(await call('getLibraryStatus')).toMatchObject({ readOnly: false, images: 2 });
  });
});
