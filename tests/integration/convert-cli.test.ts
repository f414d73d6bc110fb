// The command lines around the converter: `npm run convert` and `npm run generate -- --model
// FILE.safetensors`, run as the bundled entry points in child processes.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { parseA1111Parameters, readPngTextChunks } from '../../src/main/library/png-metadata';
import { writeLoraFile, writeSafetensors } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';

const CHECKPOINTS = path.join(import.meta.dirname, '..', 'fixtures', 'reference', 'checkpoints');
const RESOURCES = path.join(import.meta.dirname, '..', '..', 'resources');

let convertCli: string;
let generateCli: string;
let tmp: string;

beforeAll(async () => {
  convertCli = await bundleEntry('src/main/convert-cli.ts', 'convert-cli');
  generateCli = await bundleEntry('src/main/cli.ts', 'cli');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-convert-cli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(entry: string, args: string[]) {
  const r = spawnSync(process.execPath, [entry, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: RESOURCES },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `generate --model FILE` into a fresh data folder, and what it left in that folder's cache. */
function generateRefused(model: string) {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
  const r = run(generateCli, [
    '--model',
    model,
    '--data-dir',
    dataDir,
    '--prompt',
    'x',
    '--out',
    path.join(dataDir, 'x.png'),
  ]);
  const converted = path.join(dataDir, 'converted');
  return { ...r, cached: fs.existsSync(converted) ? fs.readdirSync(converted) : [] };
}

describe('npm run convert', () => {
  it('says what a file that is not a checkpoint is, in one line, and writes nothing', async () => {
    const lora = path.join(tmp, 'style.safetensors');
    await writeLoraFile(lora);
    const out = path.join(tmp, 'never');
    const r = run(convertCli, ['--checkpoint', lora, '--out', out, '--quiet']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      'latent-studio convert: style.safetensors is a LoRA (small add-on weights that change a model; put it in the LoRA folder), not a Stable Diffusion 1.x, 2.x or SDXL checkpoint that can be converted.',
    );
    expect(fs.existsSync(out)).toBe(false);
  });

  it('refuses a pickle that would run code, naming it', () => {
    const r = run(convertCli, [
      '--checkpoint',
      path.join(CHECKPOINTS, 'evil.ckpt'),
      '--out',
      path.join(tmp, 'evil'),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/evil\.ckpt was refused because it refers to posix\.system/);
  });

  it('checks its arguments', () => {
    expect(run(convertCli, ['--checkpoint', 'x.safetensors']).stderr).toMatch(/--out is required/);
    const r = run(convertCli, ['--checkpoint', 'x', '--out', 'y', '--precision', 'int8']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--precision must be fp16 or fp32, not "int8"/);
  });
});

describe('npm run generate -- --model FILE.safetensors', () => {
  it("reuses the data folder's conversion of that file and writes its A1111 model hash", async () => {
    const { file, arch } = await smallCheckpoint(tmp, 'sd1');
    const sha256 = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    const dataDir = path.join(tmp, 'data');
    // The cache entry a first run would have made (the small configuration needs its
    // architecture given, which the command line cannot do).
    await convertCheckpoint(
      file,
      path.join(dataDir, 'converted', `${sha256.slice(0, 16)}-fp16`, 'my model'),
      {
        vocabularyFile: VOCABULARY,
        architecture: arch,
        sha256,
      },
    );
    const png = path.join(tmp, 'out.png');
    const r = run(generateCli, [
      '--model',
      file,
      '--data-dir',
      dataDir,
      '--prompt',
      'a red house',
      '--steps',
      '2',
      '--width',
      '64',
      '--height',
      '64',
      '--seed',
      '5',
      '--out',
      png,
    ]);
    expect(r.stderr).not.toMatch(/converting/);
    expect(r.code).toBe(0);
    const text = readPngTextChunks(fs.readFileSync(png)).find((c) => c.keyword === 'parameters');
    const { params } = parseA1111Parameters(text!.text);
    expect(params['Model hash']).toBe(sha256.slice(0, 10));
    expect(params.Model).toBe(path.basename(file, '.safetensors'));
    expect(fs.readdirSync(path.join(dataDir, 'converted'))).toHaveLength(1);
  });

  it('a checkpoint that cannot be converted fails with its sentence and leaves no cache entry', () => {
    const r = generateRefused(path.join(CHECKPOINTS, 'evil.ckpt'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/evil\.ckpt was refused because it refers to posix\.system/);
    expect(r.cached).toEqual([]);
  });

  it('a whole pipeline in diffusers naming in one file is named, with what to do instead', async () => {
    const file = path.join(tmp, 'dreamshaper-diffusers.safetensors');
    const keys = [
      'unet.conv_in.weight',
      'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight',
      'unet.mid_block.resnets.0.conv1.weight',
      ...Array.from(
        { length: 12 },
        (_, i) => `text_encoder.text_model.encoder.layers.${i}.self_attn.q_proj.weight`,
      ),
      'vae.encoder.down_blocks.0.resnets.0.conv1.weight',
      'vae.decoder.up_blocks.0.resnets.0.conv1.weight',
    ];
    await writeSafetensors(
      file,
      keys.map((name) => ({ name, dtype: 'F16' as const, shape: [2, 2] })),
      () => new Uint8Array(8),
    );
    const r = generateRefused(file);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "dreamshaper-diffusers.safetensors is an SD 1.x pipeline in diffusers naming saved as one file (unet., text_encoder., vae. keys; the converter reads the original ldm naming, so use the model's single-file release, or export its diffusers folder to ONNX with `optimum-cli export onnx` and open that folder), not a Stable Diffusion 1.x, 2.x or SDXL checkpoint that can be converted.",
    );
    expect(r.cached).toEqual([]);
  });
});
