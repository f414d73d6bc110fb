import { contextBridge, ipcRenderer } from 'electron';
import { ipcCallChannel, ipcEventChannel } from '../shared/channels';

/**
 * The whole surface the page gets: `window.studio.call(method, input)` and
 * `window.studio.subscribe(listener)`, the two halves of the shared `Transport`; the renderer
 * builds its typed client on top. No ipcRenderer, no Node, nothing else crosses. Main checks
 * the sender and validates every method name and payload, so the preload stays a thin pipe.
 */
contextBridge.exposeInMainWorld('studio', {
  call(method: string, input: unknown): Promise<unknown> {
    if (typeof method !== 'string' || !/^[A-Za-z]{1,64}$/.test(method)) {
      return Promise.resolve({
        ok: false,
        error: { code: 'unknown-method', message: 'Unknown method.' },
      });
    }
    return ipcRenderer.invoke(ipcCallChannel(method), input).catch(() => ({
      ok: false,
      error: { code: 'unknown-method', message: `Unknown method "${method}".` },
    }));
  },
  subscribe(listener: (event: string, payload: unknown) => void): () => void {
    const handler = (_event: unknown, name: unknown, payload: unknown) => {
      if (typeof name === 'string') listener(name, payload);
    };
    ipcRenderer.on(ipcEventChannel, handler);
    return () => {
      ipcRenderer.removeListener(ipcEventChannel, handler);
    };
  },
});
