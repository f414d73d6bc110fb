// Uploads (init images, masks, imported PNGs) can be shown again: uploadImage returns a /media
// URL, getImage finds any image a generation names by id, and the headless server serves both
// after a restart. Ids only: anything shaped like a path is refused by the contract or 404s.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { type RunningServer, startServer } from '../../src/main/server/server';
import type { ImageRef, UploadedImage } from '../../src/shared';
import { callServer, pngOf, saveOne, tempDir } from './library-helpers';

let root: string;
let host: StudioHost;
let server: RunningServer;
let cookie: string;

async function start(): Promise<void> {
  host = new StudioHost({
    shell: 'headless',
    dataDir: path.join(root, 'data'),
    version: '0.0.0',
    resourcesDir: path.join(root, 'no-resources'),
    log: () => {},
  });
  await host.library.ready;
  server = await startServer({ host, port: 0 });
  const session = await fetch(`${server.url}/api/session`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${server.token}` },
  });
  cookie = session.headers.get('set-cookie')!.split(';')[0];
}

async function stop(): Promise<void> {
  await server.close();
  await host.close();
}

beforeAll(async () => {
  root = tempDir('ls-uploads-');
  await start();
});
afterAll(async () => {
  await stop();
  fs.rmSync(root, { recursive: true, force: true });
});

const call = <T = unknown>(method: string, input?: unknown) => callServer<T>(server, method, input);

const media = (url: string, headers: Record<string, string> = { Cookie: cookie }) =>
  fetch(`${server.url}${url}`, { headers });

describe('uploads have URLs', () => {
  it('serves an upload at the URL uploadImage returns, byte for byte, with its type', async () => {
    const png = Buffer.from(await pngOf(null, 3, 72));
    const up = await call<UploadedImage>('uploadImage', {
      data: png.toString('base64'),
      purpose: 'init',
      name: 'photo.png',
    });
    expect(up).toMatchObject({ width: 72, height: 72, url: `/media/uploads/${up.imageId}` });
    const res = await media(up.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await res.arrayBuffer()).equals(png)).toBe(true);
    // The URL is behind the same guard as library images.
    expect((await media(up.url, {})).status).toBe(401);

    const jpeg = await sharp({
      create: { width: 40, height: 24, channels: 3, background: { r: 200, g: 10, b: 10 } },
    })
      .jpeg()
      .toBuffer();
    const upJpeg = await call<UploadedImage>('uploadImage', {
      data: jpeg.toString('base64'),
      purpose: 'init',
    });
    const jpegRes = await media(upJpeg.url);
    expect(jpegRes.headers.get('content-type')).toBe('image/jpeg');
    const decoded = await sharp(Buffer.from(await jpegRes.arrayBuffer())).metadata();
    expect([decoded.width, decoded.height]).toEqual([40, 24]);
  });

  it('getImage describes uploads and library images, and refuses unknown ids and paths', async () => {
    const mask = Buffer.from(await pngOf(null, 9, 64));
    const up = await call<UploadedImage>('uploadImage', {
      data: mask.toString('base64'),
      purpose: 'mask',
    });
    expect(await call<ImageRef>('getImage', { id: up.imageId })).toEqual({
      imageId: up.imageId,
      kind: 'upload',
      url: up.url,
      width: 64,
      height: 64,
      generationId: null,
      contentFilter: 'unchecked',
    });

    const saved = await saveOne(host.library, { prompt: 'a library image' }, { size: 96 });
    const imageId = saved.imageIds[0];
    const ref = await call<ImageRef>('getImage', { id: imageId });
    expect(ref).toEqual({
      imageId,
      kind: 'image',
      url: `/media/images/${imageId}`,
      width: 96,
      height: 96,
      generationId: saved.generationId,
      contentFilter: 'unchecked',
    });
    expect((await media(ref.url)).status).toBe(200);

    await expect(call('getImage', { id: 'no-such-image' })).rejects.toMatchObject({
      code: 'not-found',
    });
    for (const id of ['../library.sqlite', 'uploads/x.png', '', 'a'.repeat(65)])
      await expect(call('getImage', { id })).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(call('getImage', { id: up.imageId, path: '/etc' })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    expect((await media(`/media/uploads/..%2Flibrary.sqlite`)).status).toBe(404);
    expect((await media(`/media/uploads/${up.imageId}/x`)).status).toBe(404);

    // A deleted library image is gone for getImage too.
    await call('deleteImages', { imageIds: [imageId] });
    await expect(call('getImage', { id: imageId })).rejects.toMatchObject({ code: 'not-found' });
  });

  it('a generation that used an upload can show it again after the host restarts', async () => {
    const init = Buffer.from(await pngOf(null, 21, 80));
    const up = await call<UploadedImage>('uploadImage', {
      data: init.toString('base64'),
      purpose: 'init',
    });
    const saved = await saveOne(host.library, {
      mode: 'img2img',
      prompt: 'from an upload',
      initImage: up.imageId,
    });

    await stop();
    await start();

    const detail = await call<{ settings: { initImage: string } }>('getGeneration', {
      id: saved.generationId,
    });
    const ref = await call<ImageRef>('getImage', { id: detail.settings.initImage });
    expect(ref).toMatchObject({ kind: 'upload', width: 80, height: 80 });
    const res = await media(ref.url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(init)).toBe(true);
  });
});
