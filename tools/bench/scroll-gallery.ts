// `npm run bench:scroll -- --data-dir DIR [--seconds 8] [--speed 40]`: the gallery scrolled in
// Chromium. The built headless server (out/main/server.mjs; `node scripts/build.mjs` first)
// serves a library kept by `npm run bench:library -- N --keep`; Playwright drives the system
// Chromium at 1920x1080 through the real studio page. Phases, each reported apart:
// - steady: the grid scrolled by --speed px every frame for --seconds (a fast wheel);
// - jumps: the scroll bar dragged to 10%, 50%, 90% and the end, each timed until every visible
//   cell holds its image's item, then scrolled on for a second (pages after a jump follow cursors);
// - search: a text search of a common word ("cat", counted in part), scrolled the same way.
// Per phase: frame time p50/p95/max (requestAnimationFrame deltas), long tasks (the browser's
// PerformanceObserver 'longtask', over 50 ms) count and worst, and gallery pages fetched
// (searchGallery calls seen on the WebSocket). One JSON document on stdout; not part of CI.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Page, chromium } from '@playwright/test';

// The page's globals as the functions run in Chromium use them (tools are type-checked without
// the DOM library).
interface PageElement {
  scrollTop: number;
  readonly scrollHeight: number;
  readonly clientHeight: number;
  getBoundingClientRect(): { top: number; bottom: number };
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
  getAttribute(name: string): string | null;
}
declare const document: PageElement;
declare function requestAnimationFrame(callback: (now: number) => void): number;
declare const PerformanceObserver: new (
  callback: (list: { getEntries(): Array<{ duration: number }> }) => void,
) => { observe(options: { type: string }): void; disconnect(): void };

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (line: string) => process.stderr.write(`bench:scroll: ${line}\n`);

const { values } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    seconds: { type: 'string', default: '8' },
    speed: { type: 'string', default: '40' },
  },
});
const dataDir = values['data-dir'];
if (!dataDir || !fs.existsSync(path.join(dataDir, 'library.sqlite')))
  throw new Error(
    'Give --data-dir, a folder with a library.sqlite (npm run bench:library -- 1000000 --keep).',
  );
const serverEntry = path.join(repoRoot, 'out/main/server.mjs');
if (!fs.existsSync(serverEntry)) throw new Error('Build first: node scripts/build.mjs');
const seconds = Number(values.seconds);
const speed = Number(values.speed);

async function startServer(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [serverEntry, '--port', '0', '--data-dir', dataDir!], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: path.join(dataDir!, 'no-resources') },
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 120_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /serving the studio at (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
  return { url, child };
}

interface Sample {
  frames: number[];
  longTasks: number[];
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
};
const round = (v: number) => Math.round(v * 10) / 10;

/** Scrolls the grid by `px` every frame for `ms`, recording frame times and long tasks. */
function scroll(page: Page, px: number, ms: number): Promise<Sample> {
  return page.evaluate(
    ([px, ms]) =>
      new Promise<Sample>((resolve) => {
        const viewport = document.querySelector('.viewport')!;
        const longTasks: number[] = [];
        const observer = new PerformanceObserver((list) => {
          for (const e of list.getEntries()) longTasks.push(e.duration);
        });
        observer.observe({ type: 'longtask' });
        const frames: number[] = [];
        const start = performance.now();
        let last = start;
        const step = (now: number) => {
          frames.push(now - last);
          last = now;
          viewport.scrollTop += px;
          if (now - start < ms) requestAnimationFrame(step);
          else {
            observer.disconnect();
            resolve({ frames: frames.slice(1), longTasks });
          }
        };
        requestAnimationFrame(step);
      }),
    [px, ms] as const,
  );
}

/** Milliseconds from setting scrollTop to `fraction` of the bar until no visible cell waits. */
function jump(page: Page, fraction: number): Promise<number> {
  return page.evaluate(
    (fraction) =>
      new Promise<number>((resolve) => {
        const viewport = document.querySelector('.viewport')!;
        const start = performance.now();
        viewport.scrollTop = fraction * (viewport.scrollHeight - viewport.clientHeight);
        const visibleWaiting = () => {
          const box = viewport.getBoundingClientRect();
          return [...viewport.querySelectorAll('.cell.placeholder')].some((c) => {
            const r = c.getBoundingClientRect();
            return r.bottom > box.top && r.top < box.bottom;
          });
        };
        const check = () => {
          if (!visibleWaiting() && viewport.querySelector('[data-testid="gallery-item"]'))
            resolve(performance.now() - start);
          else if (performance.now() - start > 30_000) resolve(Infinity);
          else requestAnimationFrame(check);
        };
        requestAnimationFrame(check);
      }),
    fraction,
  );
}

function summary(sample: Sample, pages: number) {
  return {
    frames: sample.frames.length,
    frameP50Ms: round(quantile(sample.frames, 0.5)),
    frameP95Ms: round(quantile(sample.frames, 0.95)),
    frameMaxMs: round(Math.max(...sample.frames)),
    longTasks: sample.longTasks.length,
    longTaskMaxMs: round(Math.max(0, ...sample.longTasks)),
    pagesFetched: pages,
  };
}

async function main(): Promise<void> {
  const { url, child } = await startServer();
  log(`server at ${url.replace(/#token=.*/, '')}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
    let pages = 0;
    page.on('websocket', (ws) =>
      ws.on('framesent', (f) => {
        if (typeof f.payload === 'string' && f.payload.includes('"searchGallery"')) pages++;
      }),
    );
    await page.goto(url);
    await page.getByTestId('connection').getByText('Connected').waitFor({ timeout: 60_000 });
    await page
      .getByRole('navigation', { name: 'Views' })
      .getByRole('button', { name: 'Gallery', exact: true })
      .click();
    const t0 = Date.now();
    await page.getByTestId('gallery-item').first().waitFor({ timeout: 60_000 });
    const firstPaintMs = Date.now() - t0;
    const total = await page.locator('.viewport').evaluate((v) => v.scrollHeight);
    log(`gallery shown in ${firstPaintMs} ms (sizer ${total} px)`);

    const report: Record<string, unknown> = { firstItemsMs: firstPaintMs };
    pages = 0;
    report.steady = summary(await scroll(page, speed, seconds * 1000), pages);
    log(`steady: ${JSON.stringify(report.steady)}`);

    const jumps: Record<string, unknown> = {};
    for (const fraction of [0.1, 0.5, 0.9, 1]) {
      pages = 0;
      const fillMs = round(await jump(page, fraction));
      const after = summary(await scroll(page, speed, 1000), pages);
      jumps[`${fraction * 100}%`] = { fillMs, ...after };
      log(`jump to ${fraction * 100}%: ${JSON.stringify(jumps[`${fraction * 100}%`])}`);
      // Back a little from the end, so the next scroll has room.
      if (fraction === 1) await jump(page, 0.999);
    }
    report.jumps = jumps;

    await page.locator('.viewport').evaluate((v) => (v.scrollTop = 0));
    pages = 0;
    const search = page.getByPlaceholder('Search prompts…');
    const before = Date.now();
    await search.fill('cat');
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="gallery-item"]')].every((c) =>
          /cat/i.test(c.getAttribute('aria-label') ?? ''),
        ),
      undefined,
      { timeout: 60_000 },
    );
    const searchMs = Date.now() - before;
    report.search = {
      shownMs: searchMs,
      ...summary(await scroll(page, speed, seconds * 1000), pages),
    };
    log(`search "cat": ${JSON.stringify(report.search)}`);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    await browser.close();
    child.kill();
  }
}

await main();
