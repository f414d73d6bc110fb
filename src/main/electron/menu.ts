import type { MenuItemConstructorOptions } from 'electron';

/** Roles that open or need the developer tools, or reload the page out from under the studio. */
export const developerRoles = ['toggleDevTools', 'reload', 'forceReload'] as const;

/**
 * The application menu as data, so it is tested without Electron. A packaged build has no
 * developer tools and no reload in it (Electron security checklist: nothing that opens the
 * DevTools for a person who did not ask for a developer build); a checkout (`npm run dev`,
 * `npm start`) adds a Developer menu. macOS gets its app menu first, as the platform expects.
 */
export function menuTemplate(options: {
  isPackaged: boolean;
  platform: NodeJS.Platform;
}): MenuItemConstructorOptions[] {
  const mac = options.platform === 'darwin';
  const template: MenuItemConstructorOptions[] = [];
  if (mac) {
    template.push({
      role: 'appMenu',
      submenu: [
        { role: 'about' },
        { type: 'separator' },
        { role: 'hide' },
        { role: 'hideOthers' },
        { role: 'unhide' },
        { type: 'separator' },
        { role: 'quit' },
      ],
    });
  }
  template.push(
    { label: 'File', submenu: [mac ? { role: 'close' } : { role: 'quit' }] },
    {
      label: 'Edit',
      submenu: [
        { role: 'undo' },
        { role: 'redo' },
        { type: 'separator' },
        { role: 'cut' },
        { role: 'copy' },
        { role: 'paste' },
        { role: 'selectAll' },
      ],
    },
    {
      label: 'View',
      submenu: [
        { role: 'resetZoom' },
        { role: 'zoomIn' },
        { role: 'zoomOut' },
        { type: 'separator' },
        { role: 'togglefullscreen' },
      ],
    },
    { role: 'windowMenu' },
  );
  if (!options.isPackaged) {
    template.push({
      label: 'Developer',
      submenu: developerRoles.map((role) => ({ role })),
    });
  }
  return template;
}
