// Model folders: inspection, family detection, signatures read from sessions, external weights,
// broken files, execution provider fallback and the session cache, on fixture models built in
// the real on-disk formats (tests/fixtures/models.ts). Broken-file cases work on temp copies.
import { cp, mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import {
  EngineError,
  shortReason,
  wrapRunError,
  wrapSessionCreateError,
} from '../../src/engine/errors';
import {
  SessionCache,
  chooseProviders,
  createSession,
  detectFamily,
  loadModel,
  openModelFolder,
  readOnnxHeader,
  sessionCache,
  validateSignature,
  type ModelFamily,
  type SessionKey,
} from '../../src/engine/models';
import { familyCapabilities } from '../../src/shared';
import {
  fixtureModel,
  isXLFixture,
  loadFixtureInfo,
  type FixtureFamily,
  type FixtureSpec,
} from '../fixtures/models';

const EXPECTED_FAMILY: Record<FixtureFamily, ModelFamily> = {
  sd15: 'sd1',
  sd21v: 'sd2-v',
  sdturbo: 'sd-turbo',
  lcm: 'lcm',
  sdxl: 'sdxl',
  inpaint: 'inpaint',
  'sdxl-inpaint': 'sdxl-inpaint',
  x4: 'x4-upscaler',
};

const temps: string[] = [];
afterAll(async () => {
  await sessionCache.releaseAll();
  await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
});

/** A private copy of a cached fixture, safe to break. */
async function tempCopy(name: string, spec: FixtureSpec): Promise<string> {
  const src = await fixtureModel(name, spec);
  const dir = await mkdtemp(path.join(tmpdir(), 'latent-models-'));
  temps.push(dir);
  const dst = path.join(dir, 'model');
  await cp(src, dst, { recursive: true });
  return dst;
}

/** Run `fn`, expect an EngineError, return it. */
async function engineError(fn: () => Promise<unknown>): Promise<EngineError> {
  let caught: unknown;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected an EngineError').toBeInstanceOf(EngineError);
  const e = caught as EngineError;
  // One sentence for a person: no stack lines, no newlines, no native source paths.
  expect(e.message).not.toMatch(/\n|\s+at\s+\S+:\d+|onnxruntime_src/);
  expect(e.message).toMatch(/\.$/);
  return e;
}

describe('family detection', () => {
  const cases = (Object.keys(EXPECTED_FAMILY) as FixtureFamily[]).flatMap((family) =>
    (['diffusers', 'optimum'] as const).map((layout) => ({ family, layout })),
  );

  test.each(cases)('$family in the $layout layout', async ({ family, layout }) => {
    const dir = await fixtureModel(`fam-${family}-${layout}`, { family, layout });
    const fx = await loadFixtureInfo(dir);
    const info = await openModelFolder(dir);
    expect(info.layout).toBe(layout);
    const f = detectFamily(info);
    expect(f.family).toBe(EXPECTED_FAMILY[family]);
    expect(f.unetInChannels).toBe(fx.unetChannels);
    expect(f.contextDim).toBe(fx.ctx);
    expect(f.predictionType).toBe(fx.prediction);
    expect(f.vaeScalingFactor).toBe(fx.vaeScale);
    expect(f.sdxlConditioning).toBe(isXLFixture(family));
    expect(f.classLabels).toBe(family === 'x4');
    expect(f.timestepCondDim).toBe(family === 'lcm' ? 256 : null);
    expect(f.latentScale).toBe(family === 'x4' ? 4 : 8);
    // What the studio may use it for follows from the UNet the engine found (src/shared).
    expect(familyCapabilities(f.family)).toEqual({
      generate: fx.unetChannels !== 7,
      inpaint: fx.unetChannels === 9,
      upscale: fx.unetChannels === 7,
    });
    if (layout === 'optimum') {
      // optimum writes unet/config.json: sample_size in latents (x4: latents = low-res pixels).
      const px = family === 'x4' ? fx.latentSize : fx.latentSize * 8;
      expect(f.nativeSize).toEqual({ width: px, height: px });
      expect(f.reasons.join(' | ')).toContain('unet/config.json');
    } else {
      const defaults: Record<FixtureFamily, number> = {
        sd15: 512,
        sd21v: 768,
        sdturbo: 512,
        lcm: 512,
        sdxl: 1024,
        inpaint: 512,
        'sdxl-inpaint': 1024,
        x4: 128,
      };
      expect(f.nativeSize.width).toBe(defaults[family]);
    }
    expect(f.reasons.length).toBeGreaterThan(2);

    // What the folder reader found.
    expect(info.schedulerConfig._class_name).toBeTypeOf('string');
    expect(info.tokenizers.tokenizer?.vocabPath).toMatch(/tokenizer[/\\]vocab\.json$/);
    if (isXLFixture(family)) {
      expect(info.components.text_encoder_2).toBeDefined();
      expect(info.tokenizers.tokenizer_2).toBeDefined();
      expect(info.extras.forceZerosForEmptyPrompt).toBe(true);
    }
    if (family === 'x4') {
      expect(info.components.vae?.file).toBe('vae/model.onnx');
      expect(info.components.vae_decoder).toBeUndefined();
      expect(info.lowResSchedulerConfig?._class_name).toBe('DDPMScheduler');
      expect(info.extras.maxNoiseLevel ?? 350).toBe(350);
    }
  });

  test('the family is decided again from the sessions, and agrees', async () => {
    const dir = await fixtureModel('fam-sdxl-optimum', { family: 'sdxl', layout: 'optimum' });
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      expect(m.family).toEqual(detectFamily(m.info));
      expect(m.tokenizerDirs.tokenizer_2).toMatch(/tokenizer_2$/);
    } finally {
      await m.release();
    }
  });
});

