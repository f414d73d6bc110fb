import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { StudioHost } from '../api';
import { CheckpointUploads } from '../models/checkpoint-uploads';
import { createGuard } from './guards';
import { type ServerContext, createRequestHandler, onClientError } from './http';
import { createSocketEndpoint } from './websocket';

export { isLoopbackHost, mediaCookieName, sessionPath, wsProtocol } from './guards';
export { maxMessageBytes } from './http';

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
  /** Tests: how long a checkpoint upload may stall before it is dropped (default 60 s). */
  uploadIdleMs?: number;
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

/**
 * Serves the same StudioApi as the desktop app over loopback HTTP + WebSocket, for running the
 * studio in any browser (against a GPU box, say) and for the end-to-end tests. Every API request
 * needs the per-launch token; requests from foreign origins or for foreign Host names (DNS
 * rebinding) are refused before anything else. A client's malformed request or frame ends that
 * client's request or socket, never the server.
 */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const hostname = options.hostname ?? '127.0.0.1';
  const token = options.token ?? crypto.randomBytes(32).toString('base64url');
  let port = options.port ?? 0;
  const ctx: ServerContext = {
    host: options.host,
    guard: createGuard({ hostname, token, port: () => port }),
    rendererDir: options.rendererDir,
    uploads: new CheckpointUploads(options.host.options.dataDir),
    ...(options.uploadIdleMs ? { uploadIdleMs: options.uploadIdleMs } : {}),
    log: options.log ?? (() => {}),
  };
  // What an upload cut short by a crash left behind.
  await ctx.uploads.sweep();
  const server = http.createServer(createRequestHandler(ctx));
  // Node's whole-request limit would cut a multi-GB checkpoint upload; the request handler
  // keeps that limit for every other request, and uploads have an idle limit instead.
  server.requestTimeout = 0;
  server.on('clientError', onClientError);
  const sockets = createSocketEndpoint(ctx);
  server.on('upgrade', sockets.onUpgrade);
  port = await listen(server, port, hostname);
  const url = `http://${shownHost(hostname)}:${port}`;
  return {
    url,
    studioUrl: `${url}/#token=${token}`,
    port,
    token,
    close: () => closeServer(server, sockets.close),
  };
}

function listen(server: http.Server, port: number, hostname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, hostname, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** The host part of the URL to print: an IPv4 wildcard bind is opened through loopback. */
function shownHost(hostname: string): string {
  if (net.isIPv6(hostname)) return `[${hostname}]`;
  return hostname === '0.0.0.0' ? '127.0.0.1' : hostname;
}

function closeServer(server: http.Server, closeSockets: () => void): Promise<void> {
  return new Promise((resolve) => {
    closeSockets();
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}
