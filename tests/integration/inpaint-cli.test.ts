// The CLI's inpainting and outpainting flags, end to end on the known-answer fixture: real PNG
// files in, a PNG out with the settings in its metadata, pixels outside the mask unchanged.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { bundleEntry } from './bundle';

let cli: string;
let ka: FixtureInfo;
let tmp: string;
let initPng: string;
let maskPng: string;
let init: Buffer;

const W = 64;
const H = 64;
const inHole = (x: number, y: number) => x >= 16 && x < 40 && y >= 24 && y < 48;

beforeAll(async () => {
  cli = await bundleEntry('src/main/cli.ts', 'cli-inpaint');
  ka = await fixtureModelInfo('cli-known-answer', { unet: 'known-answer', knownLatents: 3 });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-inpaint-cli-'));
  init = Buffer.alloc(W * H * 3);
  for (let i = 0; i < init.length; i++) init[i] = (i * 37 + (i >> 7) * 11) % 251;
  initPng = path.join(tmp, 'init.png');
  await sharp(init, { raw: { width: W, height: H, channels: 3 } })
    .png()
    .toFile(initPng);
  const mask = Buffer.alloc(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) mask[y * W + x] = inHole(x, y) ? 255 : 0;
  maskPng = path.join(tmp, 'mask.png');
  await sharp(mask, { raw: { width: W, height: H, channels: 1 } })
    .png()
    .toFile(maskPng);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, '--model', ka.dir, '--prompt', 'x', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function pixels(file: string) {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe('CLI: --mask and --outpaint', () => {
  it('--mask inpaints: same size, unmasked pixels identical, settings in the PNG', async () => {
    const out = path.join(tmp, 'inpaint.png');
    const r = run([
      '--init',
      initPng,
      '--mask',
      maskPng,
      '--mask-blur',
      '0',
      '--mask-grow',
      '0',
      '--mask-fill',
      'edge',
      '--seed',
      '5',
      '--steps',
      '8',
      '--out',
      out,
      '--quiet',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const img = await pixels(out);
    expect([img.width, img.height]).toEqual([W, H]);
    let outsideDiff = 0;
    let insideDiff = 0;
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < 3; c++) {
          const o = (y * W + x) * 3 + c;
          if (img.data[o] === init[o]) continue;
          if (inHole(x, y)) insideDiff++;
          else outsideDiff++;
        }
    expect(outsideDiff).toBe(0);
    expect(insideDiff).toBeGreaterThan(24 * 24 * 2);
    const meta = readGenerationMetadata(fs.readFileSync(out));
    expect(meta.settings).toMatchObject({
      mode: 'inpaint',
      seed: 5,
      width: 64,
      height: 64,
      initImage: path.resolve(initPng),
      mask: {
        image: path.resolve(maskPng),
        blur: 0,
        grow: 0,
        invert: false,
        onlyMasked: false,
        fill: 'edge',
      },
    });
  });

  it('--outpaint L,T,R,B extends the picture and records the sides', async () => {
    const out = path.join(tmp, 'outpaint.png');
    const r = run([
      '--init',
      initPng,
      '--outpaint',
      '8,0,32,16',
      '--seed',
      '6',
      '--steps',
      '8',
      '--out',
      out,
      '--quiet',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const img = await pixels(out);
    expect([img.width, img.height]).toEqual([64 + 40, 64 + 16]);
    // The original's left-top part, away from every extended side, is unchanged.
    const keep = 10 + 10; // outpaint band max(8, reach) + feather reach, default blur 4
    for (let y = 0; y < 64 - keep; y++)
      for (let x = keep; x < 64 - keep; x++)
        for (let c = 0; c < 3; c++)
          expect(img.data[(y * img.width + x + 8) * 3 + c]).toBe(init[(y * W + x) * 3 + c]);
    const meta = readGenerationMetadata(fs.readFileSync(out));
    expect(meta.settings).toMatchObject({
      mode: 'outpaint',
      width: 104,
      height: 80,
      outpaint: { left: 8, top: 0, right: 32, bottom: 16 },
    });
  });

  it('usage errors exit 2 with one sentence', () => {
    const out = path.join(tmp, 'never.png');
    const cases: [string[], RegExp][] = [
      [['--mask', maskPng], /--mask needs --init/],
      [['--outpaint', '8,8,8,8'], /--outpaint needs --init/],
      [['--init', initPng, '--outpaint', '8,8'], /--outpaint must be L,T,R,B/],
      [['--init', initPng, '--outpaint', '8,8,x,8'], /--outpaint must be L,T,R,B/],
      [['--init', initPng, '--outpaint', '8,8,5,8'], /--outpaint: .*multiple of 8/],
      [['--init', initPng, '--mask-blur', '3'], /--mask-blur needs --mask or --outpaint/],
      [['--init', initPng, '--mask', maskPng, '--outpaint', '8'], /cannot be used together/],
      [['--init', initPng, '--mask', maskPng, '--mask-fill', 'paint'], /--mask-fill: /],
      [['--init', initPng, '--mask', maskPng, '--mask-blur=-1'], /--mask-blur: /],
      [['--init', initPng, '--mask', maskPng, '--mask-grow=-300'], /--mask-grow: /],
      [['--init', initPng, '--mask', path.join(tmp, 'nope.png')], /--mask: .*does not exist/],
      [['--init', initPng, '--outpaint', '8', '--invert-mask'], /does not apply to --outpaint/],
    ];
    for (const [args, message] of cases) {
      const r = run([...args, '--out', out]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')[0], args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('an empty mask is an engine error (exit 1) with one sentence', async () => {
    const empty = path.join(tmp, 'empty.png');
    await sharp(Buffer.alloc(W * H), { raw: { width: W, height: H, channels: 1 } })
      .png()
      .toFile(empty);
    const r = run(['--init', initPng, '--mask', empty, '--out', path.join(tmp, 'e.png')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^latent-studio: The mask is empty/);
  });
});