describe('signatures', () => {
  const variants: FixtureSpec[] = [
    { layout: 'diffusers', inputIds: 'int32', timestep: 'float', dtype: 'float32' },
    { layout: 'optimum', inputIds: 'int64', timestep: 'int64', dtype: 'float32' },
    { layout: 'optimum', inputIds: 'int64', timestep: 'scalar', dtype: 'float32' },
    { layout: 'diffusers', inputIds: 'int32', timestep: 'float', dtype: 'float16' },
    { layout: 'optimum', inputIds: 'int64', timestep: 'scalar', dtype: 'float16' },
  ];

  test.each(variants)('$layout ids=$inputIds timestep=$timestep $dtype', async (spec) => {
    const dir = await fixtureModel(
      `sig-${spec.layout}-${spec.inputIds}-${spec.timestep}-${spec.dtype}`,
      { family: 'sdxl', ...spec },
    );
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      await m.session('text_encoder');
      await m.session('text_encoder_2');
      await m.session('vae_encoder');
      const float = spec.dtype!;
      const unet = m.signatures.unet!;
      const byName = (n: string) => unet.inputs.find((i) => i.name === n)!;
      expect(byName('sample')).toMatchObject({ type: float });
      expect(byName('sample').shape).toHaveLength(4);
      expect(byName('timestep').type).toBe(spec.timestep === 'int64' ? 'int64' : float);
      expect(byName('timestep').shape).toHaveLength(spec.timestep === 'scalar' ? 0 : 1);
      expect(byName('encoder_hidden_states').type).toBe(float);
      expect(byName('encoder_hidden_states').shape).toHaveLength(3);
      expect(byName('text_embeds').shape).toHaveLength(2);
      expect(byName('time_ids')).toMatchObject({ type: float });
      for (const te of ['text_encoder', 'text_encoder_2'] as const) {
        expect(m.signatures[te]!.inputs).toEqual([
          expect.objectContaining({ name: 'input_ids', type: spec.inputIds }),
        ]);
      }
      expect(m.signatures.vae_decoder!.inputs[0]).toMatchObject({
        name: 'latent_sample',
        type: float,
      });
      expect(m.signatures.vae_encoder!.inputs[0]).toMatchObject({ name: 'sample', type: float });

      // The header reader (used before any session exists) agrees with ONNX Runtime exactly.
      for (const name of [
        'unet',
        'text_encoder',
        'text_encoder_2',
        'vae_encoder',
        'vae_decoder',
      ] as const) {
        const header = readOnnxHeader(m.info.components[name]!.modelPath);
        expect({ inputs: header.inputs, outputs: header.outputs }, name).toEqual(
          m.signatures[name],
        );
      }
    } finally {
      await m.release();
    }
  });

  test('a wrong rank or dtype names the model, the input, what was expected and what was found', () => {
    const sig = {
      inputs: [
        { name: 'sample', type: 'float32' as const, shape: ['batch', 4, 64] },
        { name: 'timestep', type: 'float32' as const, shape: ['batch'] },
        { name: 'encoder_hidden_states', type: 'float32' as const, shape: ['batch', 77, 768] },
      ],
      outputs: [{ name: 'out_sample', type: 'float32' as const, shape: ['batch', 4, 64, 64] }],
    };
    expect(() => validateSignature('unet', sig, 'unet/model.onnx')).toThrow(
      'unet/model.onnx input "sample" should be rank 4 [batch,channels,height,width] of float32/float16 but is rank 3 float32 [batch,4,64].',
    );
    const ids = {
      inputs: [{ name: 'input_ids', type: 'float32' as const, shape: ['batch', 77] }],
      outputs: sig.outputs,
    };
    try {
      validateSignature('text_encoder', ids, 'text_encoder/model.onnx');
      expect.unreachable();
    } catch (e) {
      expect((e as EngineError).code).toBe('model-shape');
      expect((e as EngineError).message).toContain(
        'input "input_ids" should be rank 2 [batch,77] of int32/int64 but is rank 2 float32',
      );
    }
    const extra = {
      ...sig,
      inputs: [
        ...sig.inputs.slice(1),
        sig.inputs[0],
        { name: 'down_block_res_0', type: 'float32' as const, shape: [1] },
      ],
    };
    extra.inputs[2] = { name: 'sample', type: 'float32', shape: ['b', 4, 'h', 'w'] };
    expect(() => validateSignature('unet', extra, 'unet/model.onnx')).toThrow(
      /does not know how to feed: down_block_res_0/,
    );
  });
});

