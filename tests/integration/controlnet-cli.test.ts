// `npm run generate -- --controlnet FILE --control-image PNG`: the bundled CLI in a child process
// with the data folder's cache seeded (the small configurations need their architecture given,
// which the command line cannot do): it uses the cached ControlNet and the residual UNet, writes
// A1111's `ControlNet 0` field, and the control weight changes the picture.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { convertControlNet } from '../../src/engine/convert/convert-controlnet';
import type { ControlNetArchitecture } from '../../src/engine/convert/types';
import { parseA1111Parameters, readPngTextChunks } from '../../src/main/library/png-metadata';
import { meanAbsDiff } from '../fixtures/controlnet-fixture';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';

const REF = path.join(import.meta.dirname, '..', 'fixtures', 'reference');
const RESOURCES = path.join(import.meta.dirname, '..', '..', 'resources');
const sha = (file: string): string =>
  createHash('sha256').update(fs.readFileSync(file)).digest('hex');

let cli: string;
let tmp: string;
let model: string;
let controlnet: string;
let controlImage: string;
let dataDir: string;

beforeAll(async () => {
  cli = await bundleEntry('src/main/cli.ts', 'cli');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-controlnet-cli-'));
  dataDir = path.join(tmp, 'data');
  const { file, arch } = await smallCheckpoint(tmp, 'sd1');
  model = file;
  await convertCheckpoint(
    file,
    path.join(dataDir, 'converted', `${sha(file).slice(0, 16)}-fp16-cn`, 'm'),
    {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      controlResiduals: true,
    },
  );
  controlnet = path.join(tmp, 'control_canny.safetensors');
  fs.copyFileSync(path.join(REF, 'controlnet-sd1.safetensors'), controlnet);
  const cnArch = JSON.parse(
    fs.readFileSync(path.join(REF, 'controlnet-sd1.json'), 'utf8'),
  ) as ControlNetArchitecture;
  await convertControlNet(
    controlnet,
    path.join(dataDir, 'converted', `controlnet-${sha(controlnet).slice(0, 16)}-fp16`, 'cn'),
    { architecture: cnArch, sha256: sha(controlnet) },
  );
  controlImage = path.join(tmp, 'square.png');
  const px = Buffer.alloc(64 * 64 * 3);
  for (let y = 16; y < 48; y++) px.fill(255, (y * 64 + 16) * 3, (y * 64 + 48) * 3);
  await sharp(px, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toFile(controlImage);
}, 180_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function generate(out: string, extra: string[]) {
  const r = spawnSync(
    process.execPath,
    [
      cli,
      ...['--model', model, '--data-dir', dataDir, '--prompt', 'a red house', '--steps', '3'],
      ...['--width', '64', '--height', '64', '--seed', '5', '--sampler', 'euler', '--out', out],
      ...extra,
    ],
    {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: RESOURCES },
    },
  );
  return { code: r.status, stderr: r.stderr };
}

/** Mean absolute difference of two PNGs' pixels. */
async function pictureDiff(a: string, b: string): Promise<number> {
  const pixels = async (f: string) => (await sharp(f).raw().toBuffer()).valueOf();
  return meanAbsDiff(await pixels(a), await pixels(b));
}

describe('npm run generate -- --controlnet', () => {
  it('guides the image by the control and records the unit in the infotext', async () => {
    const control = [
      '--controlnet',
      controlnet,
      '--control-image',
      controlImage,
      '--preprocessor',
      'canny',
    ];
    const guided = path.join(tmp, 'guided.png');
    const r = generate(guided, [...control, '--control-end', '0.8']);
    expect(r.stderr).not.toMatch(/converting/);
    expect(r.code).toBe(0);
    const text = readPngTextChunks(fs.readFileSync(guided)).find((c) => c.keyword === 'parameters');
    const { params } = parseA1111Parameters(text!.text);
    expect(params['ControlNet 0']).toBe(
      `Module: canny, Model: control_canny [${sha(controlnet).slice(0, 8)}], Weight: 1, Resize Mode: Just Resize, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 0.8, Control Mode: Balanced`,
    );
    const off = path.join(tmp, 'off.png');
    expect(generate(off, [...control, '--control-weight', '0']).code).toBe(0);
    expect(await pictureDiff(guided, off)).toBeGreaterThan(1);
  });

  it('uses an ONNX ControlNet folder as it is, named by the folder and hashed by its model.onnx', async () => {
    // The torch export of the same ControlNet (make_controlnet_onnx.py), outputs by position.
    const folder = path.join(tmp, 'canny-onnx');
    fs.cpSync(
      path.join(REF, 'controlnet-sd1-onnx', 'controlnet'),
      path.join(folder, 'controlnet'),
      {
        recursive: true,
      },
    );
    const control = ['--controlnet', folder, '--control-image', controlImage];
    const guided = path.join(tmp, 'onnx-guided.png');
    const r = generate(guided, control);
    expect(r.stderr).not.toMatch(/converting/);
    expect(r.code).toBe(0);
    const text = readPngTextChunks(fs.readFileSync(guided)).find((c) => c.keyword === 'parameters');
    const sum = sha(path.join(folder, 'controlnet', 'model.onnx')).slice(0, 8);
    expect(parseA1111Parameters(text!.text).params['ControlNet 0']).toMatch(
      new RegExp(`^Module: none, Model: canny-onnx \\[${sum}\\], Weight: 1, `),
    );
    const off = path.join(tmp, 'onnx-off.png');
    expect(generate(off, [...control, '--control-weight', '0']).code).toBe(0);
    expect(await pictureDiff(guided, off)).toBeGreaterThan(1);
  });

  it('says what is missing, in one sentence', () => {
    const r = generate(path.join(tmp, 'x.png'), ['--controlnet', controlnet]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--controlnet needs --control-image PNG/);
    const w = generate(path.join(tmp, 'y.png'), ['--control-weight', '1']);
    expect(w.stderr).toMatch(/--control-weight needs --controlnet FILE\./);
  });
});
