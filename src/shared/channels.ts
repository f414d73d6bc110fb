/** IPC channel names of the desktop transport (kept free of zod so the preload stays tiny). */
export const ipcCallChannel = (method: string) => `studio:${method}`;
export const ipcEventChannel = 'studio:event';

/** Path of the WebSocket endpoint and the HTTP call prefix of the headless transport. */
export const wsPath = '/api/ws';
export const httpCallPrefix = '/api/call/';
/**
 * The headless server's checkpoint upload: POST the file's bytes (with its Content-Length) to
 * `?name=<file name>&kind=checkpoint|vae`; the answer is the envelope of a `StoredUpload`
 * (`{ path, sha256, bytes, reused }`), whose path then goes to importCheckpoint. With `&check=1`
 * and `&size=<bytes>` and no body it only says whether such an upload would be accepted.
 */
export const checkpointUploadPath = '/api/upload/checkpoint';

/** The desktop shell's native folder picker (answered only for our own windows). */
export const ipcPickFolderChannel = 'studio-desktop:pick-model-folder';
/** The desktop shell's native checkpoint file picker (answered only for our own windows). */
export const ipcPickCheckpointChannel = 'studio-desktop:pick-checkpoint-file';

/**
 * What only the desktop shell offers the page beside the contract, as `window.studioDesktop`:
 * the OS's own ways to name a file or folder, which a browser cannot give (it never sees paths).
 * Absent in the browser studio, where the path field is the way.
 */
export interface DesktopBridge {
  /** Opens the OS folder picker; the chosen folder's absolute path, or null when cancelled. */
  pickModelFolder(): Promise<string | null>;
  /**
   * Opens the OS file picker for a checkpoint (.safetensors, .ckpt, .pt, .pth, .bin), or for a
   * VAE-only file (`'vae'`); the chosen file's absolute path, or null when cancelled. Main
   * hands back only the path the dialog returned.
   */
  pickCheckpointFile(kind: 'checkpoint' | 'vae'): Promise<string | null>;
  /** The absolute path of a file or folder dropped on the page ('' when it has none). */
  pathForFile(file: Blob): string;
}