describe('external weights', () => {
  test.each([
    ['diffusers', 'unet/weights.pb'],
    ['optimum', 'unet/model.onnx_data'],
  ] as const)('%s: %s is found, checked and loaded by path', async (layout, weights) => {
    const dir = await fixtureModel(`ext-${layout}`, {
      family: 'sd15',
      layout,
      externalWeights: true,
    });
    const info = await openModelFolder(dir);
    const unet = info.components.unet!;
    expect(unet.externalData.map((w) => w.file)).toEqual([weights]);
    expect(unet.externalData[0].bytes).toBeGreaterThan(10_000);
    expect(unet.bytes).toBe(unet.externalData[0].bytes + (await readFile(unet.modelPath)).length);
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      expect(m.provider).toBe('cpu');
      expect(m.signatures.unet!.inputs.map((i) => i.name)).toEqual([
        'sample',
        'timestep',
        'encoder_hidden_states',
      ]);
    } finally {
      await m.release();
    }
  });

  test('missing external weights are named before any session is made', async () => {
    const dir = await tempCopy('ext-diffusers', {
      family: 'sd15',
      layout: 'diffusers',
      externalWeights: true,
    });
    await unlink(path.join(dir, 'unet', 'weights.pb'));
    const e = await engineError(() => openModelFolder(dir));
    expect(e.code).toBe('model-missing-file');
    expect(e.file).toBe('unet/weights.pb');
    expect(e.message).toMatch(
      /^unet\/weights\.pb is missing: unet\/model\.onnx keeps \d+ weight tensors in it\.$/,
    );
  });

  test('truncated external weights are named', async () => {
    const dir = await tempCopy('ext-optimum', {
      family: 'sd15',
      layout: 'optimum',
      externalWeights: true,
    });
    await truncate(path.join(dir, 'unet', 'model.onnx_data'), 1000);
    const e = await engineError(() => loadModel(dir, { provider: 'cpu' }));
    expect(e.code).toBe('model-corrupt');
    expect(e.file).toBe('unet/model.onnx_data');
    expect(e.message).toMatch(
      /^unet\/model\.onnx_data is truncated: it has 1000 bytes but unet\/model\.onnx needs at least \d+\.$/,
    );
  });
});

