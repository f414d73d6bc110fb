import fs from 'node:fs';
import path from 'node:path';
import type { BrowserWindow, Rectangle } from 'electron';
import { screen } from 'electron';
import { z } from 'zod';

const WindowState = z.object({
  x: z.number().int().optional(),
  y: z.number().int().optional(),
  width: z.number().int().min(640).max(16384),
  height: z.number().int().min(480).max(16384),
  maximized: z.boolean().default(false),
});
type WindowState = z.infer<typeof WindowState>;

const fallback: WindowState = { width: 1440, height: 900, maximized: false };

/** Remembers the window's bounds between launches, ignoring positions on displays now gone. */
export function loadWindowState(dataDir: string): WindowState {
  try {
    const state = WindowState.parse(
      JSON.parse(fs.readFileSync(path.join(dataDir, 'window-state.json'), 'utf8')),
    );
    if (state.x !== undefined && state.y !== undefined) {
      const visible = screen
        .getAllDisplays()
        .some((d) => intersects(d.workArea, state as Rectangle));
      if (!visible) return { ...state, x: undefined, y: undefined };
    }
    return state;
  } catch {
    return fallback;
  }
}

export function trackWindowState(window: BrowserWindow, dataDir: string): void {
  let timer: NodeJS.Timeout | undefined;
  const save = () => {
    if (window.isDestroyed()) return;
    const bounds = window.getNormalBounds();
    const state: WindowState = { ...bounds, maximized: window.isMaximized() };
    try {
      fs.mkdirSync(dataDir, { recursive: true });
      const file = path.join(dataDir, 'window-state.json');
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(state));
      fs.renameSync(`${file}.tmp`, file);
    } catch {
      // Losing the window position is not worth bothering the user about.
    }
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(save, 500);
  };
  window.on('resize', later);
  window.on('move', later);
  window.on('close', () => {
    clearTimeout(timer);
    save();
  });
}

function intersects(a: Rectangle, b: Rectangle): boolean {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}
