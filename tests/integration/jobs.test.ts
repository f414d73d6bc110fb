// The durable job queue through the real host: the real Library (SQLite, image store), the real
// engine worker, real files; restarts, a SIGKILLed child process, and the headless transport.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { StudioHost } from '../../src/main/api';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { startServer, wsProtocol } from '../../src/main/server/server';
import {
  type EventName,
  GenerationSettings,
  type GenerationInput,
  type JobProgress,
  type QueueState,
} from '../../src/shared';
import { type FixtureInfo, fixtureModel, fixtureModelInfo } from '../fixtures/models';
import { bundleEntry, bundleSource } from './bundle';

let workerPath: string;
let ka: FixtureInfo;
let slowDir: string;
let tmp: string;

beforeAll(async () => {
  // Its own bundle: other suites rebuild engine-worker.mjs while this one runs.
  workerPath = await bundleEntry('src/engine/worker.ts', 'jobs-engine-worker');
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  slowDir = await fixtureModel('worker-tiny', {});
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-jobs-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Opened {
  host: StudioHost;
  events: { name: EventName; payload: unknown }[];
  /** Model ids by fixture name. */
  models: Record<string, string>;
}

async function openHost(
  dataDir: string,
  opts: { engine?: boolean; workerPath?: string } = {},
): Promise<Opened> {
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath: opts.engine === false ? null : (opts.workerPath ?? workerPath),
    log: (line) => (process.env.JOBS_TEST_LOG ? console.error(line) : undefined),
  });
  const events: Opened['events'] = [];
  host.events.subscribe((name, payload) => {
    events.push({ name, payload });
    if (process.env.JOBS_TEST_LOG && name === 'queueChanged')
      for (const j of (payload as QueueState).jobs)
        if (j.state === 'failed') console.error(`failed ${j.id}: ${JSON.stringify(j.error)}`);
  });
  await host.library.ready;
  host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
  const models: Record<string, string> = {};
  for (const m of await host.service.listModels(undefined))
    models[m.path === ka.dir ? 'ka' : m.path === slowDir ? 'slow' : m.name] = m.id;
  return { host, events, models };
}

async function addModels(o: Opened, dirs: Record<string, string>): Promise<void> {
  for (const [name, dir] of Object.entries(dirs))
    o.models[name] = (await o.host.service.addModel({ path: dir })).id;
}

const settings = (over: Partial<GenerationInput>) =>
  GenerationSettings.parse({
    prompt: 'a red house',
    seed: 1,
    sampler: 'euler',
    steps: 6,
    width: 64,
    height: 64,
    ...over,
  } as GenerationInput);

async function enq(o: Opened, over: Partial<GenerationInput>): Promise<string> {
  const before = new Set(o.host.jobs.state().jobs.map((j) => j.id));
  const q = await o.host.service.enqueue({ settings: settings(over) });
  return q.jobs.find((j) => !before.has(j.id))!.id;
}

async function until<T>(what: string, fn: () => T | undefined | false, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const jobOf = (q: QueueState, id: string) => q.jobs.find((j) => j.id === id)!;
const settled = (o: Opened, id: string) =>
  until(`job ${id} to finish`, () => {
    const j = jobOf(o.host.jobs.state(), id);
    return ['done', 'failed', 'cancelled'].includes(j.state) && j;
  });

/** Which known latent x_k a 64 x 64 RGB image shows, and the largest pixel difference. */
function classify(info: FixtureInfo, data: Uint8Array): { k: number; max: number } {
  const s = info.latentSize;
  let best = { k: -1, max: Infinity };
  info.knownLatents!.forEach((z, k) => {
    let max = 0;
    for (let y = 0; y < 64; y++)
      for (let x = 0; x < 64; x++)
        for (let c = 0; c < 3; c++) {
          const v = z[c * s * s + Math.floor(y / 8) * s + Math.floor(x / 8)] / (info.vaeScale * 8);
          const e = Math.round(Math.min(1, Math.max(0, v / 2 + 0.5)) * 255);
          max = Math.max(max, Math.abs(e - data[(y * 64 + x) * 3 + c]));
        }
    if (max < best.max) best = { k, max };
  });
  return best;
}

function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.join(d.parentPath, d.name));
}