describe('broken model folders', () => {
  const sd15 = { family: 'sd15', layout: 'diffusers' } as const;

  test('a missing folder', async () => {
    const e = await engineError(() =>
      openModelFolder(path.join(tmpdir(), 'no-such-model-folder-here')),
    );
    expect(e.code).toBe('model-missing-file');
    expect(e.message).toContain('no-such-model-folder-here does not exist');
  });

  test('a missing unet/model.onnx is named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await unlink(path.join(dir, 'unet', 'model.onnx'));
    const e = await engineError(() => loadModel(dir, { provider: 'cpu' }));
    expect(e.code).toBe('model-missing-file');
    expect(e.file).toBe('unet/model.onnx');
    expect(e.message).toBe('unet/model.onnx is missing from the model folder.');
  });

  test('a missing component folder that model_index.json lists is named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await rm(path.join(dir, 'vae_decoder'), { recursive: true });
    const e = await engineError(() => openModelFolder(dir));
    expect(e.file).toBe('vae_decoder/model.onnx');
    expect(e.message).toContain('model_index.json lists vae_decoder');
  });

  test('a truncated unet/model.onnx (its first 100 bytes) is named, by our reader and by ONNX Runtime', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    const file = path.join(dir, 'unet', 'model.onnx');
    const head = (await readFile(file)).subarray(0, 100);
    await writeFile(file, head);
    const e = await engineError(() => loadModel(dir, { provider: 'cpu' }));
    expect(e.code).toBe('model-corrupt');
    expect(e.file).toBe('unet/model.onnx');
    expect(e.message).toMatch(
      /^unet\/model\.onnx is truncated \(.+\); copy or download it again\.$/,
    );

    // Had it reached ONNX Runtime, its protobuf error is wrapped the same way.
    const ortErr = await engineError(() => createSession(file, 'unet/model.onnx', 'cpu'));
    expect(ortErr.code).toBe('model-corrupt');
    expect(ortErr.message).toMatch(
      /^unet\/model\.onnx is truncated or not an ONNX model \(onnxruntime: [^)]*\)\.$/,
    );
    expect(ortErr.message).not.toContain(dir);
  });

  test('a file that is not ONNX at all', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await writeFile(path.join(dir, 'text_encoder', 'model.onnx'), '<html>404 Not Found</html>\n');
    const e = await engineError(() => openModelFolder(dir));
    expect(e.code).toBe('model-corrupt');
    expect(e.message).toMatch(/^text_encoder\/model\.onnx is not an ONNX model \(.+\)\.$/);
  });

  test('garbage in model_index.json is named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await writeFile(
      path.join(dir, 'model_index.json'),
      '{"_class_name": "OnnxStableDiffusionPipeline",, }',
    );
    const e = await engineError(() => openModelFolder(dir));
    expect(e.code).toBe('model-corrupt');
    expect(e.file).toBe('model_index.json');
    expect(e.message).toMatch(/^model_index\.json is not valid JSON \(.+\)\.$/);
  });

  test('model_index.json holding an array is named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await writeFile(path.join(dir, 'model_index.json'), '[1, 2]');
    const e = await engineError(() => openModelFolder(dir));
    expect(e.message).toBe('model_index.json should hold a JSON object but holds an array.');
  });

  test('bad JSON in the scheduler config and in optimum config.json are named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await writeFile(
      path.join(dir, 'scheduler', 'scheduler_config.json'),
      '{ "beta_start": 0.00085',
    );
    expect((await engineError(() => openModelFolder(dir))).file).toBe(
      'scheduler/scheduler_config.json',
    );

    const opt = await tempCopy('broken-sd15-optimum', { family: 'sd15', layout: 'optimum' });
    await writeFile(path.join(opt, 'vae_decoder', 'config.json'), 'scaling_factor = 0.18215');
    const e = await engineError(() => openModelFolder(opt));
    expect(e.message).toMatch(/^vae_decoder\/config\.json is not valid JSON/);
  });

  test("a scheduler config saved by diffusers (Python's -Infinity) opens", async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    const file = path.join(dir, 'scheduler', 'scheduler_config.json');
    await writeFile(
      file,
      '{\n  "_class_name": "DPMSolverMultistepScheduler",\n  "beta_end": 0.012,\n' +
        '  "beta_schedule": "scaled_linear",\n  "beta_start": 0.00085,\n' +
        '  "lambda_min_clipped": -Infinity,\n  "num_train_timesteps": 1000\n}\n',
    );
    const info = await openModelFolder(dir);
    expect(info.schedulerConfig.lambda_min_clipped).toBe(-Infinity);
    expect(info.schedulerConfig._class_name).toBe('DPMSolverMultistepScheduler');
  });

  test('a missing scheduler config and missing tokenizer files are named', async () => {
    const dir = await tempCopy('broken-sd15', sd15);
    await rm(path.join(dir, 'scheduler'), { recursive: true });
    expect((await engineError(() => openModelFolder(dir))).file).toBe(
      'scheduler/scheduler_config.json',
    );

    const dir2 = await tempCopy('broken-sd15', sd15);
    await unlink(path.join(dir2, 'tokenizer', 'merges.txt'));
    const e = await engineError(() => openModelFolder(dir2));
    expect(e.code).toBe('model-missing-file');
    expect(e.file).toBe('tokenizer/merges.txt');

    const xl = await tempCopy('broken-sdxl', { family: 'sdxl', layout: 'optimum' });
    await rm(path.join(xl, 'tokenizer_2'), { recursive: true });
    const e2 = await engineError(() => loadModel(xl, { provider: 'cpu' }));
    expect(e2.file).toBe('tokenizer_2/vocab.json');
  });

  test('an unsupported UNet is refused with a sentence saying why', async () => {
    const dir = await tempCopy('broken-sd15-optimum', { family: 'sd15', layout: 'optimum' });
    const cfgPath = path.join(dir, 'unet', 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
    await writeFile(cfgPath, JSON.stringify({ ...cfg, in_channels: 5 }));
    const e = await engineError(async () => detectFamily(await openModelFolder(dir)));
    expect(e.code).toBe('model-unsupported');
    expect(e.message).toBe(
      'unet/model.onnx takes 5 input channels; the engine runs 4 (text-to-image), 9 (inpainting) and 7 (x4 upscaler).',
    );
  });

  test('a VAE encoder that is not there fails only when it is needed', async () => {
    const dir = await fixtureModel('fam-x4-diffusers', { family: 'x4', layout: 'diffusers' });
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      expect(m.decoderName).toBe('vae');
      expect(m.has('vae_encoder')).toBe(false);
      const e = await engineError(() => m.session('vae_encoder'));
      expect(e.code).toBe('model-missing-file');
      expect(e.file).toBe('vae_encoder/model.onnx');
    } finally {
      await m.release();
    }
  });
});

