import http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { type Envelope, WireCall, wsPath } from '../../shared';
import { describeIssues, dispatch } from '../dispatch';
import { tokenProtocolPrefix, wsProtocol } from './guards';
import { type ServerContext, logUnexpected, maxMessageBytes } from './http';

/**
 * A client that lets this much pile up unread (events it does not read) is dropped rather than
 * letting the host grow without bound; the studio reconnects and reloads what it shows.
 */
export const maxBufferedBytes = 64 * 1024 * 1024;

/** The WebSocket end of the server: the upgrade (token, subprotocol), calls and events. */
export interface SocketEndpoint {
  /** The `upgrade` listener for the HTTP server. */
  onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Drops every client and stops the event fan-out. */
  close(): void;
}

/**
 * ws checks every frame (masking, opcodes, RSV bits, control-frame rules, UTF-8, close codes,
 * the size limit) and on a violation emits 'error' and closes that socket with the matching
 * code (1002, 1007, 1009). An 'error' event with no listener throws, which used to end the
 * whole process, so each socket gets one; the raw socket before the upgrade too.
 */
export function createSocketEndpoint(ctx: ServerContext): SocketEndpoint {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxMessageBytes,
    handleProtocols: (protocols) => (protocols.has(wsProtocol) ? wsProtocol : false),
  });

  // One subscription for all clients: each event is serialised once, not once per client.
  const stopEvents = ctx.host.events.subscribe((event, payload) => {
    if (wss.clients.size === 0) return;
    const text = JSON.stringify({ type: 'event', event, payload });
    for (const ws of wss.clients) sendText(ctx, ws, text);
  });

  return {
    onUpgrade(req, socket, head) {
      socket.on('error', () => socket.destroy());
      const refusal = checkUpgrade(ctx, req);
      if (refusal) {
        socket.end(
          `HTTP/1.1 ${refusal.status} ${http.STATUS_CODES[refusal.status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${refusal.message}`,
        );
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ctx, ws));
    },
    close() {
      stopEvents();
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}

function checkUpgrade(
  ctx: ServerContext,
  req: http.IncomingMessage,
): { status: number; message: string } | null {
  const problem = ctx.guard.check(req);
  if (problem) return problem;
  let pathname: string;
  try {
    pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
  } catch {
    return { status: 400, message: 'The request URL could not be read.' };
  }
  if (pathname !== wsPath) return { status: 404, message: 'Not found' };
  const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
  const tokenOffer = offered.find((p) => p.startsWith(tokenProtocolPrefix));
  if (!tokenOffer || !ctx.guard.isToken(tokenOffer.slice(tokenProtocolPrefix.length)))
    return { status: 401, message: 'A valid token is required.' };
  if (!offered.includes(wsProtocol))
    return { status: 400, message: `Subprotocol ${wsProtocol} is required.` };
  return null;
}

function sendText(ctx: ServerContext, ws: WebSocket, text: string): void {
  if (ws.readyState !== ws.OPEN) return;
  if (ws.bufferedAmount > maxBufferedBytes) {
    ctx.log('server: dropped a WebSocket client that stopped reading its messages');
    ws.terminate();
    return;
  }
  ws.send(text);
}

function serveSocket(ctx: ServerContext, ws: WebSocket): void {
  ws.on('error', (err) => ctx.log(`server: closed a WebSocket client: ${err.message}`));
  const send = (message: unknown) => sendText(ctx, ws, JSON.stringify(message));
  ws.on('message', (data, isBinary) => {
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
    const { id, method, input } = call.data;
    dispatch(ctx.host.service, method, input, {
      onUnexpectedError: (name, err) => logUnexpected(ctx.log, name, err),
    })
      .then((response) => send({ type: 'result', id, response }))
      .catch((err: unknown) => logUnexpected(ctx.log, method, err));
  });
}
