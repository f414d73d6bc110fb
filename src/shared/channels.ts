/** IPC channel names of the desktop transport (kept free of zod so the preload stays tiny). */
export const ipcCallChannel = (method: string) => `studio:${method}`;
export const ipcEventChannel = 'studio:event';

/** Path of the WebSocket endpoint and the HTTP call prefix of the headless transport. */
export const wsPath = '/api/ws';
export const httpCallPrefix = '/api/call/';

/** The desktop shell's native folder picker (answered only for our own windows). */
export const ipcPickFolderChannel = 'studio-desktop:pick-model-folder';

/**
 * What only the desktop shell offers the page beside the contract, as `window.studioDesktop`:
 * the OS's own ways to name a folder, which a browser cannot give (it never sees paths).
 * Absent in the browser studio, where the path field is the way.
 */
export interface DesktopBridge {
  /** Opens the OS folder picker; the chosen folder's absolute path, or null when cancelled. */
  pickModelFolder(): Promise<string | null>;
  /** The absolute path of a file or folder dropped on the page ('' when it has none). */
  pathForFile(file: Blob): string;
}
