import http from 'node:http';
import type net from 'node:net';
import { ImageUpload, checkpointUploadPath, httpCallPrefix } from '../../shared';
import type { CheckpointUploads } from '../models/checkpoint-uploads';
import type { StudioHost } from '../api';
import { dispatch } from '../dispatch';
import { securityHeaders } from '../security';
import { readRegularFileInside, readStaticFile } from '../static-files';
import { serveCheckpointUpload } from './checkpoint-upload';
import { type RequestGuard, sessionPath } from './guards';
import { refuse, sendJson } from './respond';

/**
 * Largest request body or WebSocket message accepted. The contract's largest input is an image
 * upload (its base64 `data` string); the rest of a call (the envelope, the purpose, a name of
 * 255 characters even with every one escaped, or 10,000 ids) fits in the allowance.
 */
export const maxMessageBytes = (ImageUpload.shape.data.maxLength ?? 0) + 1024 * 1024;

/** How long a request other than a checkpoint upload may take to arrive whole (Node's default). */
export const requestTimeoutMs = 300_000;

/** What the HTTP and WebSocket handlers share. */
export interface ServerContext {
  host: StudioHost;
  guard: RequestGuard;
  rendererDir?: string;
  /** Where browsers' checkpoint uploads go (checkpoint-upload.ts). */
  uploads: CheckpointUploads;
  /** How long an upload may send nothing before it is dropped (default uploadIdleTimeoutMs). */
  uploadIdleMs?: number;
  log: (line: string) => void;
}

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function notFound(res: http.ServerResponse): void {
  res.writeHead(404, { ...securityHeaders, 'Content-Type': 'text/plain; charset=utf-8' });
  res.end('Not found');
}

