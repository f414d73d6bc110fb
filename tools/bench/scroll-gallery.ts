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
// The kept library has rows but no files: each image is pointed at one of a few real 256 px
// PNGs and WebP thumbnails written into the data folder (once), so cells load and decode a
// thumbnail as in a real library rather than showing "File missing".
// `--trace`: a Chromium trace of the steady phase, summarised as milliseconds per trace event
// (script, style, layout, paint, image decode) to show where the frame time goes.
// `--profile`: a second steady run under V8's sampling profiler, the costliest functions.
// `--server FILE`: another build's server (e.g. main's out/main/server.mjs), for before/after.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Page, chromium } from '@playwright/test';
import Database from 'better-sqlite3';
import sharp from 'sharp';

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
    trace: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    server: { type: 'string' },
  },
});
const dataDir = values['data-dir'];
if (!dataDir || !fs.existsSync(path.join(dataDir, 'library.sqlite')))
  throw new Error(
    'Give --data-dir, a folder with a library.sqlite (npm run bench:library -- 1000000 --keep).',
  );
const serverEntry = path.resolve(values.server ?? path.join(repoRoot, 'out/main/server.mjs'));
if (!fs.existsSync(serverEntry)) throw new Error('Build first: node scripts/build.mjs');
const seconds = Number(values.seconds);
const speed = Number(values.speed);

/** Sample images written into the data folder, which every image row is given. */
const samples = 48;

/**
 * Gives the library's images real files: a few 256 px PNGs (smooth colour fields with noise),
 * hard-linked to each row's own file name (file names are unique per row), and their WebP
 * thumbnails, which the rows share; each row keeps its own URL, so Chromium fetches and decodes
 * one thumbnail per cell. Without files the host marks every row missing at start and the grid
 * draws "File missing" cells. Done once per kept library (a million links take a minute).
 */
async function ensureFiles(dir: string): Promise<void> {
  const sampleDir = path.join(dir, 'bench-samples');
  fs.mkdirSync(sampleDir, { recursive: true });
  fs.mkdirSync(path.join(dir, 'thumbs', 'bench'), { recursive: true });
  for (let i = 0; i < samples; i++) {
    const thumb = path.join(dir, 'thumbs', 'bench', `${i}.webp`);
    if (fs.existsSync(thumb)) continue;
    const [w, h] = i % 4 === 3 ? [256, 192] : [256, 256];
    const rgb = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const o = (y * w + x) * 3;
        const n = ((x * 7919 + y * 104729 + i * 31) % 61) - 30;
        rgb[o] = Math.max(0, Math.min(255, ((x + i * 13) % 256) + n));
        rgb[o + 1] = Math.max(0, Math.min(255, ((y + i * 29) % 256) + n));
        rgb[o + 2] = Math.max(0, Math.min(255, ((x + y + i * 47) % 256) - n));
      }
    const image = sharp(rgb, { raw: { width: w, height: h, channels: 3 } });
    await image
      .clone()
      .png()
      .toFile(path.join(sampleDir, `${i}.png`));
    await image.webp({ quality: 80 }).toFile(thumb);
  }
  const db = new Database(path.join(dir, 'library.sqlite'));
  try {
    const t0 = performance.now();
    // A marker per row count: checking a million files on every run would take a while.
    const total = (db.prepare('SELECT count(*) AS n FROM images').get() as { n: number }).n;
    const marker = path.join(sampleDir, `linked-${total}`);
    if (fs.existsSync(marker)) return;
    const rows = db.prepare('SELECT rowid, file FROM images').all() as Array<{
      rowid: number;
      file: string;
    }>;
    let linked = 0;
    for (const r of rows) {
      const file = path.join(dir, r.file);
      if (fs.existsSync(file)) continue;
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.linkSync(path.join(sampleDir, `${r.rowid % samples}.png`), file);
      linked++;
    }
    db.prepare(
      `UPDATE images SET thumb = 'thumbs/bench/' || (rowid % ${samples}) || '.webp', missing = 0
       WHERE thumb NOT LIKE 'thumbs/bench/%' OR missing = 1`,
    ).run();
    fs.writeFileSync(marker, '');
    log(`gave ${linked} images sample files (${Math.round(performance.now() - t0)} ms)`);
  } finally {
    db.close();
  }
}

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

