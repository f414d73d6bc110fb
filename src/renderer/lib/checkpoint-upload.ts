import { StudioError, checkpointUploadPath } from '../../shared';
import { hostToken } from './transport';

/** What the headless server kept of an upload (its route's answer). */
export interface UploadedCheckpoint {
  /** The file on the host, for importCheckpoint. */
  path: string;
  sha256: string;
  bytes: number;
  /** The same content was already on the host. */
  reused: boolean;
}

/** An upload under way: its result, and a way to stop it (the host then keeps nothing). */
export interface RunningUpload {
  done: Promise<UploadedCheckpoint>;
  abort(): void;
}

type Envelope =
  | { ok: true; value: UploadedCheckpoint }
  | { ok: false; error: { code: StudioError['code']; message: string } };

function refusal(body: string, fallback: string): StudioError {
  try {
    const envelope = JSON.parse(body) as Envelope;
    if (!envelope.ok) return new StudioError(envelope.error.code, envelope.error.message);
  } catch {
    // Not our JSON (a proxy's page, say): the fallback sentence.
  }
  return new StudioError('unavailable', fallback);
}

/**
 * Sends a checkpoint (or a VAE-only file) chosen in the browser to the headless server, which
 * streams it to its disk (POST checkpointUploadPath). The server is asked first whether it takes
 * a file of that name and size, so a refusal (no room, not a checkpoint's name) comes back as
 * its sentence before any bytes go. XMLHttpRequest rather than fetch: only it reports the
 * progress of a request body. `onProgress` gets the bytes sent so far and the total.
 */
export function uploadCheckpoint(
  file: File,
  kind: 'checkpoint' | 'vae',
  onProgress: (sent: number, total: number) => void,
): RunningUpload {
  const token = hostToken();
  const query = new URLSearchParams({ name: file.name, kind });
  const url = `${checkpointUploadPath}?${query.toString()}`;
  const preflight = new AbortController();
  let xhr: XMLHttpRequest | null = null;
  let aborted = false;
  const cancelled = () => new StudioError('cancelled', `The upload of ${file.name} was cancelled.`);

  const done = (async () => {
    if (!token) throw new StudioError('unavailable', 'Uploads go to the headless server only.');
    const check = await fetch(`${url}&check=1&size=${file.size}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      signal: preflight.signal,
    }).catch(() => {
      throw aborted
        ? cancelled()
        : new StudioError('unavailable', 'The studio host did not answer.');
    });
    if (check.status !== 204) {
      throw refusal(await check.text(), `The studio host refused ${file.name} (${check.status}).`);
    }
    if (aborted) throw cancelled();
    return new Promise<UploadedCheckpoint>((resolve, reject) => {
      const request = new XMLHttpRequest();
      xhr = request;
      request.open('POST', url);
      request.setRequestHeader('Authorization', `Bearer ${token}`);
      request.setRequestHeader('Content-Type', 'application/octet-stream');
      request.upload.onprogress = (e) => onProgress(e.loaded, e.total || file.size);
      request.onload = () => {
        const fallback = `The upload of ${file.name} failed (${request.status}).`;
        if (request.status !== 200) return reject(refusal(request.responseText, fallback));
        try {
          const envelope = JSON.parse(request.responseText) as Envelope;
          if (envelope.ok) resolve(envelope.value);
          else reject(new StudioError(envelope.error.code, envelope.error.message));
        } catch {
          reject(new StudioError('unavailable', fallback));
        }
      };
      request.onerror = () =>
        reject(
          new StudioError(
            'unavailable',
            `The upload of ${file.name} was cut off: the connection to the studio host was lost.`,
          ),
        );
      request.onabort = () => reject(cancelled());
      request.send(file);
    });
  })();

  return {
    done,
    abort() {
      aborted = true;
      preflight.abort();
      (xhr as XMLHttpRequest | null)?.abort();
    },
  };
}
