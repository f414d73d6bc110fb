import {
  type DesktopBridge,
  type Envelope,
  type EventName,
  type MethodName,
  type StudioApi,
  type Transport,
  WireServerMessage,
  createStudioClient,
  isEventName,
  wsPath,
} from '../../shared';

declare global {
  interface Window {
    /** Set by the desktop preload; absent in a browser. */
    studio?: Transport;
    /** Set by the desktop preload: the native folder picker and dropped folders' paths. */
    studioDesktop?: DesktopBridge;
  }
}

const tokenKey = 'latent-studio-token';

/** The per-launch token arrives in the URL fragment; keep it for reloads, then hide it. */
function takeToken(): string | null {
  const match = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(tokenKey, match[1]);
    history.replaceState(null, '', window.location.pathname + window.location.search);
    return match[1];
  }
  return sessionStorage.getItem(tokenKey);
}

/**
 * The headless server's per-launch token, for the one request that is not a contract call: a
 * checkpoint upload (checkpoint-upload.ts). Null in the desktop app, which has no token.
 */
export function hostToken(): string | null {
  return window.studio ? null : sessionStorage.getItem(tokenKey);
}

/**
 * The headless transport: one WebSocket carrying calls (with ids) and events, reconnecting
 * with backoff. Calls made while disconnected wait for the connection.
 */
export class WebSocketTransport implements Transport {
  #socket: WebSocket | null = null;
  #open: Promise<WebSocket> | null = null;
  #nextId = 1;
  #pending = new Map<number, (envelope: Envelope) => void>();
  #listeners = new Set<(event: EventName, payload: unknown) => void>();
  #retryDelay = 250;

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly onConnectionChange: (connected: boolean) => void = () => {},
  ) {}

  call(method: MethodName, input: unknown): Promise<Envelope> {
    return this.#connect().then(
      (socket) =>
        new Promise<Envelope>((resolve) => {
          const id = this.#nextId++;
          this.#pending.set(id, resolve);
          socket.send(JSON.stringify({ type: 'call', id, method, input }));
        }),
    );
  }

  subscribe(listener: (event: EventName, payload: unknown) => void): () => void {
    this.#listeners.add(listener);
    void this.#connect();
    return () => this.#listeners.delete(listener);
  }

  #connect(): Promise<WebSocket> {
    if (this.#open) return this.#open;
    this.#open = new Promise<WebSocket>((resolve) => {
      const attempt = () => {
        const socket = new WebSocket(this.url, ['studio.v1', `token.${this.token}`]);
        socket.onopen = () => {
          this.#socket = socket;
          this.#retryDelay = 250;
          // <img> requests for /media cannot carry the token: trade it for a session cookie
          // first, so that every gallery URL handed out afterwards loads.
          void this.#openSession().finally(() => {
            this.onConnectionChange(true);
            resolve(socket);
          });
        };
        socket.onmessage = (message) => this.#receive(message.data);
        socket.onclose = () => {
          const wasOpen = this.#socket === socket;
          this.#socket = null;
          if (wasOpen) {
            this.onConnectionChange(false);
            for (const [id, settle] of this.#pending) {
              settle({
                ok: false,
                error: { code: 'unavailable', message: 'Lost the connection to the studio host.' },
              });
              this.#pending.delete(id);
            }
            this.#open = null;
            void this.#connect();
          } else {
            setTimeout(attempt, this.#retryDelay);
            this.#retryDelay = Math.min(this.#retryDelay * 2, 5000);
          }
        };
      };
      attempt();
    });
    return this.#open;
  }

  /** Asks the host for the media cookie; hosts without the endpoint (404) are tolerated. */
  async #openSession(): Promise<void> {
    try {
      await fetch('/api/session', {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}` },
        credentials: 'same-origin',
      });
    } catch {
      // The images will fail to load and say so; the API itself still works.
    }
  }

  #receive(data: unknown): void {
    if (typeof data !== 'string') return;
    let parsed: WireServerMessage;
    try {
      parsed = WireServerMessage.parse(JSON.parse(data));
    } catch {
      return;
    }
    if (parsed.type === 'result') {
      const settle = this.#pending.get(parsed.id);
      this.#pending.delete(parsed.id);
      settle?.(parsed.response as Envelope);
    } else if (isEventName(parsed.event)) {
      for (const listener of this.#listeners) listener(parsed.event, parsed.payload);
    }
  }
}

export type TransportKind = 'desktop' | 'websocket';

/** Picks the transport once, at start-up; the rest of the studio only sees StudioApi. */
export function connectStudio(onConnectionChange?: (connected: boolean) => void): {
  api: StudioApi;
  kind: TransportKind;
} {
  if (window.studio) return { api: createStudioClient(window.studio), kind: 'desktop' };
  const token = takeToken();
  if (!token)
    throw new Error(
      'This page needs the address printed by `npm run serve` (it carries the access token).',
    );
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const transport = new WebSocketTransport(
    `${scheme}://${window.location.host}${wsPath}`,
    token,
    onConnectionChange,
  );
  return { api: createStudioClient(transport), kind: 'websocket' };
}
