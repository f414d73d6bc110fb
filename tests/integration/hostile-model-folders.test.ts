// Hostile model folders (issue 14 item 2): every file the inspector reads replaced by a symlink to
// /dev/zero, a FIFO, an oversize file or a folder; external weights named outside the model
// folder. Each gives a clear sentence naming the file, promptly, and the host keeps answering.
// Real files in temp folders, a real SQLite library; the headless server's own process case is
// in hostile-model-server.test.ts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors';
import {
  fileLimits,
  inspectFolder,
  inspectFolderInWorker,
  openModelFolder,
  type FileKind,
} from '../../src/engine/models';
import { ClipTokenizer } from '../../src/engine/tokenizer';
import { inspectModel } from '../../src/main/models/models';
import type { Library } from '../../src/main/library/service';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { worstLagWhile } from './event-loop-lag';
import { openLibrary, tempDir } from './library-helpers';

const spec = { layout: 'optimum', externalWeights: true } as const;
let source: string;
let root: string;
let library: Library;
let workerPath: string;

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'hostile-folders/engine-worker');
  source = await fixtureModel('hostile-sd15-optimum', spec);
  root = tempDir('ls-hostile-');
  ({ library } = await openLibrary(path.join(root, 'data')));
});
afterAll(() => {
  library.close();
  fs.rmSync(root, { recursive: true, force: true });
});

let copies = 0;
/** A private copy of a fixture model (by default the SD 1.5 one), safe to break. */
function copyModel(from = source): string {
  const dir = path.join(root, `model-${++copies}`);
  fs.cpSync(from, dir, { recursive: true });
  return dir;
}

type Hostile = 'dev-zero' | 'fifo' | 'oversize' | 'folder';

/** Replaces `file` in `dir` by a hostile thing of `kind`; returns what the message must say. */
function plant(dir: string, file: string, hostile: Hostile, cap: FileKind): RegExp {
  const p = path.join(dir, file);
  fs.rmSync(p, { force: true, recursive: true });
  const name = file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  switch (hostile) {
    case 'dev-zero':
      fs.symlinkSync('/dev/zero', p);
      return new RegExp(`${name} is a device, not a regular file`);
    case 'fifo':
      expect(spawnSync('mkfifo', [p]).status).toBe(0);
      return new RegExp(`${name} is a named pipe, not a regular file`);
    case 'oversize':
      // Sparse: one byte past the cap costs no disk.
      fs.writeFileSync(p, '{');
      fs.truncateSync(p, fileLimits[cap].bytes + 1);
      return new RegExp(
        `${name} is [\\d,]+ bytes, too large for .* \\(at most [\\d.]+ [KMG]iB\\); it was not read\\.$`,
      );
    case 'folder':
      fs.mkdirSync(p);
      return new RegExp(`${name} is a folder, not a file`);
  }
}

/** Every file the inspector reads, with the cap of its kind. */
const files: Array<[string, FileKind]> = [
  ['model_index.json', 'json'],
  ['scheduler/scheduler_config.json', 'json'],
  ['unet/config.json', 'json'],
  ['vae_decoder/config.json', 'json'],
  ['unet/model.onnx', 'onnx'],
  ['text_encoder/model.onnx', 'onnx'],
  ['vae_decoder/model.onnx', 'onnx'],
  ['tokenizer/vocab.json', 'tokenizer'],
  ['tokenizer/merges.txt', 'tokenizer'],
  ['tokenizer/tokenizer.json', 'tokenizer'],
  ['tokenizer/special_tokens_map.json', 'json'],
  ['tokenizer/tokenizer_config.json', 'json'],
  ['about.json', 'about'],
  ['README.md', 'card'],
  ['MODEL_CARD.md', 'card'],
  ['unet/model.onnx_data', 'weights'],
];
const hostiles: Hostile[] = ['dev-zero', 'fifo', 'oversize', 'folder'];
// Cards are read up to their cap (the start is what is shown), weights are only sized: neither
// is refused for its size. Both are covered by their own tests below.
const cases = files.flatMap(([file, cap]) =>
  hostiles
    .filter((h) => h !== 'oversize' || (cap !== 'card' && cap !== 'weights'))
    .map((hostile) => ({ file, cap, hostile })),
);