interface TraceEvent {
  ph: string;
  name: string;
  pid: number;
  tid: number;
  ts: number;
  dur?: number;
  /** Thread CPU time of the span, where the trace has it. */
  tdur?: number;
  args?: { name?: string };
}

/** The main thread's rendering steps as the trace names them (each counts its whole span). */
const mainThreadSteps = [
  'FunctionCall',
  'UpdateLayoutTree',
  'Layout',
  'HitTest',
  'PrePaint',
  'Paint',
  'Layerize',
  'Commit',
];

/**
 * Where the time of a traced phase went: CPU milliseconds per thread (the top-level tasks'
 * thread time, summed over threads of the same name: the page's main thread, the compositor,
 * raster workers, the GPU/display process), and the main thread's wall milliseconds per
 * rendering step (script, style, layout, hit testing, paint, layerize, commit).
 */
function traceSummary(json: Buffer): {
  cpuMsByThread: Record<string, number>;
  mainThreadMs: Record<string, number>;
} {
  const events = (JSON.parse(json.toString('utf8')) as { traceEvents: TraceEvent[] }).traceEvents;
  const threadName = new Map<string, string>();
  for (const e of events)
    if (e.ph === 'M' && e.name === 'thread_name' && e.args?.name)
      threadName.set(`${e.pid}:${e.tid}`, e.args.name);
  const mainKey = [...threadName].find(([, name]) => name === 'CrRendererMain')?.[0];
  const spans = events
    .filter((e) => e.ph === 'X' && e.dur !== undefined)
    .sort((a, b) => a.ts - b.ts);
  const cpu = new Map<string, number>();
  const steps = new Map<string, number>();
  const openUntil = new Map<string, number>();
  for (const e of spans) {
    const key = `${e.pid}:${e.tid}`;
    if (key === mainKey && mainThreadSteps.includes(e.name))
      steps.set(e.name, (steps.get(e.name) ?? 0) + e.dur!);
    // Top-level spans only (nested ones are inside their parent's time).
    if (e.ts < (openUntil.get(key) ?? -Infinity)) continue;
    openUntil.set(key, e.ts + e.dur!);
    const name = (threadName.get(key) ?? 'unnamed').replace(/\d+$/, '');
    cpu.set(name, (cpu.get(name) ?? 0) + (e.tdur ?? e.dur!));
  }
  const ms = (entries: Iterable<[string, number]>) =>
    Object.fromEntries([...entries].map(([name, us]) => [name, round(us / 1000)]));
  return {
    cpuMsByThread: ms([...cpu].sort((a, b) => b[1] - a[1]).slice(0, 8)),
    mainThreadMs: ms(mainThreadSteps.map((n) => [n, steps.get(n) ?? 0])),
  };
}

interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }>;
  samples: number[];
  timeDeltas: number[];
}

/** Self time in milliseconds of the 15 costliest functions of a V8 CPU profile. */
function profileSummary(profile: CpuProfile): Record<string, number> {
  const frameOf = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const f = frameOf.get(id)!;
    const name = `${f.functionName || '(anonymous)'} ${path.basename(f.url)}:${f.lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
  return Object.fromEntries(top.map(([name, us]) => [name, round(us / 1000)]));
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
  await ensureFiles(dataDir!);
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

    // The machine's load (1-minute average) before and after: frame times mean little without it.
    const report: Record<string, unknown> = {
      loadAverageBefore: round(os.loadavg()[0]),
      firstItemsMs: firstPaintMs,
    };
    pages = 0;
    if (values.trace)
      await browser.startTracing(page, {
        categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'blink'],
      });
    report.steady = summary(await scroll(page, speed, seconds * 1000), pages);
    log(`steady: ${JSON.stringify(report.steady)}`);
    if (values.trace) {
      report.steadyTraceMs = traceSummary(await browser.stopTracing());
      log(`steady trace (ms): ${JSON.stringify(report.steadyTraceMs)}`);
    }
    if (values.profile) {
      // A second steady run under the sampling profiler (it slows the page, so apart).
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
      await cdp.send('Profiler.start');
      await scroll(page, speed, seconds * 1000);
      const { profile } = await cdp.send('Profiler.stop');
      report.steadyProfileSelfMs = profileSummary(profile as CpuProfile);
      log(`steady profile, self ms: ${JSON.stringify(report.steadyProfileSelfMs)}`);
      await cdp.detach();
    }

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
    report.loadAverageAfter = round(os.loadavg()[0]);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    await browser.close();
    child.kill();
  }
}

await main();
