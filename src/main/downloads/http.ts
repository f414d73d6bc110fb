/**
 * HTTP for downloads: undici's fetch through a proxy taken from the environment (HTTPS_PROXY,
 * HTTP_PROXY, NO_PROXY, as curl and huggingface_hub's requests read them), redirects followed by
 * hand so the access token never leaves the Hub's host (requests drops Authorization on a redirect
 * to another host, which is what huggingface_hub relies on for its CDN redirects), retries of 429
 * and 5xx with exponential backoff that honours Retry-After (RFC 9110 §10.2.3), and every failure
 * worded as one sentence (DownloadError).
 */
import { type Dispatcher, EnvHttpProxyAgent, type Response, fetch } from 'undici';
import { DownloadError } from './errors';

/** What an HttpClient needs to know. */
export interface HttpOptions {
  /** The Hugging Face access token, or null. */
  token: string | null;
  /** The origin the token belongs to (the Hub endpoint's); requests to any other get none. */
  tokenOrigin: string | null;
  /** Defaults to an EnvHttpProxyAgent (proxies from the environment). */
  dispatcher?: Dispatcher;
  /** Failed tries (429, 5xx, a connection that failed) before giving up; default 5. */
  retries?: number;
  /** First backoff wait; doubles per try (default 1 s). */
  backoffMs?: number;
  /** The longest wait a Retry-After may ask for before the request fails instead (default 2 min). */
  maxWaitMs?: number;
}

export interface RequestOptions {
  /** What is being fetched, as a sentence names it ("stabilityai/sd-turbo", "unet/model.onnx"). */
  what: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  method?: 'GET' | 'HEAD';
}

const maxRedirects = 10;
const userAgent = 'latent-studio (+https://github.com/latent-studio)';

let sharedDispatcher: Dispatcher | null = null;
function environmentDispatcher(): Dispatcher {
  sharedDispatcher ??= new EnvHttpProxyAgent();
  return sharedDispatcher;
}

export class HttpClient {
  readonly #options: Required<Omit<HttpOptions, 'dispatcher'>> & { dispatcher: Dispatcher | null };

  constructor(options: HttpOptions) {
    this.#options = {
      retries: 5,
      backoffMs: 1000,
      maxWaitMs: 120_000,
      ...options,
      dispatcher: options.dispatcher ?? null,
    };
  }

  /**
   * A 2xx (or 206) response for `url`, after redirects and retries; anything else throws a
   * DownloadError whose sentence names `what`. The caller reads or cancels the body.
   */
  async request(url: string, options: RequestOptions): Promise<Response> {
    const { retries, backoffMs, maxWaitMs } = this.#options;
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await this.#follow(url, options);
      } catch (err) {
        if (err instanceof DownloadError) throw err;
        if (options.signal?.aborted) throw cancelled(options.what);
        if (attempt >= retries) throw networkError(url, err);
        await sleep(backoffMs * 2 ** attempt, options.signal, options.what);
        continue;
      }
      if (response.ok) return response;
      const retryable = response.status === 429 || response.status >= 500;
      if (!retryable || attempt >= retries)
        throw await statusError(response, options.what, url, this.#options.token !== null);
      const asked = retryAfterMs(response.headers.get('retry-after'));
      await response.body?.cancel().catch(() => {});
      if (asked !== null && asked > maxWaitMs)
        throw new DownloadError(
          'rate-limited',
          `The server asked to wait ${Math.ceil(asked / 60_000)} minutes before fetching ${options.what} again (HTTP ${response.status}); try again later.`,
        );
      await sleep(asked ?? backoffMs * 2 ** attempt, options.signal, options.what);
    }
  }

  /** One try: follows redirects by hand, sending the token only to its own origin. */
  async #follow(start: string, options: RequestOptions): Promise<Response> {
    let url = new URL(start);
    for (let hop = 0; hop <= maxRedirects; hop++) {
      if (url.protocol !== 'https:' && url.protocol !== 'http:')
        throw new DownloadError(
          'bad-input',
          `${options.what} points to ${url.protocol} addresses, which cannot be downloaded.`,
        );
      const headers: Record<string, string> = { 'user-agent': userAgent, ...options.headers };
      if (this.#options.token && url.origin === this.#options.tokenOrigin)
        headers.authorization = `Bearer ${this.#options.token}`;
      const response = await fetch(url, {
        method: options.method ?? 'GET',
        headers,
        redirect: 'manual',
        signal: options.signal,
        dispatcher: this.#options.dispatcher ?? environmentDispatcher(),
      });
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || response.status === 304 || !location)
        return response;
      await response.body?.cancel().catch(() => {});
      url = new URL(location, url);
    }
    throw new DownloadError(
      'server',
      `${options.what} redirected more than ${maxRedirects} times; the server is misconfigured.`,
    );
  }
}