export function logUnexpected(log: (line: string) => void, where: string, err: unknown): void {
  log(`error in ${where}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
}

/**
 * The request listener: Host/Origin checks, then one route per path family. Whatever a request
 * does (a URL that does not parse, a body cut off half way, a socket reset mid-response), it
 * ends that request only: errors become a response when none has started, else the socket is
 * dropped, and never reach the process.
 */
export function createRequestHandler(ctx: ServerContext): http.RequestListener {
  return (req, res) => {
    // An aborted upload errors its request stream; a reset socket errors the response.
    req.on('error', () => {});
    res.on('error', () => {});
    // The whole-request limit Node's requestTimeout gave (the server turns that off, since it
    // would cut a long checkpoint upload, which has its own idle limit instead).
    if (!req.url?.startsWith(checkpointUploadPath)) {
      const timer = setTimeout(() => {
        if (!req.complete) req.destroy();
      }, requestTimeoutMs);
      res.once('close', () => clearTimeout(timer));
    }
    route(ctx, req, res).catch((err: unknown) => {
      if (err instanceof BadRequest) {
        if (!res.headersSent && !res.destroyed)
          return refuse(res, err.status, 'invalid-argument', err.message);
      } else {
        logUnexpected(ctx.log, `${req.method} request`, err);
        if (!res.headersSent && !res.destroyed)
          return refuse(res, 500, 'internal', 'The server could not answer that request.');
      }
      res.destroy();
    });
  };
}

async function route(
  ctx: ServerContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const problem = ctx.guard.check(req);
  if (problem) return refuse(res, problem.status, 'forbidden', problem.message);
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://localhost');
  } catch {
    throw new BadRequest(400, 'The request URL could not be read.');
  }
  if (url.pathname === sessionPath) return startSession(ctx, req, res);
  if (url.pathname.startsWith('/media/')) return serveMedia(ctx, req, res, url.pathname);
  if (url.pathname === checkpointUploadPath) return serveCheckpointUpload(ctx, req, res, url);
  if (url.pathname.startsWith(httpCallPrefix))
    return serveCall(ctx, req, res, url.pathname.slice(httpCallPrefix.length));
  return serveStatic(ctx, req, res, url.pathname);
}

/**
 * <img src="/media/..."> cannot send the token, so POST /api/session (with the token) sets an
 * HttpOnly, SameSite=Strict cookie for /media holding a separate per-launch secret.
 */
function startSession(ctx: ServerContext, req: http.IncomingMessage, res: http.ServerResponse) {
  if (req.method !== 'POST')
    return refuse(res, 405, 'invalid-argument', 'Use POST to start a session.');
  if (!ctx.guard.hasToken(req))
    return refuse(res, 401, 'unauthorized', 'A valid token is required.');
  res.writeHead(204, {
    ...securityHeaders,
    'Cache-Control': 'no-store',
    'Set-Cookie': ctx.guard.mediaCookie,
  });
  res.end();
}

/** The library's files, read only when they are regular files inside the data folder. */
async function serveMedia(
  ctx: ServerContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  pathname: string,
): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return refuse(res, 405, 'invalid-argument', 'Method not allowed.');
  if (!ctx.guard.hasToken(req) && !ctx.guard.hasMediaCookie(req))
    return refuse(res, 401, 'unauthorized', 'Open a session (POST /api/session) first.');
  const media = ctx.host.library.readMedia(pathname);
  const body = media ? await readRegularFileInside(ctx.host.options.dataDir, media.file) : null;
  if (!media || !body) return notFound(res);
  sendFile(req, res, body, media.contentType, 'private, max-age=86400');
}

/** A whole file's bytes (none for HEAD), with our security headers. */
function sendFile(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  body: Uint8Array,
  contentType: string,
  cacheControl: string,
): void {
  res.writeHead(200, {
    ...securityHeaders,
    'Content-Type': contentType,
    'Content-Length': body.length,
    'Cache-Control': cacheControl,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

async function serveCall(
  ctx: ServerContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  method: string,
): Promise<void> {
  if (req.method !== 'POST') return refuse(res, 405, 'invalid-argument', 'Use POST for API calls.');
  if (!ctx.guard.hasToken(req))
    return refuse(res, 401, 'unauthorized', 'A valid token is required.');
  const body = await readJsonBody(req);
  const input =
    body && typeof body === 'object' && 'input' in body
      ? (body as { input: unknown }).input
      : undefined;
  const envelope = await dispatch(ctx.host.service, method, input, {
    onUnexpectedError: (name, err) => logUnexpected(ctx.log, name, err),
  });
  const status = envelope.ok
    ? 200
    : envelope.error.code === 'unknown-method'
      ? 404
      : envelope.error.code === 'invalid-argument'
        ? 400
        : 500;
  sendJson(res, envelope.ok || status !== 500 ? status : 200, envelope);
}

async function serveStatic(
  ctx: ServerContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  pathname: string,
): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return refuse(res, 405, 'invalid-argument', 'Method not allowed.');
  const file = ctx.rendererDir ? await readStaticFile(ctx.rendererDir, pathname) : null;
  if (!file) return notFound(res);
  const cache = pathname.startsWith('/assets/')
    ? 'public, max-age=31536000, immutable'
    : 'no-cache';
  sendFile(req, res, file.body, file.contentType, cache);
}

/** The JSON body of a call, refused early when it declares or grows past maxMessageBytes. */
async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const tooLarge = `The request body is too large (the limit is ${Math.floor(maxMessageBytes / 1024 / 1024)} MB).`;
  if (Number(req.headers['content-length'] ?? 0) > maxMessageBytes)
    throw new BadRequest(413, tooLarge);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxMessageBytes) throw new BadRequest(413, tooLarge);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BadRequest(400, 'The request body must be JSON.');
  }
}

/**
 * What the HTTP parser could not read (garbage, headers past the limit, a timeout): answer
 * with the matching status when the socket can still take it, then drop that socket only.
 * Without a handler Node answers 400 itself; this one also names 431 and 408 and never writes
 * to a socket that is gone.
 */
export function onClientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status =
    err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`);
}