describe('execution providers', () => {
  test('the preference order per platform follows what onnxruntime-node bundles', () => {
    expect(chooseProviders('win32', 'x64')).toEqual(['dml', 'webgpu', 'cpu']);
    expect(chooseProviders('darwin', 'arm64')).toEqual(['coreml', 'webgpu', 'cpu']);
    expect(chooseProviders('linux', 'arm64')).toEqual(['cpu']);
    expect(
      chooseProviders('linux', 'x64', [{ name: 'cpu' }, { name: 'webgpu' }, { name: 'cuda' }]),
    ).toEqual(['cuda', 'webgpu', 'cpu']);
    // A Windows build that lists CUDA gets it before DirectML.
    expect(chooseProviders('win32', 'x64', ['cpu', 'dml', 'cuda'])).toEqual(['cuda', 'dml', 'cpu']);
    expect(chooseProviders('freebsd', 'x64', ['cpu'])).toEqual(['cpu']);
    expect(chooseProviders().at(-1)).toBe('cpu');
  });

  test('asking for CUDA where it cannot load runs on CPU and records why', async () => {
    const dir = await fixtureModel('fam-sd15-diffusers', { family: 'sd15', layout: 'diffusers' });
    const cache = new SessionCache();
    const m = await loadModel(dir, { provider: 'cuda', threads: 1, cache });
    try {
      if (m.provider === 'cuda') {
        // A machine with CUDA installed: nothing to fall back from.
        expect(m.fallbackReason).toBeNull();
      } else {
        expect(m.provider).toBe('cpu');
        expect(m.fallbackReason).toMatch(/^cuda: \S/);
        expect(m.fallbackReason).not.toMatch(/\n/);
      }
      // The decision holds for every component of the model.
      const te = await m.session('text_encoder');
      expect(te.provider).toBe(m.provider);
    } finally {
      await cache.releaseAll();
    }
  });

  test("'auto' lands on a provider from the platform's list", async () => {
    const dir = await fixtureModel('fam-sd15-diffusers', { family: 'sd15', layout: 'diffusers' });
    const cache = new SessionCache();
    const m = await loadModel(dir, { provider: 'auto', threads: 1, cache });
    try {
      expect(chooseProviders()).toContain(m.provider);
      if (m.provider !== chooseProviders()[0])
        expect(m.fallbackReason).toContain(`${chooseProviders()[0]}:`);
    } finally {
      await cache.releaseAll();
    }
  });
});