describe('a model folder with a hostile file', () => {
  it.each(cases)(
    '$file as $hostile: a clear error naming it, and the host keeps answering',
    async ({ file, cap, hostile }) => {
      const dir = copyModel();
      const expected = plant(dir, file, hostile, cap);
      const before = library.listModels().length;
      const adding = library.addModel(dir);
      const lag = await worstLagWhile(adding);
      await expect(adding).rejects.toMatchObject({ code: 'model', message: expected });
      const message = await adding.catch((e: Error) => e.message);
      expect(message).toMatch(/\.$/);
      expect(message).not.toMatch(/\n/);
      // The cheap calls answered throughout; nothing was added.
      expect(lag).toBeLessThan(1000);
      expect(library.listModels()).toHaveLength(before);
    },
    20_000,
  );

  // Files only some families have: the x4 upscaler's, SDXL's second encoder and tokenizer.
  const familyFiles: Array<{ family: 'x4' | 'sdxl'; file: string; cap: FileKind }> = [
    { family: 'x4', file: 'low_res_scheduler/scheduler_config.json', cap: 'json' },
    { family: 'x4', file: 'vae/model.onnx', cap: 'onnx' },
    { family: 'sdxl', file: 'text_encoder_2/model.onnx', cap: 'onnx' },
    { family: 'sdxl', file: 'tokenizer_2/vocab.json', cap: 'tokenizer' },
  ];
  it.each(familyFiles.flatMap((f) => hostiles.map((hostile) => ({ ...f, hostile }))))(
    '$family: $file as $hostile is named',
    async ({ family, file, cap, hostile }) => {
      const dir = copyModel(
        await fixtureModel(`fam-${family}-diffusers`, { family, layout: 'diffusers' }),
      );
      const expected = plant(dir, file, hostile, cap);
      const adding = library.addModel(dir);
      expect(await worstLagWhile(adding)).toBeLessThan(1000);
      await expect(adding).rejects.toMatchObject({ code: 'model', message: expected });
    },
    20_000,
  );

  it.each(hostiles.filter((h) => h !== 'oversize'))(
    'the engine names the file too (unet/model.onnx as %s)',
    async (hostile) => {
      const dir = copyModel();
      plant(dir, 'unet/model.onnx', hostile, 'onnx');
      const err = await openModelFolder(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineError);
      expect(err).toMatchObject({ code: 'model-corrupt', file: 'unet/model.onnx' });
    },
  );

  it.each(['dev-zero', 'fifo', 'oversize', 'folder'] as const)(
    'the tokenizer (token counts, the worker) refuses vocab.json as %s',
    async (hostile) => {
      const dir = copyModel();
      const expected = plant(dir, 'tokenizer/vocab.json', hostile, 'tokenizer');
      await expect(ClipTokenizer.fromFolder(path.join(dir, 'tokenizer'))).rejects.toThrow(expected);
    },
  );

  it('says how large an oversize file is, and never reads it', async () => {
    const dir = copyModel();
    const index = path.join(dir, 'model_index.json');
    fs.truncateSync(index, 5 * 1024 ** 3); // 5 GiB, sparse
    await expect(library.addModel(dir)).rejects.toMatchObject({
      code: 'model',
      message:
        'model_index.json is 5.0 GiB, too large for a JSON config (at most 4.0 MiB); it was not read.',
    });
  });

  it('reads only the start of a huge model card, and uses it', async () => {
    const dir = copyModel();
    const card = path.join(dir, 'README.md');
    fs.writeFileSync(card, '# Hostile\n\nA tiny model for the tests.\n\nMore text.\n');
    fs.truncateSync(card, 8 * 1024 * 1024 * 1024); // 8 GiB, sparse
    const entry = await library.addModel(dir);
    expect(entry).toMatchObject({ status: 'ok', description: 'A tiny model for the tests.' });
    library.models.removeModel(entry.id);
  });

  it('keeps symlinks to regular files working (a Hugging Face cache snapshot)', async () => {
    // hub/models--x/blobs/<files> and snapshots/<rev>/... -> ../../blobs/<file>, as the hub does.
    const hub = path.join(root, 'hub');
    const blobs = path.join(hub, 'blobs');
    const snapshot = path.join(hub, 'snapshots', 'rev1');
    fs.mkdirSync(blobs, { recursive: true });
    let n = 0;
    const walk = (rel: string): void => {
      for (const e of fs.readdirSync(path.join(source, rel), { withFileTypes: true })) {
        const r = path.join(rel, e.name);
        if (e.isDirectory()) {
          fs.mkdirSync(path.join(snapshot, r), { recursive: true });
          walk(r);
          continue;
        }
        const blob = `blob${++n}`;
        fs.copyFileSync(path.join(source, r), path.join(blobs, blob));
        const link = path.join(snapshot, r);
        fs.symlinkSync(path.relative(path.dirname(link), path.join(blobs, blob)), link);
      }
    };
    fs.mkdirSync(snapshot, { recursive: true });
    walk('');
    expect(fs.lstatSync(path.join(snapshot, 'unet', 'model.onnx')).isSymbolicLink()).toBe(true);
    const entry = await library.addModel(snapshot);
    expect(entry).toMatchObject({ status: 'ok', family: 'sd1' });
    await expect(ClipTokenizer.fromFolder(path.join(snapshot, 'tokenizer'))).resolves.toBeTruthy();
    library.models.removeModel(entry.id);
  });
});

