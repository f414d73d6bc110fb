import { contextBridge, ipcRenderer, webUtils } from 'electron';
import {
  type DesktopBridge,
  ipcCallChannel,
  ipcEventChannel,
  ipcPickCheckpointChannel,
  ipcPickFolderChannel,
} from '../shared/channels';

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

/**
 * Beside the contract, the things only the desktop can give: the OS folder and checkpoint
 * pickers (main opens them for our own windows only) and the path of a dropped file or folder
 * (Electron 32+ keeps it off File objects; webUtils reads it here). Each gives a path that the
 * page then passes to addModel or importCheckpoint like a typed one, so main still validates
 * everything.
 */
const desktop: DesktopBridge = {
  pickModelFolder: async () => {
    const chosen: unknown = await ipcRenderer.invoke(ipcPickFolderChannel).catch(() => null);
    return typeof chosen === 'string' ? chosen : null;
  },
  pickCheckpointFile: async (kind) => {
    const chosen: unknown = await ipcRenderer
      .invoke(ipcPickCheckpointChannel, kind === 'vae' ? 'vae' : 'checkpoint')
      .catch(() => null);
    return typeof chosen === 'string' ? chosen : null;
  },
  pathForFile: (file) => {
    try {
      return webUtils.getPathForFile(file as File);
    } catch {
      return '';
    }
  },
};
contextBridge.exposeInMainWorld('studioDesktop', desktop);
