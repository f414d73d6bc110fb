import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BrowserWindow,
  Menu,
  app,
  powerMonitor,
  powerSaveBlocker,
  safeStorage,
  session,
  shell,
} from 'electron';
import type { QueueState } from '../../shared';
import { StudioHost } from '../api';
import { appVersion } from '../version';
import { BackgroundTracker, backgroundWindowEvents } from './background';
import { bindIpc, forwardEvents } from './ipc';
import { menuTemplate } from './menu';
import { mayNavigate } from './navigation';
import { BatteryWatch, SleepBlocker, linuxOnBattery, queueHasWork } from './power';
import { appOrigin, handleAppProtocol, registerAppScheme } from './protocol';
import { gracefulQuit, quitTimeoutMs } from './quit';
import { safeStorageEncryptor } from './secrets';
import { loadWindowState, trackWindowState } from './window-state';

const here = path.dirname(fileURLToPath(import.meta.url));
const rendererDir = path.join(here, '..', 'renderer');
const preloadPath = path.join(here, '..', 'preload', 'index.cjs');
const repoRoot = path.join(here, '..', '..');

/** From a checkout, the Electron-ABI build of better-sqlite3 made by scripts/electron-native.mjs. */
function devSqliteBinding(): string | null {
  if (app.isPackaged) return null;
  const file = path.join(
    repoRoot,
    '.cache',
    'electron-native',
    `${process.versions.electron}-${process.platform}-${process.arch}`,
    'better_sqlite3.node',
  );
  return fs.existsSync(file) ? file : null;
}

// Tests and portable setups may point the data folder elsewhere.
if (process.env.LATENT_STUDIO_DATA_DIR)
  app.setPath('userData', path.resolve(process.env.LATENT_STUDIO_DATA_DIR));

registerAppScheme();
app.enableSandbox();

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  const windows = new Set<BrowserWindow>();
  let host: StudioHost | null = null;
  // No window focused: the engine yields the CPU to the program in front (Settings decides).
  const background = new BackgroundTracker((b) => host?.setBackground(b));
  const refreshBackground = () =>
    background.update([...windows].some((w) => !w.isDestroyed() && w.isFocused()));
  // On battery the engine stops spinning idle threads (Settings decides, with the background).
  const battery = new BatteryWatch(
    () => (process.platform === 'linux' ? linuxOnBattery() : powerMonitor.isOnBatteryPower()),
    (onBattery) => host?.setOnBattery(onBattery),
  );
  // The system stays awake while the queue has work, and may sleep once it is idle.
  const sleep = new SleepBlocker(powerSaveBlocker, (line) => console.error(line));
  const refreshSleep = () => {
    try {
      sleep.update(host !== null && queueHasWork(host.jobs.state()));
    } catch {
      // The queue cannot be read (its database is gone): nothing should hold the machine awake.
      sleep.update(false);
    }
  };

  const createWindow = () => {
    const dataDir = app.getPath('userData');
    const state = loadWindowState(dataDir);
    const window = new BrowserWindow({
      ...state,
      minWidth: 960,
      minHeight: 600,
      show: false,
      title: 'Latent Studio',
      backgroundColor: '#17181c',
      webPreferences: {
        preload: preloadPath,
        contextIsolation: true,
        sandbox: true,
        nodeIntegration: false,
        nodeIntegrationInWorker: false,
        webSecurity: true,
        allowRunningInsecureContent: false,
        webviewTag: false,
        spellcheck: false,
        devTools: !app.isPackaged,
      },
    });
    windows.add(window);
    if (state.maximized) window.maximize();
    trackWindowState(window, dataDir);
    const stopEvents = forwardEvents(host!, window.webContents);
    for (const event of backgroundWindowEvents) window.on(event as 'focus', refreshBackground);
    window.on('closed', () => {
      stopEvents();
      windows.delete(window);
      refreshBackground();
    });
    window.once('ready-to-show', () => window.show());
    void window.loadURL(`${appOrigin}/index.html`);
  };

  app.on('second-instance', () => {
    const [first] = windows;
    if (!first) return;
    if (first.isMinimized()) first.restore();
    first.focus();
  });

  app.on('web-contents-created', (_event, contents) => {
    // Nothing navigates away from the studio or opens windows; https links go to the browser.
    // A file dropped where the page does not take it would navigate to file://: refused too.
    contents.on('will-navigate', (event, url) => {
      if (!mayNavigate(url)) event.preventDefault();
    });
    contents.on('will-redirect', (event, url) => {
      if (!mayNavigate(url)) event.preventDefault();
    });
    contents.on('will-attach-webview', (event) => event.preventDefault());
    contents.setWindowOpenHandler(({ url }) => {
      if (url.startsWith('https://')) void shell.openExternal(url);
      return { action: 'deny' };
    });
  });

  app.whenReady().then(() => {
    Menu.setApplicationMenu(
      Menu.buildFromTemplate(
        menuTemplate({ isPackaged: app.isPackaged, platform: process.platform }),
      ),
    );
    // Deny every permission (camera, notifications, geolocation…) by default (checklist #5).
    session.defaultSession.setPermissionRequestHandler((_contents, _permission, callback) =>
      callback(false),
    );
    session.defaultSession.setPermissionCheckHandler(() => false);

    host = new StudioHost({
      shell: 'desktop',
      dataDir: app.getPath('userData'),
      version: appVersion,
      // Packaged: electron-builder copies resources/models to <resources>/models.
      resourcesDir: app.isPackaged ? process.resourcesPath : path.join(repoRoot, 'resources'),
      sqliteNativeBinding: devSqliteBinding(),
      workerPath: path.join(here, 'engine-worker.mjs'),
      desktop: {
        trash: (file) => shell.trashItem(file),
        reveal: (file) => shell.showItemInFolder(file),
        secrets: safeStorageEncryptor(safeStorage),
      },
      versions: {
        electron: process.versions.electron ?? '',
        chrome: process.versions.chrome ?? '',
      },
    });
    handleAppProtocol(
      rendererDir,
      (urlPath) => host?.library.readMedia(urlPath) ?? null,
      app.getPath('userData'),
    );
    bindIpc(host, (contents) => [...windows].some((w) => w.webContents === contents));
    host.events.subscribe((event, payload) => {
      if (event === 'queueChanged') sleep.update(queueHasWork(payload as QueueState));
    });
    // A missed change (a queue state that could not be read) is put right within a minute.
    setInterval(refreshSleep, 60_000).unref();
    refreshSleep();
    powerMonitor.on('on-battery', () => battery.check());
    powerMonitor.on('on-ac', () => battery.check());
    powerMonitor.on('resume', () => battery.check());
    battery.start();
    createWindow();

    app.on('activate', () => {
      if (windows.size === 0) createWindow();
    });
  });

  app.on('window-all-closed', () => {
    if (process.platform !== 'darwin') app.quit();
  });

  app.on('will-quit', () => {
    background.dispose();
    battery.dispose();
    sleep.dispose();
  });

  app.on(
    'before-quit',
    gracefulQuit({
      close: async () => host?.close(),
      quit: () => app.quit(),
      timeoutMs: quitTimeoutMs,
      log: (line) => console.error(line),
    }),
  );
}
