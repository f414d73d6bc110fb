import crypto from 'node:crypto';

let lastMs = 0;
let seq = 0;

/**
 * A new id: time-ordered (milliseconds, then a counter within the millisecond), then random.
 * Lowercase base 36, 21 characters, so sorting ids sorts by creation.
 */
export function newId(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    seq = 0;
  } else {
    seq++;
    if (seq >= 36 ** 3) {
      lastMs++;
      seq = 0;
    }
  }
  const random = crypto.randomBytes(8).readBigUInt64BE() % 36n ** 9n;
  return (
    lastMs.toString(36).padStart(9, '0') +
    seq.toString(36).padStart(3, '0') +
    random.toString(36).padStart(9, '0')
  );
}

/** A random token (undo tokens, media cookies). */
export function newToken(bytes = 18): string {
  return crypto.randomBytes(bytes).toString('base64url');
}

export function sha256(data: Uint8Array): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}
