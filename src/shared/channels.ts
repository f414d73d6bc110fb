/** IPC channel names of the desktop transport (kept free of zod so the preload stays tiny). */
export const ipcCallChannel = (method: string) => `studio:${method}`;
export const ipcEventChannel = 'studio:event';

/** Path of the WebSocket endpoint and the HTTP call prefix of the headless transport. */
export const wsPath = '/api/ws';
export const httpCallPrefix = '/api/call/';
