import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  parseA1111Parameters,
  readGenerationMetadata,
  readPngTextChunks,
} from '../../src/main/library/png-metadata';
import { fixtureModelInfo, type FixtureInfo } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { pngBomb } from './hostile-images';

let cli: string;
let ka: FixtureInfo;
let tmp: string;

beforeAll(async () => {
  cli = await bundleEntry('src/main/cli.ts', 'cli');
  ka = await fixtureModelInfo('cli-known-answer', { unet: 'known-answer', knownLatents: 3 });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-cli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('npm run generate (the CLI)', () => {
  it('writes a PNG carrying the A1111 parameters and our settings', async () => {
    const out = path.join(tmp, 'a.png');
    const r = run([
      '--model',
      ka.dir,
      '--prompt',
      'a red square, (sky:1.2)',
      '--negative',
      'blurry',
      '--seed',
      '42',
      '--steps',
      '12',
      '--sampler',
      'dpmpp_2m',
      '--schedule',
      'karras',
      '--cfg',
      '5',
      '--width',
      '64',
      '--height',
      '64',
      '--out',
      out,
      '--quiet',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    const png = fs.readFileSync(out);
    const meta = await sharp(png).metadata();
    expect([meta.width, meta.height, meta.channels]).toEqual([64, 64, 3]);
    const parameters = readPngTextChunks(png).find((c) => c.keyword === 'parameters');
    const parsed = parseA1111Parameters(parameters!.text);
    expect(parsed.prompt).toBe('a red square, (sky:1.2)');
    expect(parsed.negativePrompt).toBe('blurry');
    expect(parsed.params).toMatchObject({
      Steps: '12',
      Sampler: 'DPM++ 2M',
      'Schedule type': 'Karras',
      'CFG scale': '5',
      Seed: '42',
      Size: '64x64',
    });
    const ours = readGenerationMetadata(png);
    expect(ours.source).toBe('latent-studio');
    expect(ours.settings).toMatchObject({
      seed: 42,
      steps: 12,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      guidance: 5,
      width: 64,
      height: 64,
    });
  });

  it('is reproducible from the seed, and image-to-image works from a PNG', () => {
    const a = path.join(tmp, 'r1.png');
    const b = path.join(tmp, 'r2.png');
    const args = [
      '--model',
      ka.dir,
      '--prompt',
      'x',
      '--seed',
      '9',
      '--steps',
      '8',
      '--width',
      '64',
      '--height',
      '64',
      '--quiet',
    ];
    expect(run([...args, '--out', a]).code).toBe(0);
    expect(run([...args, '--out', b]).code).toBe(0);
    expect(fs.readFileSync(a).equals(fs.readFileSync(b))).toBe(true);
    const c = path.join(tmp, 'i2i.png');
    const r = run([...args, '--init', a, '--strength', '0.3', '--out', c]);
    expect(r.code).toBe(0);
    expect(readGenerationMetadata(fs.readFileSync(c)).settings).toMatchObject({
      mode: 'img2img',
      strength: 0.3,
    });
  });

  it('numbers the files of a batch', () => {
    const out = path.join(tmp, 'batch.png');
    const r = run([
      '--model',
      ka.dir,
      '--prompt',
      'x',
      '--seed',
      '1',
      '--steps',
      '4',
      '--width',
      '64',
      '--height',
      '64',
      '--batch-size',
      '2',
      '--batch-count',
      '2',
      '--out',
      out,
      '--quiet',
    ]);
    expect(r.code).toBe(0);
    expect(
      r.stdout
        .trim()
        .split('\n')
        .map((f) => path.basename(f)),
    ).toEqual(['batch-1.png', 'batch-2.png', 'batch-3.png', 'batch-4.png']);
  });

  it('fails with one line and a non-zero exit on bad input', () => {
    const cases: [string[], number, RegExp][] = [
      [['--prompt', 'x', '--out', 'x.png'], 2, /--model is required/],
      [['--model', ka.dir, '--prompt', 'x', '--out', 'x.png', '--sampler', 'warp'], 2, /--sampler/],
      [
        ['--model', ka.dir, '--prompt', 'x', '--out', 'x.png', '--schedule', 'uniform'],
        2,
        /--schedule/,
      ],
      [
        [
          '--model',
          ka.dir,
          '--prompt',
          'x',
          '--out',
          'x.png',
          '--sampler',
          'ddim',
          '--schedule',
          'karras',
        ],
        2,
        /--schedule: karras does not apply to ddim/,
      ],
      [
        ['--model', ka.dir, '--prompt', 'x', '--out', 'x.png', '--width', '100'],
        2,
        /--width: must be a multiple of 8/,
      ],
      [
        ['--model', ka.dir, '--prompt', 'x', '--out', 'x.png', '--steps', 'many'],
        2,
        /--steps must be a number/,
      ],
      [['--model', ka.dir, '--prompt', 'x', '--out', 'x.jpg'], 2, /\.png/],
      [['--model', ka.dir, '--prompt', 'x', '--bogus', '--out', 'x.png'], 2, /bogus/],
      [
        ['--model', path.join(tmp, 'nope'), '--prompt', 'x', '--out', path.join(tmp, 'n.png')],
        1,
        /nope/,
      ],
      [
        [
          '--model',
          ka.dir,
          '--prompt',
          'x',
          '--init',
          path.join(tmp, 'missing.png'),
          '--out',
          path.join(tmp, 'n.png'),
        ],
        2,
        /missing\.png does not exist/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const r = run(args);
      expect(r.code, args.join(' ')).toBe(code);
      const lines = r.stderr.trim().split('\n');
      expect(lines[0], args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('refuses a broken init image with a clear sentence', () => {
    const broken = path.join(tmp, 'broken.png');
    fs.writeFileSync(broken, Buffer.from('\x89PNG\r\n\x1a\n garbage'));
    const r = run([
      '--model',
      ka.dir,
      '--prompt',
      'x',
      '--init',
      broken,
      '--out',
      path.join(tmp, 'b.png'),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/broken\.png is not an image that can be read/);
  });

  it('refuses a decompression bomb from its header, before decoding it', () => {
    const bomb = path.join(tmp, 'bomb.png');
    fs.writeFileSync(bomb, pngBomb(16383, 16383));
    const r = run([
      '--model',
      ka.dir,
      '--prompt',
      'x',
      '--init',
      bomb,
      '--out',
      path.join(tmp, 'c.png'),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(
      /^latent-studio: --init: .*bomb\.png is 16383x16383 \(268\.4 megapixels\); the studio reads images of at most 16\.8 megapixels/,
    );
    expect(fs.existsSync(path.join(tmp, 'c.png'))).toBe(false);
  });
});
