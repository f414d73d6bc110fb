/** Small formatting helpers shared by the views. */

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Short durations as people read them: 340 ms, 2.4 s, 1m 05s. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return formatDuration(ms);
}

export function formatDate(ms: number): string {
  return new Date(ms).toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

/** Family ids as people know them (declared with the families in src/shared). */
export { familyLabel } from '../../shared';

/** Reads a File or Blob as base64 (without the data: prefix). */
export function blobToBase64(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(',') + 1));
    };
    reader.onerror = () => reject(reader.error ?? new Error('Could not read the file.'));
    reader.readAsDataURL(blob);
  });
}

export const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** Rounds to the nearest multiple of 8 within the engine's limits. */
export const toMultipleOf8 = (v: number, min = 64, max = 4096) =>
  clamp(Math.round(v / 8) * 8, min, max);

/**
 * The size a generation's images come out at: its own size, enlarged by the upscale (the x4
 * method: 4x; two-pass: the factor, to a multiple of 8 as the engine's hiresSide rounds it).
 */
export function outputSize(s: {
  mode: string;
  width: number;
  height: number;
  upscale: { method: string; factor: number } | null;
}): { width: number; height: number } {
  if (!s.upscale) return { width: s.width, height: s.height };
  const scale = s.upscale.method === 'x4' ? 4 : s.upscale.factor;
  const side = (v: number) => Math.max(8, Math.round((v * scale) / 8) * 8);
  return { width: side(s.width), height: side(s.height) };
}
