import crypto from 'node:crypto';
import type http from 'node:http';
import net from 'node:net';

/** The WebSocket subprotocol; the token travels as a second one, `token.<value>`. */
export const wsProtocol = 'studio.v1';
export const tokenProtocolPrefix = 'token.';
/** POST here with the token to get the cookie that lets <img> load /media/... */
export const sessionPath = '/api/session';
export const mediaCookieName = 'studio_media';

export function isLoopbackHost(hostname: string): boolean {
  const bare = hostname.replace(/^\[|\]$/g, '');
  if (bare === 'localhost') return true;
  if (net.isIPv4(bare)) return bare.startsWith('127.');
  if (net.isIPv6(bare)) return bare === '::1';
  return false;
}

export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && crypto.timingSafeEqual(ab, bb);
}

/** Why a request is refused before anything else, or null when it may go on. */
export type Refusal = { status: number; message: string } | null;

/**
 * The checks every request passes, HTTP and WebSocket upgrade alike: the Host header (against
 * DNS rebinding), the Origin, and the two credentials (the per-launch token; the media cookie
 * that <img> tags carry instead).
 */
export interface RequestGuard {
  check(req: http.IncomingMessage): Refusal;
  hasToken(req: http.IncomingMessage): boolean;
  /** Whether `value` is the token (compared in constant time). */
  isToken(value: string): boolean;
  hasMediaCookie(req: http.IncomingMessage): boolean;
  /** The Set-Cookie value that POST /api/session hands out. */
  mediaCookie: string;
}

export function createGuard(options: {
  hostname: string;
  token: string;
  /** The bound port; known only once listening. */
  port: () => number;
}): RequestGuard {
  const { hostname, token } = options;
  const mediaSecret = crypto.randomBytes(32).toString('base64url');

  /**
   * Host names the server answers to. Loopback names always; the bound address when it is not
   * loopback; on a wildcard bind any IP literal (DNS rebinding needs a name, not an address).
   */
  const isAllowedHost = (hostHeader: string): boolean => {
    const match = /^(\[[0-9a-f:.]+\]|[^:]+):(\d+)$/i.exec(hostHeader);
    if (!match || Number(match[2]) !== options.port()) return false;
    const name = match[1].replace(/^\[|\]$/g, '');
    if (isLoopbackHost(name)) return true;
    if (name === hostname) return true;
    return (hostname === '0.0.0.0' || hostname === '::') && net.isIP(name) !== 0;
  };

  return {
    check(req) {
      const hostHeader = (req.headers.host ?? '').toLowerCase();
      if (!isAllowedHost(hostHeader)) return { status: 421, message: 'Unknown Host header.' };
      const origin = req.headers.origin;
      if (origin !== undefined && origin.toLowerCase() !== `http://${hostHeader}`)
        return { status: 403, message: 'Requests from other origins are not allowed.' };
      return null;
    },
    hasToken(req) {
      const auth = req.headers.authorization ?? '';
      return auth.startsWith('Bearer ') && safeEqual(auth.slice(7), token);
    },
    isToken: (value) => safeEqual(value, token),
    hasMediaCookie(req) {
      return (req.headers.cookie ?? '')
        .split(';')
        .map((c) => c.trim())
        .some(
          (c) =>
            c.startsWith(`${mediaCookieName}=`) &&
            safeEqual(c.slice(mediaCookieName.length + 1), mediaSecret),
        );
    },
    mediaCookie: `${mediaCookieName}=${mediaSecret}; Path=/media; HttpOnly; SameSite=Strict`,
  };
}
