import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { type Envelope, WireCall, httpCallPrefix, wsPath } from '../../shared';
import type { StudioHost } from '../api';
import { dispatch, describeIssues } from '../dispatch';
import { securityHeaders } from '../security';
import { readStaticFile } from '../static-files';

/** Largest request body or WebSocket message accepted (images travel as base64 later). */
export const maxMessageBytes = 64 * 1024 * 1024;
/** The WebSocket subprotocol; the token travels as a second one, `token.<value>`. */
export const wsProtocol = 'studio.v1';
const tokenProtocolPrefix = 'token.';
/** POST here with the token to get the cookie that lets <img> load /media/... */
export const sessionPath = '/api/session';
export const mediaCookieName = 'studio_media';

export interface ServerOptions {
  host: StudioHost;
  /** 0 picks a free port. */
  port?: number;
  /** Defaults to 127.0.0.1. Anything that is not loopback must be asked for explicitly. */
  hostname?: string;
  /** The built renderer; when absent only the API is served. */
  rendererDir?: string;
  /** Fixed token for tests; a fresh random one per launch otherwise. */
  token?: string;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  /** The URL a person opens: it carries the token in the fragment, which is never sent. */
  studioUrl: string;
  port: number;
  token: string;
  close(): Promise<void>;
}

export function isLoopbackHost(hostname: string): boolean {
  const bare = hostname.replace(/^\[|\]$/g, '');
  if (bare === 'localhost') return true;
  if (net.isIPv4(bare)) return bare.startsWith('127.');
  if (net.isIPv6(bare)) return bare === '::1';
  return false;
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && crypto.timingSafeEqual(ab, bb);
}