describe('job queue through the host', () => {
  it('enqueue -> done: the generation is saved with the settings and shows a known picture', async () => {
    const o = await openHost(path.join(tmp, 'done'));
    try {
      await addModels(o, { ka: ka.dir });
      const id = await enq(o, { model: o.models.ka, seed: 7, batchSize: 2, seedMode: 'per-image' });
      const job = await settled(o, id);
      expect(job).toMatchObject({ state: 'done', error: null, position: null });
      expect(job.step).toBe(job.total);
      const gen = await o.host.service.getGeneration({ id: job.generationId! });
      expect(gen.settings).toMatchObject({
        prompt: 'a red house',
        seed: 7,
        steps: 6,
        batchSize: 2,
      });
      expect(gen.settings.model).toBe(o.models.ka);
      expect(gen.provider).toBe('cpu');
      expect(gen.images.map((i) => i.seed).sort()).toEqual([7, 8]);
      for (const item of gen.images) {
        const { file } = o.host.library.resolveImage(item.imageId);
        const { data } = await sharp(file)
          .removeAlpha()
          .raw()
          .toBuffer({ resolveWithObject: true });
        expect(classify(ka, new Uint8Array(data)).max).toBeLessThanOrEqual(6);
        // Each PNG carries the settings that make exactly that image again.
        const meta = readGenerationMetadata(fs.readFileSync(file));
        expect(meta.source).toBe('latent-studio');
        expect(meta.settings).toMatchObject({ seed: item.seed, batchSize: 1, batchCount: 1 });
      }
      // Events: progress from 'loading' to 'saving', queueChanged through the states.
      const progress = o.events
        .filter((e) => e.name === 'jobProgress')
        .map((e) => e.payload as JobProgress);
      expect(progress[0]).toMatchObject({ jobId: id, stage: 'loading' });
      expect(progress.some((p) => p.stage === 'denoise')).toBe(true);
      expect(progress.at(-1)).toMatchObject({ stage: 'saving', step: job.total });
      const states = o.events
        .filter((e) => e.name === 'queueChanged')
        .map((e) => jobOf(e.payload as QueueState, id)?.state);
      expect(states).toContain('running');
      expect(states.at(-1)).toBe('done');
      expect(o.events.some((e) => e.name === 'galleryChanged')).toBe(true);
      const engine = o.events.filter((e) => e.name === 'engineStatus').map((e) => e.payload);
      expect(engine).toContainEqual(expect.objectContaining({ state: 'generating' }));
      expect(engine.at(-1)).toMatchObject({ state: 'idle', activeProvider: 'cpu' });
    } finally {
      await o.host.close();
    }
  });

  it('throttles progress to about 10 events a second, with small PNG previews', async () => {
    const o = await openHost(path.join(tmp, 'progress'));
    try {
      await addModels(o, { ka: ka.dir });
      const id = await enq(o, { model: o.models.ka, steps: 300 });
      await settled(o, id);
      const progress = o.events
        .filter((e) => e.name === 'jobProgress')
        .map((e) => e.payload as JobProgress);
      const denoise = progress.filter((p) => p.stage === 'denoise');
      const span = denoise.at(-1)!.elapsedMs - denoise[0].elapsedMs;
      expect(denoise.length).toBeLessThanOrEqual(span / 100 + 3);
      const steps = denoise.map((p) => p.step);
      expect([...steps].sort((a, b) => a - b)).toEqual(steps);
      const previews = progress.filter((p) => p.preview);
      expect(previews.length).toBeGreaterThan(0);
      expect(previews[0].preview).toMatch(/^data:image\/png;base64,/);
      const png = Buffer.from(previews[0].preview!.split(',')[1], 'base64');
      expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 8, height: 8 });
    } finally {
      await o.host.close();
    }
  });

  it('refuses an unknown model or image at enqueue with a sentence', async () => {
    const o = await openHost(path.join(tmp, 'bad'));
    try {
      await addModels(o, { ka: ka.dir });
      await expect(enq(o, { model: 'no-such-model' })).rejects.toMatchObject({
        code: 'not-found',
        message: expect.stringMatching(/^The model "no-such-model" is not in the library/),
      });
      await expect(
        enq(o, { model: o.models.ka, mode: 'img2img', initImage: 'gone-image' }),
      ).rejects.toMatchObject({
        code: 'not-found',
        message: expect.stringMatching(/^The source image "gone-image" is not in the library/),
      });
      await expect(
        enq(o, {
          model: o.models.ka,
          mode: 'inpaint',
          initImage: 'x',
          mask: { image: 'y' } as GenerationInput['mask'],
        }),
      ).rejects.toMatchObject({ code: 'not-found' });
      await expect(enq(o, { model: o.models.ka, mode: 'img2img' })).rejects.toMatchObject({
        code: 'invalid-argument',
        message: 'Image-to-image needs a source image: add one first.',
      });
      await expect(
        enq(o, {
          model: o.models.ka,
          controlnets: [{ model: '/tmp/cn.safetensors', image: '/tmp/edges.png' }],
        }),
      ).rejects.toMatchObject({
        code: 'not-found',
        message: `The ControlNet file ${path.resolve('/tmp/cn.safetensors')} does not exist.`,
      });
      await expect(
        o.host.jobs.enqueue({ ...settings({ model: o.models.ka }), steps: 0 }),
      ).rejects.toMatchObject({
        code: 'invalid-argument',
        message: expect.stringMatching(/"steps"/),
      });
      expect(o.host.jobs.state().jobs).toEqual([]);
    } finally {
      await o.host.close();
    }
  });

  it('img2img from an uploaded image', async () => {
    const o = await openHost(path.join(tmp, 'img2img'));
    try {
      await addModels(o, { ka: ka.dir });
      const png = await sharp({
        create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 30, b: 30 } },
      })
        .png()
        .toBuffer();
      const up = await o.host.service.uploadImage({
        data: png.toString('base64'),
        purpose: 'init',
      });
      const id = await enq(o, {
        model: o.models.ka,
        mode: 'img2img',
        initImage: up.imageId,
        strength: 0.6,
      });
      expect(await settled(o, id)).toMatchObject({ state: 'done', error: null });
    } finally {
      await o.host.close();
    }
  });

  it('a job failing in the engine fails with a sentence and the queue goes on', async () => {
    const o = await openHost(path.join(tmp, 'corrupt'));
    try {
      const broken = path.join(tmp, 'broken-ka');
      fs.cpSync(ka.dir, broken, { recursive: true });
      await addModels(o, { ka: ka.dir, broken });
      // Damaged after it was added (a disk error, a bad copy): only the engine finds out.
      fs.writeFileSync(path.join(broken, 'unet', 'model.onnx'), 'not an onnx file');
      const bad = await enq(o, { model: o.models.broken });
      const good = await enq(o, { model: o.models.ka });
      const failed = await settled(o, bad);
      expect(failed).toMatchObject({ state: 'failed', generationId: null });
      expect(failed.error).toEqual({
        code: 'model-corrupt',
        message: expect.stringMatching(/^The model ".+" is damaged: unet\/model\.onnx .*\.$/),
      });
      expect((await settled(o, good)).state).toBe('done');
    } finally {
      await o.host.close();
    }
  });

  it('pauses the queue after 3 engine failures in a row instead of failing every job', async () => {
    // An engine whose worker cannot start: every job would fail the same way.
    const o = await openHost(path.join(tmp, 'broken-engine'), {
      workerPath: path.join(tmp, 'missing-worker.mjs'),
    });
    try {
      await addModels(o, { ka: ka.dir });
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(await enq(o, { model: o.models.ka, seed: i }));
      const state = await until('the queue to pause', () => {
        const q = o.host.jobs.state();
        return q.paused && !q.jobs.some((j) => j.state === 'running') ? q : undefined;
      });
      const byId = new Map(state.jobs.map((j) => [j.id, j]));
      expect(ids.map((id) => byId.get(id)!.state)).toEqual([
        'failed',
        'failed',
        'failed',
        'queued',
        'queued',
      ]);
      expect(byId.get(ids[0])!.error?.message).toMatch(/engine/i);
      const status = await o.host.service.getEngineStatus(undefined);
      expect(status.state).toBe('error');
      expect(status.message).toMatch(/paused after 3 jobs in a row failed/);
      // Resuming clears the message and tries again.
      o.host.service.resumeQueue(undefined);
      expect((await o.host.service.getEngineStatus(undefined)).message).toBeNull();
    } finally {
      await o.host.close();
    }
  });

  it('queued jobs and the paused flag survive a restart, in order, and then run', async () => {
    const dir = path.join(tmp, 'restart');
    let o = await openHost(dir);
    await addModels(o, { ka: ka.dir });
    o.host.service.pauseQueue(undefined);
    const a = await enq(o, { model: o.models.ka, seed: 1 });
    const b = await enq(o, { model: o.models.ka, seed: 2 });
    const c = await enq(o, { model: o.models.ka, seed: 3 });
    let q = o.host.service.moveJob({ id: a, position: 99 }) as QueueState; // clamped: last
    expect(q.jobs.map((j) => [j.id, j.position])).toEqual([
      [b, 0],
      [c, 1],
      [a, 2],
    ]);
    q = o.host.service.moveJob({ id: c, position: 0 }) as QueueState;
    expect(q.jobs.map((j) => j.id)).toEqual([c, b, a]);
    q = o.host.service.cancelJob({ id: b }) as QueueState;
    expect(jobOf(q, b)).toMatchObject({ state: 'cancelled', position: null });
    expect(() => o.host.service.moveJob({ id: b, position: 0 })).toThrow(
      'Only a queued job can be moved; this one is cancelled.',
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(o.host.jobs.busy).toBe(false); // paused: nothing started
    await o.host.close();

    o = await openHost(dir);
    try {
      q = o.host.jobs.state();
      expect(q.paused).toBe(true);
      expect(q.jobs.filter((j) => j.state === 'queued').map((j) => j.id)).toEqual([c, a]);
      expect(jobOf(q, b).state).toBe('cancelled');
      o.host.service.resumeQueue(undefined);
      await settled(o, a);
      q = o.host.jobs.state();
      expect(jobOf(q, c)).toMatchObject({ state: 'done' });
      expect(jobOf(q, a)).toMatchObject({ state: 'done' });
      expect(jobOf(q, c).startedAt!).toBeLessThanOrEqual(jobOf(q, a).startedAt!);
    } finally {
      await o.host.close();
    }
  });

  it('cancels a running job within a couple of steps', async () => {
    const o = await openHost(path.join(tmp, 'cancel'));
    try {
      await addModels(o, { ka: ka.dir, slow: slowDir });
      const id = await enq(o, { model: o.models.slow, steps: 200, width: 128, height: 128 });
      const next = await enq(o, { model: o.models.ka });
      const progress = () =>
        o.events
          .filter((e) => e.name === 'jobProgress')
          .map((e) => e.payload as JobProgress)
          .filter((p) => p.jobId === id && p.stage === 'denoise');
      await until('two steps', () => (progress().at(-1)?.step ?? 0) >= 2);
      const at = jobOf(o.host.service.cancelJob({ id }) as QueueState, id).step;
      const job = await settled(o, id);
      expect(job.state).toBe('cancelled');
      expect(job.step - at).toBeLessThanOrEqual(3);
      expect((await settled(o, next)).state).toBe('done');
    } finally {
      await o.host.close();
    }
  });

  it('pausing lets the running job finish and starts nothing new', async () => {
    const o = await openHost(path.join(tmp, 'pause'));
    try {
      await addModels(o, { ka: ka.dir, slow: slowDir });
      const first = await enq(o, { model: o.models.slow, steps: 12, width: 128, height: 128 });
      const second = await enq(o, { model: o.models.ka });
      await until('first to run', () => jobOf(o.host.jobs.state(), first).state === 'running');
      expect(o.host.service.pauseQueue(undefined)).toMatchObject({ paused: true });
      expect((await settled(o, first)).state).toBe('done');
      await new Promise((r) => setTimeout(r, 300));
      expect(jobOf(o.host.jobs.state(), second).state).toBe('queued');
      o.host.service.resumeQueue(undefined);
      expect((await settled(o, second)).state).toBe('done');
    } finally {
      await o.host.close();
    }
  });

  it('cancelAll cancels every queued job and the running one', async () => {
    const o = await openHost(path.join(tmp, 'cancel-all'));
    try {
      await addModels(o, { ka: ka.dir, slow: slowDir });
      const ids = [
        await enq(o, { model: o.models.slow, steps: 200, width: 128, height: 128 }),
        await enq(o, { model: o.models.ka }),
        await enq(o, { model: o.models.ka, seed: 2 }),
      ];
      await until('the first to run', () => jobOf(o.host.jobs.state(), ids[0]).state === 'running');
      const q = o.host.service.cancelAll(undefined) as QueueState;
      expect(jobOf(q, ids[1]).state).toBe('cancelled');
      for (const id of ids) expect((await settled(o, id)).state).toBe('cancelled');
      expect(o.host.jobs.busy).toBe(false);
    } finally {
      await o.host.close();
    }
  });

  it('at start: a job left running goes to the front; after 3 starts it fails with a sentence; a saved one is done', async () => {
    const dir = path.join(tmp, 'recover');
    let o = await openHost(dir, { engine: false });
    await addModels(o, { ka: ka.dir });
    const queued = await enq(o, { model: o.models.ka, seed: 1 });
    const crashed = await enq(o, { model: o.models.ka, seed: 2 });
    const hopeless = await enq(o, { model: o.models.ka, seed: 3 });
    const db = o.host.library.db;
    const set = db.prepare(
      "UPDATE jobs SET state = 'running', started_at = 1, attempts = ? WHERE id = ?",
    );
    set.run(1, crashed);
    set.run(3, hopeless);
    await o.host.close();

    o = await openHost(dir, { engine: false });
    let q = o.host.jobs.state();
    expect(jobOf(q, crashed)).toMatchObject({ state: 'queued', position: 0, startedAt: null });
    expect(jobOf(q, queued)).toMatchObject({ state: 'queued', position: 1 });
    expect(jobOf(q, hopeless)).toMatchObject({
      state: 'failed',
      error: {
        code: 'interrupted',
        message: 'The app stopped while this job was running (3 times); it was not retried again.',
      },
    });
    await o.host.close();

    o = await openHost(dir);
    try {
      await settled(o, queued);
      q = o.host.jobs.state();
      expect(jobOf(q, crashed).state).toBe('done');
      expect(jobOf(q, crashed).startedAt!).toBeLessThanOrEqual(jobOf(q, queued).startedAt!);
      expect(
        o.host.library.db.prepare('SELECT attempts FROM jobs WHERE id = ?').pluck().get(crashed),
      ).toBe(2);
      // A crash after the library saved the generation (it sets generation_id in the same
      // transaction) and before 'done': the job is done at the next start, not run twice.
      o.host.library.db
        .prepare("UPDATE jobs SET state = 'running', finished_at = NULL WHERE id = ?")
        .run(queued);
    } finally {
      await o.host.close();
    }
    o = await openHost(dir, { engine: false });
    try {
      expect(jobOf(o.host.jobs.state(), queued)).toMatchObject({ state: 'done', error: null });
    } finally {
      await o.host.close();
    }
  });

  it('close() stops the running job at its step and leaves it at the front of the queue', async () => {
    const dir = path.join(tmp, 'close');
    let o = await openHost(dir);
    await addModels(o, { ka: ka.dir, slow: slowDir });
    const running = await enq(o, { model: o.models.slow, steps: 200, width: 128, height: 128 });
    const next = await enq(o, { model: o.models.ka });
    await until('a step', () => jobOf(o.host.jobs.state(), running).step >= 2);
    const t = Date.now();
    await o.host.close();
    expect(Date.now() - t).toBeLessThan(5_000);
    o = await openHost(dir, { engine: false });
    try {
      const q = o.host.jobs.state();
      expect(jobOf(q, running)).toMatchObject({ state: 'queued', position: 0, error: null });
      expect(jobOf(q, next)).toMatchObject({ state: 'queued', position: 1 });
      // A clean shutdown does not count as an attempt.
      expect(
        o.host.library.db.prepare('SELECT attempts FROM jobs WHERE id = ?').pluck().get(running),
      ).toBe(0);
    } finally {
      await o.host.close();
    }
  });

  it('a SIGKILL mid-job: the job is queued again at the next start and completes; no half-written image', async () => {
    const dir = path.join(tmp, 'crash');
    // Prepare the queue without an engine: one long job, one short one after it.
    let o = await openHost(dir, { engine: false });
    await addModels(o, { ka: ka.dir, slow: slowDir });
    const long = await enq(o, { model: o.models.slow, steps: 40, width: 128, height: 128 });
    const short = await enq(o, { model: o.models.ka });
    await o.host.close();

    // A child process runs the host; it is killed while the long job is denoising.
    const child = await spawnHost(dir);
    try {
      const step = await child.waitFor(
        (p) => p.jobId === long && p.stage === 'denoise' && p.step >= 3,
      );
      expect(step.step).toBeLessThan(40);
    } finally {
      child.process.kill('SIGKILL');
      await child.exited;
    }
    expect(child.process.signalCode).toBe('SIGKILL');

    o = await openHost(dir);
    try {
      // Re-queued at the front, ahead of the short job, with the crashed start counted.
      let q = o.host.jobs.state();
      const first = q.jobs.find((j) => j.state === 'running' || j.position === 0)!;
      expect(first.id).toBe(long);
      await settled(o, short);
      q = o.host.jobs.state();
      expect(jobOf(q, long)).toMatchObject({ state: 'done', error: null });
      expect(jobOf(q, short).state).toBe('done');
      const attempts = o.host.library.db
        .prepare('SELECT attempts FROM jobs WHERE id = ?')
        .pluck()
        .get(long);
      expect(attempts).toBe(2);
      // Exactly the images of the two generations, each a whole PNG; no temp files.
      const files = listFiles(path.join(dir, 'images'));
      expect(files).toHaveLength(2);
      for (const f of files) {
        expect(path.basename(f).startsWith('.')).toBe(false);
        const meta = await sharp(f).metadata();
        expect(meta.format).toBe('png');
      }
      const rows = o.host.library.db.prepare('SELECT count(*) FROM images').pluck().get();
      expect(rows).toBe(2);
    } finally {
      await o.host.close();
    }
  });

  /** The library's rows and files of `dir` as a killed host left them (read before a restart). */
  function leftBehind(dir: string) {
    const db = new Database(path.join(dir, 'library.sqlite'), { readonly: true });
    try {
      const one = (sql: string) => db.prepare(sql).pluck().get();
      return {
        images: one('SELECT count(*) FROM images'),
        pending: one('SELECT count(*) FROM pending_saves'),
        jobState: one('SELECT state FROM jobs'),
        pngs: listFiles(path.join(dir, 'images')).filter((f) => f.endsWith('.png')).length,
      };
    } finally {
      db.close();
    }
  }

  /** One generation of the job's images, each a whole file of a row; nothing quarantined. */
  async function expectOneGeneration(o: Opened, dir: string, job: string, images: number) {
    const db = o.host.library.db;
    const q = o.host.jobs.state();
    expect(jobOf(q, job)).toMatchObject({ state: 'done', error: null });
    expect(db.prepare('SELECT count(*) FROM generations').pluck().get()).toBe(1);
    expect(db.prepare('SELECT id FROM generations').pluck().get()).toBe(jobOf(q, job).generationId);
    expect(db.prepare('SELECT job_id FROM generations').pluck().get()).toBe(job);
    const rows = db.prepare('SELECT file FROM images').pluck().all() as string[];
    expect(rows).toHaveLength(images);
    const files = listFiles(path.join(dir, 'images'));
    expect(files.map((f) => path.relative(dir, f).split(path.sep).join('/')).sort()).toEqual(
      [...rows].sort(),
    );
    for (const f of files) expect((await sharp(f).metadata()).format).toBe('png');
    expect(fs.existsSync(path.join(dir, 'quarantine'))).toBe(false);
    expect(db.prepare('SELECT count(*) FROM pending_saves').pluck().get()).toBe(0);
  }

  it('a SIGKILL after the images are written, before their rows: the next start finishes the save; the job is done, not run again', async () => {
    const dir = path.join(tmp, 'crash-before-commit');
    let o = await openHost(dir, { engine: false });
    await addModels(o, { ka: ka.dir });
    const job = await enq(o, { model: o.models.ka, batchSize: 2, prompt: 'kept once' });
    await o.host.close();

    // The child kills itself (SIGKILL) at the crash point: files written, rows not committed.
    const child = await spawnHost(dir, 'before-commit');
    await until('the child to be killed', () => child.process.signalCode !== null, 120_000);
    expect(child.process.signalCode).toBe('SIGKILL');
    expect(leftBehind(dir)).toEqual({ images: 0, pending: 1, jobState: 'running', pngs: 2 });

    o = await openHost(dir);
    try {
      await expectOneGeneration(o, dir, job, 2);
      expect(o.host.library.db.prepare('SELECT attempts FROM jobs').pluck().get()).toBe(1);
      // Given time to start, the queue runs nothing: the job is not run a second time.
      await new Promise((r) => setTimeout(r, 1500));
      expect(o.events.some((e) => e.name === 'jobProgress')).toBe(false);
      const page = await o.host.service.searchGallery({
        text: 'kept once',
        sort: 'newest',
        limit: 10,
      });
      expect(page).toMatchObject({ total: 2, totalExact: true });
    } finally {
      await o.host.close();
    }
  });

  it('a SIGKILL between the image files of a save: the next start removes the part written and runs the job again, once', async () => {
    const dir = path.join(tmp, 'crash-mid-save');
    let o = await openHost(dir, { engine: false });
    await addModels(o, { ka: ka.dir });
    const job = await enq(o, { model: o.models.ka, batchSize: 2 });
    await o.host.close();

    const child = await spawnHost(dir, 'second-image');
    await until('the child to be killed', () => child.process.signalCode !== null, 120_000);
    expect(child.process.signalCode).toBe('SIGKILL');
    expect(leftBehind(dir)).toEqual({ images: 0, pending: 1, jobState: 'running', pngs: 1 });

    o = await openHost(dir);
    try {
      await settled(o, job);
      await expectOneGeneration(o, dir, job, 2);
      expect(o.host.library.db.prepare('SELECT attempts FROM jobs').pluck().get()).toBe(2);
    } finally {
      await o.host.close();
    }
  });

  it('enqueue over the headless transport: queueChanged and jobProgress arrive on the WebSocket', async () => {
    const dir = path.join(tmp, 'server');
    const o = await openHost(dir);
    const rendererDir = path.join(dir, 'renderer');
    fs.mkdirSync(rendererDir, { recursive: true });
    fs.writeFileSync(path.join(rendererDir, 'index.html'), '<!doctype html><title>t</title>');
    const server = await startServer({ host: o.host, port: 0, rendererDir });
    try {
      await addModels(o, { ka: ka.dir });
      const ws = new WebSocket(`${server.url.replace('http', 'ws')}/api/ws`, [
        wsProtocol,
        `token.${server.token}`,
      ]);
      const messages: {
        type: string;
        id?: number;
        event?: string;
        payload?: unknown;
        response?: { ok: boolean; value?: unknown; error?: { code: string; message: string } };
      }[] = [];
      ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      ws.send(
        JSON.stringify({
          type: 'call',
          id: 1,
          method: 'enqueue',
          input: {
            settings: {
              model: o.models.ka,
              prompt: 'over the wire',
              seed: 4,
              steps: 8,
              width: 64,
              height: 64,
            },
          },
        }),
      );
      const reply = await until('the enqueue reply', () =>
        messages.find((m) => m.type === 'result' && m.id === 1),
      );
      expect(reply.response?.ok).toBe(true);
      const id = (reply.response!.value as QueueState).jobs[0].id;
      await until('done over the wire', () =>
        messages.some(
          (m) =>
            m.type === 'event' &&
            m.event === 'queueChanged' &&
            (m.payload as QueueState).jobs.some((j) => j.id === id && j.state === 'done'),
        ),
      );
      const progress = messages
        .filter((m) => m.type === 'event' && m.event === 'jobProgress')
        .map((m) => m.payload as JobProgress);
      expect(progress.length).toBeGreaterThan(0);
      expect(progress.every((p) => p.jobId === id)).toBe(true);
      expect(progress.some((p) => p.stage === 'denoise')).toBe(true);
      expect(messages.some((m) => m.type === 'event' && m.event === 'galleryChanged')).toBe(true);

      // A bad enqueue answers a clear error over the wire.
      ws.send(
        JSON.stringify({
          type: 'call',
          id: 2,
          method: 'enqueue',
          input: { settings: { model: 'nope', prompt: 'x', seed: 1 } },
        }),
      );
      const bad = await until('the error reply', () =>
        messages.find((m) => m.type === 'result' && m.id === 2),
      );
      expect(bad.response).toMatchObject({
        ok: false,
        error: { code: 'not-found', message: expect.stringMatching(/The model "nope"/) },
      });
      ws.close();
    } finally {
      await server.close();
      await o.host.close().catch(() => {});
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A host in a child process (for the SIGKILL test)

const childSource = `
import { StudioHost } from './src/main/api';
const [dataDir, workerPath, crash] = process.argv.slice(2);
const host = new StudioHost({ shell: 'headless', dataDir, version: 'test', workerPath, log: () => {} });
// Crash points: kill -9 of this process at an exact place of a save.
if (crash === 'before-commit') host.library.beforeCommit = () => process.kill(process.pid, 'SIGKILL');
let pngWrites = 0;
if (crash === 'second-image')
  host.library.store.beforeWrite = (target) => {
    if (target.endsWith('.png') && ++pngWrites === 2) process.kill(process.pid, 'SIGKILL');
  };
host.events.subscribe((name, payload) => {
  if (name === 'jobProgress') process.stdout.write(JSON.stringify(payload) + '\\n');
});
setInterval(() => {}, 1000);
`;

async function spawnHost(dataDir: string, crash = '') {
  const outfile = await bundleSource(childSource, 'jobs-child');
  const proc: ChildProcess = spawn(process.execPath, [outfile, dataDir, workerPath, crash], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const seen: JobProgress[] = [];
  let stderr = '';
  let buffer = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buffer += d.toString();
    const lines = buffer.split('\n');
    buffer = lines.pop()!;
    for (const line of lines) if (line.trim()) seen.push(JSON.parse(line) as JobProgress);
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    process: proc,
    exited,
    waitFor: (pred: (p: JobProgress) => boolean) =>
      until(`child progress (stderr: ${stderr.slice(-500)})`, () => {
        if (proc.exitCode !== null) throw new Error(`the child exited: ${stderr.slice(-500)}`);
        return seen.find(pred);
      }),
  };
}