/** Retry-After as milliseconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); null if absent. */
export function retryAfterMs(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** Waits `ms`, or rejects with 'cancelled' as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled(what));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled(what));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function cancelled(what: string): DownloadError {
  return new DownloadError('cancelled', `The download of ${what} was stopped.`);
}

/** A connection that could not be made or broke, named by host and the system's reason. */
export function networkError(url: string, err: unknown): DownloadError {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const reason = cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
  return new DownloadError(
    'network',
    `Could not reach ${new URL(url).host} (${reason}); check the connection, or the proxy in HTTPS_PROXY.`,
  );
}

/**
 * The sentence for a status the download cannot go on from. The Hub says which case it is in
 * the X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo; the header
 * huggingface_hub's hf_raise_for_status reads); other servers get the plain status wording.
 */
export async function statusError(
  response: Response,
  what: string,
  url: string,
  hadToken: boolean,
): Promise<DownloadError> {
  const code = response.headers.get('x-error-code');
  const body = await response.text().catch(() => '');
  const status = response.status;
  if (code === 'RepoNotFound')
    return new DownloadError(
      'not-found',
      `${what} was not found on the Hub; check its name${hadToken ? '' : ' (a private repo also needs an access token)'}.`,
    );
  if (code === 'RevisionNotFound')
    return new DownloadError('not-found', `That revision of ${what} does not exist on the Hub.`);
  if (code === 'EntryNotFound' || status === 404)
    return new DownloadError(
      'not-found',
      `${what} is not there (HTTP 404 from ${new URL(url).host}).`,
    );
  if (status === 401 && !hadToken)
    return new DownloadError(
      'unauthorized',
      `${what} needs a Hugging Face access token (it is gated or private); add one in Settings, or set HF_TOKEN.`,
    );
  if (code === 'GatedRepo' || (status === 403 && /gated/i.test(body)))
    return new DownloadError(
      'forbidden',
      `${what} is gated: accept its conditions on its Hub page while signed in, then use that account's access token (Settings, or HF_TOKEN).`,
    );
  if (status === 401)
    return new DownloadError(
      'unauthorized',
      `The Hub refused the access token for ${what}; check the token in Settings (or HF_TOKEN).`,
    );
  if (status === 403)
    return new DownloadError(
      'forbidden',
      hadToken
        ? `${new URL(url).host} refused access to ${what} (HTTP 403); check that the access token in Settings (or HF_TOKEN) may read it.`
        : `${new URL(url).host} refused access to ${what} (HTTP 403); if it is gated or private, add a Hugging Face access token in Settings (or set HF_TOKEN).`,
    );
  if (status === 429)
    return new DownloadError(
      'rate-limited',
      `${new URL(url).host} is limiting requests (HTTP 429) and still was after several tries; try again in a few minutes.`,
    );
  if (status >= 500)
    return new DownloadError(
      'server',
      `${new URL(url).host} failed to send ${what} (HTTP ${status}); try again later.`,
    );
  return new DownloadError('server', `${new URL(url).host} answered HTTP ${status} for ${what}.`);
}