/**
 * Serves the same StudioApi as the desktop app over loopback HTTP + WebSocket, for running the
 * studio in any browser (against a GPU box, say) and for the end-to-end tests. Every API request
 * needs the per-launch token; requests from foreign origins or for foreign Host names (DNS
 * rebinding) are refused before anything else.
 */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const hostname = options.hostname ?? '127.0.0.1';
  const token = options.token ?? crypto.randomBytes(32).toString('base64url');
  const log = options.log ?? (() => {});
  const { host } = options;
  let port = options.port ?? 0;

  /**
   * Host names the server answers to. Loopback names always; the bound address when it is not
   * loopback; on a wildcard bind any IP literal (DNS rebinding needs a name, not an address).
   */
  const isAllowedHost = (hostHeader: string): boolean => {
    const match = /^(\[[0-9a-f:.]+\]|[^:]+):(\d+)$/i.exec(hostHeader);
    if (!match || Number(match[2]) !== port) return false;
    const name = match[1].replace(/^\[|\]$/g, '');
    if (isLoopbackHost(name)) return true;
    if (name === hostname) return true;
    return (hostname === '0.0.0.0' || hostname === '::') && net.isIP(name) !== 0;
  };

  /** Host and Origin checks shared by HTTP and the WebSocket upgrade. */
  const checkRequest = (req: http.IncomingMessage): { status: number; message: string } | null => {
    const hostHeader = (req.headers.host ?? '').toLowerCase();
    if (!isAllowedHost(hostHeader)) return { status: 421, message: 'Unknown Host header.' };
    const origin = req.headers.origin;
    if (origin !== undefined && origin.toLowerCase() !== `http://${hostHeader}`)
      return { status: 403, message: 'Requests from other origins are not allowed.' };
    return null;
  };

  const hasToken = (req: http.IncomingMessage): boolean => {
    const auth = req.headers.authorization ?? '';
    return auth.startsWith('Bearer ') && safeEqual(auth.slice(7), token);
  };

  /**
   * <img src="/media/..."> cannot send the token, so POST /api/session (with the token) sets an
   * HttpOnly, SameSite=Strict cookie for /media holding a separate per-launch secret.
   */
  const mediaSecret = crypto.randomBytes(32).toString('base64url');
  const hasMediaCookie = (req: http.IncomingMessage): boolean =>
    (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim())
      .some(
        (c) =>
          c.startsWith(`${mediaCookieName}=`) &&
          safeEqual(c.slice(mediaCookieName.length + 1), mediaSecret),
      );

  const sendJson = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, {
      ...securityHeaders,
      'Content-Type': 'application/json; charset=utf-8',
      'Cache-Control': 'no-store',
    });
    res.end(JSON.stringify(body));
  };
  const refuse = (res: http.ServerResponse, status: number, code: string, message: string) =>
    sendJson(res, status, { ok: false, error: { code, message } });

  const onUnexpectedError = (method: string, err: unknown) =>
    log(`error in ${method}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);

  const server = http.createServer(async (req, res) => {
    const problem = checkRequest(req);
    if (problem) return refuse(res, problem.status, 'forbidden', problem.message);
    const url = new URL(req.url ?? '/', 'http://localhost');

    if (url.pathname === sessionPath) {
      if (req.method !== 'POST')
        return refuse(res, 405, 'invalid-argument', 'Use POST to start a session.');
      if (!hasToken(req)) return refuse(res, 401, 'unauthorized', 'A valid token is required.');
      res.writeHead(204, {
        ...securityHeaders,
        'Cache-Control': 'no-store',
        'Set-Cookie': `${mediaCookieName}=${mediaSecret}; Path=/media; HttpOnly; SameSite=Strict`,
      });
      return res.end();
    }

    if (url.pathname.startsWith('/media/')) {
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return refuse(res, 405, 'invalid-argument', 'Method not allowed.');
      if (!hasToken(req) && !hasMediaCookie(req))
        return refuse(res, 401, 'unauthorized', 'Open a session (POST /api/session) first.');
      const media = host.library.readMedia(url.pathname);
      const body = media ? await fs.readFile(media.file).catch(() => null) : null;
      if (!media || !body) {
        res.writeHead(404, { ...securityHeaders, 'Content-Type': 'text/plain; charset=utf-8' });
        return res.end('Not found');
      }
      res.writeHead(200, {
        ...securityHeaders,
        'Content-Type': media.contentType,
        'Content-Length': body.length,
        'Cache-Control': 'private, max-age=86400',
      });
      return res.end(req.method === 'HEAD' ? undefined : body);
    }

    if (url.pathname.startsWith(httpCallPrefix)) {
      if (req.method !== 'POST')
        return refuse(res, 405, 'invalid-argument', 'Use POST for API calls.');
      if (!hasToken(req)) return refuse(res, 401, 'unauthorized', 'A valid token is required.');
      let body: unknown;
      try {
        body = await readJsonBody(req);
      } catch (err) {
        return refuse(res, 400, 'invalid-argument', (err as Error).message);
      }
      const input =
        body && typeof body === 'object' && 'input' in body
          ? (body as { input: unknown }).input
          : undefined;
      const method = url.pathname.slice(httpCallPrefix.length);
      const envelope = await dispatch(host.service, method, input, { onUnexpectedError });
      const status = envelope.ok
        ? 200
        : envelope.error.code === 'unknown-method'
          ? 404
          : envelope.error.code === 'invalid-argument'
            ? 400
            : 500;
      return sendJson(res, envelope.ok || status !== 500 ? status : 200, envelope);
    }

    if (req.method !== 'GET' && req.method !== 'HEAD')
      return refuse(res, 405, 'invalid-argument', 'Method not allowed.');
    const file = options.rendererDir
      ? await readStaticFile(options.rendererDir, url.pathname)
      : null;
    if (!file) {
      res.writeHead(404, { ...securityHeaders, 'Content-Type': 'text/plain; charset=utf-8' });
      return res.end('Not found');
    }
    res.writeHead(200, {
      ...securityHeaders,
      'Content-Type': file.contentType,
      'Cache-Control': url.pathname.startsWith('/assets/')
        ? 'public, max-age=31536000, immutable'
        : 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  });

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxMessageBytes,
    handleProtocols: (protocols) => (protocols.has(wsProtocol) ? wsProtocol : false),
  });

  server.on('upgrade', (req, socket, head) => {
    const reject = (status: number, message: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${message}`,
      );
    };
    const problem = checkRequest(req);
    if (problem) return reject(problem.status, problem.message);
    if (new URL(req.url ?? '/', 'http://localhost').pathname !== wsPath)
      return reject(404, 'Not found');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    const tokenOffer = offered.find((p) => p.startsWith(tokenProtocolPrefix));
    if (!tokenOffer || !safeEqual(tokenOffer.slice(tokenProtocolPrefix.length), token))
      return reject(401, 'A valid token is required.');
    if (!offered.includes(wsProtocol)) return reject(400, `Subprotocol ${wsProtocol} is required.`);
    wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ws));
  });

  const serveSocket = (ws: WebSocket) => {
    const send = (message: unknown) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
    };
    const unsubscribe = host.events.subscribe((event, payload) =>
      send({ type: 'event', event, payload }),
    );
    ws.on('close', unsubscribe);
    ws.on('message', async (data, isBinary) => {
      if (isBinary) return ws.close(1003, 'Binary messages are not accepted.');
      let parsed: unknown;
      try {
        parsed = JSON.parse(data.toString());
      } catch {
        return ws.close(1007, 'Messages must be JSON.');
      }
      const call = WireCall.safeParse(parsed);
      if (!call.success) {
        const id = (parsed as { id?: unknown })?.id;
        if (typeof id === 'number') {
          const response: Envelope = {
            ok: false,
            error: { code: 'invalid-argument', message: describeIssues(call.error) },
          };
          return send({ type: 'result', id, response });
        }
        return ws.close(1008, 'Malformed call.');
      }
      const response = await dispatch(host.service, call.data.method, call.data.input, {
        onUnexpectedError,
      });
      send({ type: 'result', id: call.data.id, response });
    });
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, hostname, () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as net.AddressInfo).port;
  const shownHost = net.isIPv6(hostname)
    ? `[${hostname}]`
    : hostname === '0.0.0.0' || hostname === '::'
      ? '127.0.0.1'
      : hostname;
  const url = `http://${shownHost}:${port}`;

  return {
    url,
    studioUrl: `${url}/#token=${token}`,
    port,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close();
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxMessageBytes) throw new Error('The request body is too large.');
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new Error('The request body must be JSON.');
  }
}
