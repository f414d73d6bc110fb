/**
 * POST /api/upload/checkpoint: a browser's checkpoint (or replacement VAE), streamed to disk by
 * CheckpointUploads. This route has its own size limit (maxCheckpointUploadBytes, tens of GB)
 * instead of the JSON message limit, needs the Content-Length up front (to check the disk
 * before accepting), and has an idle limit instead of the server's whole-request one, since a
 * multi-GB upload over a network may take longer than any fixed time.
 */
import type http from 'node:http';
import { type ErrorCode, StudioError } from '../../shared';
import { type UploadKind, maxCheckpointUploadBytes } from '../models/checkpoint-uploads';
import type { ServerContext } from './http';
import { refuse, sendJson } from './respond';

/** By default, an upload that sends nothing for this long is dropped (its partial file removed). */
export const uploadIdleTimeoutMs = 60_000;

const statusOf: Partial<Record<ErrorCode, number>> = {
  'invalid-argument': 400,
  'disk-full': 507,
  cancelled: 400,
};

export async function serveCheckpointUpload(
  ctx: ServerContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
): Promise<void> {
  // A refusal sent before the body was read closes the connection: the rest of a
  // multi-gigabyte body is not read just to keep the socket alive.
  const early = { Connection: 'close' };
  if (req.method !== 'POST')
    return refuse(res, 405, 'invalid-argument', 'Use POST to upload a checkpoint.', early);
  if (!ctx.guard.hasToken(req))
    return refuse(res, 401, 'unauthorized', 'A valid token is required.', early);
  const kindParam = url.searchParams.get('kind') ?? 'checkpoint';
  if (kindParam !== 'checkpoint' && kindParam !== 'vae')
    return refuse(res, 400, 'invalid-argument', 'kind must be checkpoint or vae.', early);
  const kind: UploadKind = kindParam;
  const name = url.searchParams.get('name') ?? '';

  try {
    if (url.searchParams.get('check') === '1') {
      // The page asks first, so that a refusal reaches it as a sentence rather than as a
      // connection closed under a body it is still sending.
      const size = Number(url.searchParams.get('size'));
      await ctx.uploads.check({ name, kind, bytes: size });
      res.writeHead(204, { 'Cache-Control': 'no-store' });
      res.end();
      return;
    }
    const declared = req.headers['content-length'];
    if (declared === undefined || !/^\d+$/.test(declared)) {
      return refuse(
        res,
        411,
        'invalid-argument',
        'Send the checkpoint with its size (a Content-Length header), so the disk can be checked first.',
        early,
      );
    }
    const bytes = Number(declared);
    try {
      await ctx.uploads.check({ name, kind, bytes });
    } catch (e) {
      if (e instanceof StudioError) {
        const status = bytes > maxCheckpointUploadBytes ? 413 : (statusOf[e.code] ?? 400);
        return refuse(res, status, e.code, e.message, early);
      }
      throw e;
    }
    req.setTimeout(ctx.uploadIdleMs ?? uploadIdleTimeoutMs, () => req.destroy());
    const stored = await ctx.uploads.receive(req, { name, kind, bytes });
    ctx.log(
      `received ${stored.path} (${stored.bytes} bytes${stored.reused ? ', already here' : ''})`,
    );
    sendJson(res, 200, { ok: true, value: stored });
  } catch (e) {
    if (!(e instanceof StudioError)) throw e;
    // A cancelled or cut upload has nobody left to answer; the partial file is already gone.
    // (A request read to its end is destroyed too, so the socket says whether anyone is there.)
    if (res.destroyed || req.socket.destroyed) return;
    return refuse(res, statusOf[e.code] ?? 500, e.code, e.message, early);
  }
}
