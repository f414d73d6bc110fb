import {
  BrowserWindow,
  type IpcMainInvokeEvent,
  type WebContents,
  dialog,
  ipcMain,
} from 'electron';
import { methodNames } from '../../shared';
import {
  ipcCallChannel,
  ipcEventChannel,
  ipcPickCheckpointChannel,
  ipcPickFolderChannel,
} from '../../shared/channels';
import type { StudioHost } from '../api';
import { dispatch } from '../dispatch';
import { acceptPickedFile, checkpointDialogOptions, pickKind } from './file-dialogs';
import { appOrigin } from './protocol';

/**
 * Binds every contract method with ipcMain.handle. A call is answered only when it comes from
 * the main frame of one of our windows showing our own origin; anything else gets `forbidden`
 * before its payload is even looked at (checklist #17). Payloads are validated by `dispatch`.
 */
/** Whether a call comes from the main frame of one of our windows, showing our own origin. */
function trustedCaller(
  event: IpcMainInvokeEvent,
  isOurWindow: (contents: WebContents) => boolean,
): boolean {
  const frame = event.senderFrame;
  if (!frame || frame !== event.sender.mainFrame) return false;
  if (!isOurWindow(event.sender)) return false;
  try {
    return new URL(frame.url).origin === appOrigin;
  } catch {
    return false;
  }
}

export function bindIpc(
  host: StudioHost,
  isOurWindow: (contents: WebContents) => boolean,
): () => void {
  const trusted = (event: IpcMainInvokeEvent) => trustedCaller(event, isOurWindow);

  for (const method of methodNames) {
    ipcMain.handle(ipcCallChannel(method), (event, input: unknown) => {
      if (!trusted(event)) {
        return {
          ok: false,
          error: { code: 'forbidden', message: 'This caller may not use the studio API.' },
        };
      }
      return dispatch(host.service, method, input, {
        onUnexpectedError: (name, err) => console.error(`error in ${name}:`, err),
      });
    });
  }
  // The native folder picker (DesktopBridge.pickModelFolder): a path or null, never an error.
  ipcMain.handle(ipcPickFolderChannel, async (event) => {
    if (!trusted(event)) return null;
    const window = BrowserWindow.fromWebContents(event.sender);
    const options: Electron.OpenDialogOptions = {
      title: 'Add a model folder',
      buttonLabel: 'Add model',
      properties: ['openDirectory'],
    };
    const result = window
      ? await dialog.showOpenDialog(window, options)
      : await dialog.showOpenDialog(options);
    return result.canceled ? null : (result.filePaths[0] ?? null);
  });
  // The native checkpoint picker (DesktopBridge.pickCheckpointFile): the page names only the
  // kind; the answer is the one file the person chose, checked again here, or null.
  ipcMain.handle(ipcPickCheckpointChannel, async (event, kindInput: unknown) => {
    const kind = pickKind(kindInput);
    if (!trusted(event) || !kind) return null;
    const window = BrowserWindow.fromWebContents(event.sender);
    const options = checkpointDialogOptions(kind);
    const result = window
      ? await dialog.showOpenDialog(window, options)
      : await dialog.showOpenDialog(options);
    return acceptPickedFile(result);
  });
  return () => {
    for (const method of methodNames) ipcMain.removeHandler(ipcCallChannel(method));
    ipcMain.removeHandler(ipcPickFolderChannel);
    ipcMain.removeHandler(ipcPickCheckpointChannel);
  };
}

/** Forwards host events to a window's renderer. */
export function forwardEvents(host: StudioHost, contents: WebContents): () => void {
  return host.events.subscribe((event, payload) => {
    if (!contents.isDestroyed()) contents.send(ipcEventChannel, event, payload);
  });
}