describe('session cache', () => {
  test('sessions are shared per (file, provider, options), created lazily, and released', async () => {
    const dir = await fixtureModel('fam-sd15-diffusers', { family: 'sd15', layout: 'diffusers' });
    const cache = new SessionCache();
    const a = await loadModel(dir, { provider: 'cpu', threads: 1, cache });
    // UNet and VAE decoder now; text encoder and VAE encoder on first use.
    expect(cache.size).toBe(2);
    const b = await loadModel(dir, { provider: 'cpu', threads: 1, cache });
    expect(cache.size).toBe(2);
    const ua = await a.session('unet');
    const ub = await b.session('unet');
    expect(ub.session).toBe(ua.session);

    const [t1, t2] = await Promise.all([a.session('text_encoder'), b.session('text_encoder')]);
    expect(t2.session).toBe(t1.session);
    expect(cache.size).toBe(3);

    // Different options are a different session.
    const c = await loadModel(dir, { provider: 'cpu', threads: 2, cache });
    expect((await c.session('unet')).session).not.toBe(ua.session);
    expect(cache.size).toBe(5);

    // Release by path: a file, then the whole folder.
    expect(await cache.release(a.info.components.text_encoder!.modelPath)).toBe(1);
    expect(cache.size).toBe(4);
    expect(await cache.release(dir)).toBe(4);
    expect(cache.size).toBe(0);
    // A released session refuses to run; a new load makes a fresh one.
    await expect(ua.session.run({})).rejects.toThrow();
    const d = await loadModel(dir, { provider: 'cpu', threads: 1, cache });
    expect((await d.session('unet')).session).not.toBe(ua.session);
    expect(await cache.releaseAll()).toBe(2);
  });

  test('the VAE decoder session is created without memory patterns, the UNet with them', async () => {
    const dir = await fixtureModel('fam-sd15-diffusers', { family: 'sd15', layout: 'diffusers' });
    const keys: SessionKey[] = [];
    // A real cache that notes the key of every session it is asked for (componentOptions).
    class Recording extends SessionCache {
      override get(key: SessionKey, file: string, baseDir?: string) {
        keys.push(key);
        return super.get(key, file, baseDir);
      }
    }
    const cache = new Recording();
    try {
      const m = await loadModel(dir, { provider: 'cpu', threads: 1, cache });
      await m.session('vae_encoder');
      const options = (file: string) =>
        keys.find((k) => path.basename(path.dirname(k.modelPath)) === file)!.options;
      expect(options('vae_decoder').memPattern).toBe(false);
      expect(options('unet').memPattern).toBeUndefined();
      expect(options('vae_encoder').memPattern).toBeUndefined();
      // A second load asks for the same key: the same session.
      const again = await loadModel(dir, { provider: 'cpu', threads: 1, cache });
      expect((await again.session('vae_decoder')).session).toBe(
        (await m.session('vae_decoder')).session,
      );
    } finally {
      await cache.releaseAll();
    }
  });

  test('a failed creation is not cached', async () => {
    const dir = await tempCopy('broken-sd15', { family: 'sd15', layout: 'diffusers' });
    const file = path.join(dir, 'vae_decoder', 'model.onnx');
    const good = await readFile(file);
    await writeFile(file, good.subarray(0, 200));
    const cache = new SessionCache();
    await engineError(() =>
      cache.get({ modelPath: file, preference: 'cpu', options: {} }, 'vae_decoder/model.onnx'),
    );
    expect(cache.size).toBe(0);
    await writeFile(file, good);
    const s = await cache.get(
      { modelPath: file, preference: 'cpu', options: {} },
      'vae_decoder/model.onnx',
    );
    expect(s.session.inputNames).toEqual(['latent_sample']);
    await cache.releaseAll();
  });
});