/** unet/model.onnx with its external data location ("model.onnx_data") rewritten in place. */
function withWeightsAt(location: string): string {
  const dir = copyModel();
  const file = path.join(dir, 'unet', 'model.onnx');
  const bytes = fs.readFileSync(file);
  const from = Buffer.from('model.onnx_data');
  const to = Buffer.from(location);
  // Same length, so every enclosing protobuf length stays right.
  expect(to.length).toBe(from.length);
  let at = bytes.indexOf(from);
  expect(at).toBeGreaterThan(0);
  while (at >= 0) {
    to.copy(bytes, at);
    at = bytes.indexOf(from, at + 1);
  }
  fs.writeFileSync(file, bytes);
  return dir;
}

describe('external weights outside the model folder', () => {
  it.each([
    ['an absolute path', '/etc/////passwd'],
    ['a path up and out', '../../etc/hosts'],
  ])('are refused at inspection: %s', async (_what, location) => {
    const dir = withWeightsAt(location);
    const outside = path.resolve(dir, 'unet', location);
    const size = fs.existsSync(outside) ? fs.statSync(outside).size : -1;
    const err = await openModelFolder(dir).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'model-corrupt',
      file: 'unet/model.onnx',
      message: `unet/model.onnx keeps weights at "${location}", outside unet/; external weights must sit in the model file's own folder.`,
    });
    // Nothing about the outside file leaks: not its size, not whether it exists.
    expect((err as Error).message).not.toContain(String(size));
    await expect(library.addModel(dir)).rejects.toMatchObject({
      code: 'model',
      message: expect.stringMatching(/outside unet\//),
    });
    expect(library.listModels().some((m) => m.path === dir)).toBe(false);
  });
});

describe('inspection off the host thread, with a time limit', () => {
  it('reads a folder in a worker thread exactly as in this one', async () => {
    const here = await inspectFolder(source);
    const there = await inspectFolderInWorker(workerPath, source, { timeLimitMs: 30_000 });
    expect(there).toEqual(here);
    expect(there.family.family).toBe('sd1');
  });

  it('names a hostile file from the worker thread too, and the host keeps answering', async () => {
    const dir = copyModel();
    plant(dir, 'unet/model.onnx', 'fifo', 'onnx');
    const inspecting = inspectModel(dir, { workerPath });
    expect(await worstLagWhile(inspecting)).toBeLessThan(1000);
    await expect(inspecting).rejects.toMatchObject({
      code: 'model',
      message:
        'unet/model.onnx is a named pipe, not a regular file; a model folder holds regular files only.',
    });
  });

  it('gives up after the time limit with a sentence', async () => {
    await expect(inspectModel(source, { workerPath, timeLimitMs: 1 })).rejects.toMatchObject({
      code: 'model',
      message: `${path.basename(source)} took longer than 1 ms to inspect; check that its files are readable and on a local disk.`,
    });
    await expect(
      inspectFolderInWorker(workerPath, source, { timeLimitMs: 1 }),
    ).rejects.toMatchObject({
      code: 'model-corrupt',
      message: expect.stringMatching(/took longer/),
    });
  });

  it('stops reading a crafted ONNX header of millions of tiny fields', async () => {
    const dir = copyModel();
    // ir_version, then 6 million unknown one-byte varint fields (field 15): 12 MB, no graph.
    const body = Buffer.alloc(2 + 6_000_000 * 2);
    body[0] = 0x08;
    body[1] = 0x07;
    for (let i = 2; i < body.length; i += 2) body[i] = 0x78;
    fs.writeFileSync(path.join(dir, 'unet', 'model.onnx'), body);
    const inspecting = inspectModel(dir, { workerPath });
    expect(await worstLagWhile(inspecting)).toBeLessThan(1000);
    await expect(inspecting).rejects.toMatchObject({
      code: 'model',
      message: 'unet/model.onnx is not an ONNX model (its header has more than 5,000,000 fields).',
    });
  });
});