describe('onnxruntime errors become one sentence', () => {
  // Messages as onnxruntime-node 1.30 throws them (recorded on this machine and from ORT's sources).
  const webgpu =
    '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters\n';
  const oom =
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. Name:'/conv_in/Conv' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 1073741824\n";

  test('native locations, C++ signatures and path prefixes are dropped', () => {
    expect(shortReason(new Error(webgpu))).toBe(
      'Failed to get a WebGPU adapter: No supported adapters',
    );
    expect(
      shortReason(
        new Error('Load model from /models/x/unet/model.onnx failed:Protobuf parsing failed.'),
      ),
    ).toBe('Protobuf parsing failed');
    expect(shortReason(new Error('cannot read /models/x/unet/weights.pb'), '/models/x')).toBe(
      'cannot read unet/weights.pb',
    );
    const e = new Error('first line\n    at Foo (/src/a.ts:1:2)');
    expect(shortReason(e)).toBe('first line');
  });

  test('out of memory is its own code, for loading and for running', () => {
    const load = wrapSessionCreateError(new Error(oom), 'unet/model.onnx', { provider: 'cuda' });
    expect(load.code).toBe('out-of-memory');
    expect(load.message).toBe(
      "Not enough memory to load unet/model.onnx on cuda (onnxruntime: Non-zero status code returned while running Conv node. Name:'/conv_in/Conv' Status Message: Failed to allocate memory for requested buffer of size 1073741824).",
    );
    const run = wrapRunError(new Error(oom), 'unet/model.onnx');
    expect(run.code).toBe('out-of-memory');
    expect(run.message).toMatch(
      /^Ran out of memory while running unet\/model\.onnx \(onnxruntime: .*size 1073741824\)\.$/,
    );
    expect(run.cause).toBeInstanceOf(Error);
    expect(run.toJSON()).toEqual({
      name: 'EngineError',
      code: 'out-of-memory',
      message: run.message,
      file: 'unet/model.onnx',
    });
  });
});
