import zlib from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, test } from 'vitest';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import {
  PngFormatError,
  addPngTextChunks,
  encodePngWithMetadata,
  formatA1111Parameters,
  parseA1111Parameters,
  readGenerationMetadata,
  readPngTextChunks,
  samplerFromA1111,
  samplerFromComfy,
} from '../../src/main/library/png-metadata';
import { comfyApiGraph } from '../fixtures/comfyui';

// ---------------------------------------------------------------------------------------------
// helpers: build PNGs by hand (PNG spec: length u32 BE | type | data | CRC-32 of type+data)

const SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

function chunk(type: string, data: Uint8Array | string): Uint8Array {
  const body = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  const out = new Uint8Array(body.length + 12);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, zlib.crc32(out.subarray(4, 8 + body.length)) >>> 0);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function bytes(...parts: Array<Uint8Array | string | number[]>): Uint8Array {
  return concat(
    ...parts.map((p) =>
      typeof p === 'string'
        ? new Uint8Array(Buffer.from(p, 'latin1'))
        : Array.isArray(p)
          ? Uint8Array.from(p)
          : p,
    ),
  );
}

/** Split a PNG into its signature + IHDR and everything after. */
function splitAfterIhdr(png: Uint8Array): [Uint8Array, Uint8Array] {
  return [png.subarray(0, 8 + 25), png.subarray(8 + 25)];
}

/** A PNG with extra chunks inserted after IHDR. */
function withChunks(png: Uint8Array, ...chunks: Uint8Array[]): Uint8Array {
  const [head, tail] = splitAfterIhdr(png);
  return concat(head, ...chunks, tail);
}

function chunkTypes(png: Uint8Array): string[] {
  const types: string[] = [];
  let at = 8;
  while (at < png.length) {
    const len = new DataView(png.buffer, png.byteOffset).getUint32(at);
    types.push(Buffer.from(png.subarray(at + 4, at + 8)).toString('latin1'));
    at += len + 12;
  }
  return types;
}

function pixels(width: number, height: number, channels: 3 | 4): Uint8Array {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 3) * 11) & 0xff;
  return data;
}

const basePng = await encodePngWithMetadata(pixels(4, 3, 3), 4, 3, 3);

function settings(input: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({ model: 'models/sd15', prompt: 'a cat', seed: 123, ...input });
}

// ---------------------------------------------------------------------------------------------

describe('encode and read back', () => {
  test('our settings survive a write and a read, and Latin-1 text goes into tEXt', async () => {
    const s = settings({
      prompt: 'a red fox, (autumn:1.2), café',
      negativePrompt: 'blurry',
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      steps: 30,
      guidance: 6.5,
      width: 640,
      height: 448,
      seed: 2 ** 40 + 7,
    });
    const png = await encodePngWithMetadata(pixels(8, 8, 3), 8, 8, 3, {
      settings: s,
      extra: { modelName: 'sd15', modelHash: 'abcdef1234', version: 'v0.1.0' },
    });
    const read = readGenerationMetadata(png);
    expect(read.source).toBe('latent-studio');
    expect(read.settings).toEqual(s);
    expect(read.raw).toEqual({ modelName: 'sd15', modelHash: 'abcdef1234', version: 'v0.1.0' });

    const chunks = readPngTextChunks(png);
    expect(chunks.map((c) => [c.keyword, c.kind])).toEqual([
      ['parameters', 'tEXt'],
      ['latent-studio', 'tEXt'],
    ]);
    expect(JSON.parse(chunks[1].text)).toEqual({
      version: 1,
      settings: s,
      extra: { modelName: 'sd15', modelHash: 'abcdef1234', version: 'v0.1.0' },
    });
    // Right after IHDR.
    expect(chunkTypes(png).slice(0, 3)).toEqual(['IHDR', 'tEXt', 'tEXt']);
  });

  test('a prompt outside Latin-1 (emoji, CJK) goes into UTF-8 iTXt and reads back exactly', async () => {
    const s = settings({ prompt: '猫が座っている 🐱, 桜', negativePrompt: 'ぼやけ' });
    const png = await encodePngWithMetadata(pixels(4, 4, 4), 4, 4, 4, { settings: s });
    const chunks = readPngTextChunks(png);
    expect(chunks.map((c) => c.kind)).toEqual(['iTXt', 'iTXt']);
    expect(chunks[0].text).toBe(
      '猫が座っている 🐱, 桜\nNegative prompt: ぼやけ\nSteps: 25, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512',
    );
    expect(readGenerationMetadata(png)).toEqual({ source: 'latent-studio', settings: s, raw: {} });
  });

  test('sharp decodes what we wrote to the same pixels (RGB and RGBA)', async () => {
    for (const channels of [3, 4] as const) {
      const px = pixels(13, 7, channels);
      const png = await encodePngWithMetadata(px, 13, 7, channels, { settings: settings() });
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([13, 7, channels]);
      expect(new Uint8Array(data)).toEqual(px);
    }
  });

  test('encoding without metadata writes no text chunks; a wrong buffer size is an error', async () => {
    expect(readPngTextChunks(basePng)).toEqual([]);
    expect(readGenerationMetadata(basePng).source).toBe('none');
    await expect(encodePngWithMetadata(new Uint8Array(10), 4, 3, 3)).rejects.toThrow(/needs 36/);
  });
});

describe('text chunks', () => {
  test('adding a keyword that exists replaces it, wherever it was', () => {
    const old = withChunks(
      basePng,
      chunk('tEXt', 'parameters\0old'),
      chunk('tEXt', 'Comment\0keep me'),
    );
    // Also one after IDAT, which PNG allows.
    const iend = old.length - 12;
    const withLate = concat(
      old.subarray(0, iend),
      chunk('zTXt', bytes('parameters', [0, 0], zlib.deflateSync('late'))),
      old.subarray(iend),
    );
    const out = addPngTextChunks(withLate, [{ keyword: 'parameters', text: 'new' }]);
    expect(readPngTextChunks(out)).toEqual([
      { keyword: 'parameters', text: 'new', kind: 'tEXt' },
      { keyword: 'Comment', text: 'keep me', kind: 'tEXt' },
    ]);
    // Unicode text replacing Latin-1 text switches to iTXt.
    const again = addPngTextChunks(out, [{ keyword: 'parameters', text: 'Ω' }]);
    expect(readPngTextChunks(again)[0]).toEqual({ keyword: 'parameters', text: 'Ω', kind: 'iTXt' });
    expect(chunkTypes(again).filter((t) => t === 'IEND')).toHaveLength(1);
  });

  test('reads zTXt and compressed iTXt', () => {
    const png = withChunks(
      basePng,
      chunk(
        'zTXt',
        bytes('Description', [0, 0], zlib.deflateSync(Buffer.from('déjà vu', 'latin1'))),
      ),
      chunk(
        'iTXt',
        bytes(
          'Title',
          [0, 1, 0],
          'ja',
          [0],
          Buffer.from('題', 'utf8'),
          [0],
          zlib.deflateSync('雪山 ❄'),
        ),
      ),
      chunk('iTXt', bytes('Author', [0, 0, 0, 0, 0], Buffer.from('Zoë 🎨', 'utf8'))),
    );
    expect(readPngTextChunks(png)).toEqual([
      { keyword: 'Description', text: 'déjà vu', kind: 'zTXt' },
      { keyword: 'Title', text: '雪山 ❄', kind: 'iTXt' },
      { keyword: 'Author', text: 'Zoë 🎨', kind: 'iTXt' },
    ]);
  });

  test('keywords follow the PNG rules', () => {
    for (const keyword of [
      '',
      'x'.repeat(80),
      ' lead',
      'trail ',
      'two  spaces',
      'tab\there',
      'emoji🙂',
      'ctl\u0085',
    ]) {
      expect(() => addPngTextChunks(basePng, [{ keyword, text: 't' }])).toThrow(
        /keyword .* is invalid/,
      );
    }
    expect(() =>
      addPngTextChunks(basePng, [
        { keyword: 'a', text: '1' },
        { keyword: 'a', text: '2' },
      ]),
    ).toThrow(/more than once/);
    expect(() => addPngTextChunks(basePng, [{ keyword: 'a', text: 'nul\0' }])).toThrow(/NUL/);
    const ok = addPngTextChunks(basePng, [
      { keyword: 'x'.repeat(79), text: '' },
      { keyword: 'Ünïcødé ok', text: 'y' },
    ]);
    expect(readPngTextChunks(ok).map((c) => c.keyword)).toEqual(['x'.repeat(79), 'Ünïcødé ok']);
  });
});

describe('broken PNGs give one clear error', () => {
  test('bad signature', () => {
    const bad = basePng.slice();
    bad[1] = 0x51;
    expect(() => readPngTextChunks(bad)).toThrow(
      new PngFormatError('The data is not a PNG file: its 8-byte signature is wrong.'),
    );
    expect(() => readPngTextChunks(new Uint8Array(3))).toThrow(/signature/);
    expect(() => readPngTextChunks(new TextEncoder().encode('GIF89a not a png'))).toThrow(
      /signature/,
    );
  });

  test('truncated files, at every length', () => {
    const png = withChunks(basePng, chunk('tEXt', 'parameters\0hello'));
    for (let len = 8; len < png.length; len++) {
      expect(() => readPngTextChunks(png.subarray(0, len)), `length ${len}`).toThrow(
        PngFormatError,
      );
    }
    expect(() => readPngTextChunks(png.subarray(0, 40))).toThrow(/truncated/);
    expect(readGenerationMetadata(png.subarray(0, 40)).source).toBe('none');
  });

  test('a chunk length pointing past the end', () => {
    const png = withChunks(basePng, chunk('tEXt', 'a\0b'));
    new DataView(png.buffer).setUint32(33, 0x7ffffff0);
    expect(() => readPngTextChunks(png)).toThrow(/truncated: chunk tEXt at byte 33/);
    new DataView(png.buffer).setUint32(33, 0xfffffff0);
    expect(() => readPngTextChunks(png)).toThrow(/invalid length/);
  });

  test('bad CRC', () => {
    const png = withChunks(basePng, chunk('tEXt', 'parameters\0hello'));
    png[33 + 8 + 11] ^= 1; // flip a bit of the text
    expect(() => readPngTextChunks(png)).toThrow(
      'The PNG chunk tEXt at byte 33 is corrupt: its CRC does not match.',
    );
    expect(() => addPngTextChunks(png, [{ keyword: 'a', text: 'b' }])).toThrow(/CRC/);
  });

  test('first chunk must be IHDR, and a missing IEND is truncation', () => {
    const [, tail] = splitAfterIhdr(basePng);
    expect(() => readPngTextChunks(concat(SIGNATURE, tail))).toThrow(
      /first chunk is not a 13-byte IHDR/,
    );
    expect(() => readPngTextChunks(basePng.subarray(0, basePng.length - 12))).toThrow(
      /before its IEND/,
    );
  });

  test('a zTXt bomb stops at the size cap', () => {
    const bomb = zlib.deflateSync(Buffer.alloc(64 * 1024 * 1024, 0x41), { level: 9 });
    expect(bomb.length).toBeLessThan(200_000);
    const png = withChunks(
      basePng,
      chunk('zTXt', bytes('Comment', [0, 0], bomb)),
      chunk('tEXt', 'parameters\0x'),
    );
    expect(() => readPngTextChunks(png)).toThrow(/decompresses to more than 8388608 bytes/);
    expect(() => readPngTextChunks(png, { maxInflatedBytes: 1000 })).toThrow(
      /more than 1000 bytes/,
    );
    // The metadata reader skips the bad chunk and keeps the rest.
    expect(readPngTextChunks(png, { onBadText: 'skip' })).toEqual([
      { keyword: 'parameters', text: 'x', kind: 'tEXt' },
    ]);
    const itxtBomb = withChunks(basePng, chunk('iTXt', bytes('Comment', [0, 1, 0, 0, 0], bomb)));
    expect(() => readPngTextChunks(itxtBomb)).toThrow(/iTXt chunk "Comment" .* over the limit/);
  });

  test('corrupt zlib data and malformed text chunks', () => {
    expect(() =>
      readPngTextChunks(withChunks(basePng, chunk('zTXt', bytes('k', [0, 0], [1, 2, 3])))),
    ).toThrow(/corrupt zlib stream/);
    expect(() =>
      readPngTextChunks(withChunks(basePng, chunk('zTXt', bytes('k', [0, 7], [1])))),
    ).toThrow(/unknown compression method/);
    expect(() => readPngTextChunks(withChunks(basePng, chunk('tEXt', 'no separator')))).toThrow(
      /no valid keyword/,
    );
    expect(() =>
      readPngTextChunks(withChunks(basePng, chunk('iTXt', bytes('k', [0, 0, 0])))),
    ).toThrow(/separator/);
  });
});

describe('A1111 parameters', () => {
  test('formats a known settings object exactly', () => {
    const s = settings({
      mode: 'img2img',
      prompt: 'a cat, sitting\non a mat',
      negativePrompt: 'blurry',
      seed: 123,
      sampler: 'euler_a',
      steps: 20,
      guidance: 7,
      width: 512,
      height: 768,
      strength: 0.5,
      initImage: 'abc',
    });
    expect(
      formatA1111Parameters(s, {
        modelName: 'sd15',
        modelHash: 'abcdef1234',
        version: 'latent-studio 0.1.0',
        'Clip skip': 2,
        'Lora hashes': 'add_detail: 7c6bad76eb54',
        'Hires upscaler': 'Latent, nearest',
        'bad key!': 'skipped',
        empty: undefined,
      }),
    ).toBe(
      'a cat, sitting\non a mat\n' +
        'Negative prompt: blurry\n' +
        'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model hash: abcdef1234, Model: sd15, ' +
        'Denoising strength: 0.5, Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54", ' +
        'Hires upscaler: "Latent, nearest", Version: latent-studio 0.1.0',
    );
    // txt2img: no denoising strength; no negative line when empty.
    // The schedule as webui 1.9+ writes it, apart from the sampler.
    expect(
      formatA1111Parameters(settings({ guidance: 7.5, sampler: 'dpmpp_2m', schedule: 'karras' })),
    ).toBe(
      'a cat\nSteps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 123, Size: 512x512',
    );
    expect(formatA1111Parameters(settings({ sampler: 'heun', schedule: 'exponential' }))).toContain(
      'Sampler: Heun, Schedule type: Exponential, CFG scale',
    );
  });

  test('format -> parse round trip', () => {
    const s = settings({
      prompt: 'line one\nline two: x',
      negativePrompt: 'bad\nworse',
      mode: 'inpaint',
      strength: 0.3,
    });
    const text = formatA1111Parameters(s, { modelName: 'my, model', 'Lora hashes': 'a: 1, b: 2' });
    expect(parseA1111Parameters(text)).toEqual({
      prompt: 'line one\nline two: x',
      negativePrompt: 'bad\nworse',
      params: {
        Steps: '25',
        Sampler: 'Euler a',
        'CFG scale': '7',
        Seed: '123',
        Size: '512x512',
        Model: 'my, model',
        'Denoising strength': '0.3',
        'Lora hashes': 'a: 1, b: 2',
      },
    });
  });

  test('parses the webui docstring example', () => {
    // The example in A1111's parse_generation_parameters docstring (modules/infotext_utils.py).
    const text = `girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b`;
    const p = parseA1111Parameters(text);
    expect(p.prompt).toMatch(/^girl with .*intricate$/);
    expect(p.negativePrompt).toMatch(/^ugly, fat.*messy drawing$/);
    expect(p.params).toEqual({
      Steps: '20',
      Sampler: 'Euler a',
      'CFG scale': '7',
      Seed: '965400086',
      Size: '512x512',
      'Model hash': '45dee52b',
    });
  });

  test('multi-line prompt, no negative, quoted values with commas, webui 1.9 schedule type', () => {
    const text = [
      'masterpiece, best quality, 1girl,',
      '',
      'BREAK (cherry blossoms:1.2), <lora:add_detail:0.5>',
      'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3344556677, Size: 832x1216, ' +
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, ' +
        'ADetailer prompt: "detailed face, smile", Hires upscale: 1.5, Hires steps: 10, Hires upscaler: 4x-UltraSharp, ' +
        'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03, bad-hands-5: aa7651be15", ' +
        'Version: v1.9.4',
    ].join('\n');
    const p = parseA1111Parameters(text);
    expect(p.prompt).toBe(
      'masterpiece, best quality, 1girl,\n\nBREAK (cherry blossoms:1.2), <lora:add_detail:0.5>',
    );
    expect(p.negativePrompt).toBe('');
    expect(p.params['ADetailer prompt']).toBe('detailed face, smile');
    expect(p.params['TI hashes']).toBe('easynegative: c74b4e810b03, bad-hands-5: aa7651be15');
    expect(p.params['Lora hashes']).toBe('add_detail: 7c6bad76eb54');
    expect(p.params['Hires upscaler']).toBe('4x-UltraSharp');
    expect(p.params.Version).toBe('v1.9.4');
    expect(Object.keys(p.params)).toHaveLength(17);

    const png = addPngTextChunks(basePng, [{ keyword: 'parameters', text }]);
    expect(readGenerationMetadata(png)).toEqual({
      source: 'a1111',
      settings: {
        prompt: p.prompt,
        negativePrompt: '',
        sampler: 'dpmpp_2m',
        schedule: 'karras',
        steps: 28,
        guidance: 6.5,
        seed: 3344556677,
        width: 832,
        height: 1216,
        strength: 0.45,
      },
      raw: p.params,
    });
  });

  test('a last line with fewer than 3 pairs is part of the prompt; CRLF and escaped quotes', () => {
    expect(parseA1111Parameters('a portrait\nstyle: oil, mood: calm')).toEqual({
      prompt: 'a portrait\nstyle: oil, mood: calm',
      negativePrompt: '',
      params: {},
    });
    const p = parseA1111Parameters(
      'a\r\nNegative prompt: b\r\nSteps: 5, Sampler: Unknown Sampler X, Seed: 9, Note: "say \\"hi\\", ok"\r\n',
    );
    expect(p).toEqual({
      prompt: 'a',
      negativePrompt: 'b',
      params: { Steps: '5', Sampler: 'Unknown Sampler X', Seed: '9', Note: 'say "hi", ok' },
    });
  });

  test('unknown samplers and out-of-range values stay in raw only', () => {
    const text = 'p\nSteps: 9999, Sampler: DPM++ SDE Karras, CFG scale: 7, Seed: -1, Size: 500x512';
    const read = readGenerationMetadata(
      addPngTextChunks(basePng, [{ keyword: 'parameters', text }]),
    );
    expect(read.source).toBe('a1111');
    expect(read.settings).toEqual({ prompt: 'p', negativePrompt: '', guidance: 7, height: 512 });
    expect(read.raw.Sampler).toBe('DPM++ SDE Karras');
  });

  test('long hostile lines parse in linear time', () => {
    const long = 'a'.repeat(2_000_000);
    const started = performance.now();
    expect(parseA1111Parameters(`${long}\n${long}`).params).toEqual({});
    expect(
      parseA1111Parameters(`x\nk: ${'"'.repeat(500_000)}, ${'b '.repeat(500_000)}`).params,
    ).toEqual({});
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('our own chunk', () => {
  test('an invalid latent-studio chunk falls back to A1111', () => {
    const bad = JSON.stringify({ version: 1, settings: { model: 'm', prompt: 'x', seed: -5 } });
    const png = addPngTextChunks(basePng, [
      { keyword: 'latent-studio', text: bad },
      {
        keyword: 'parameters',
        text: 'hello\nSteps: 12, Sampler: Heun, CFG scale: 4, Seed: 77, Size: 768x512',
      },
    ]);
    const read = readGenerationMetadata(png);
    expect(read.source).toBe('a1111');
    expect(read.settings).toMatchObject({
      prompt: 'hello',
      steps: 12,
      sampler: 'heun',
      guidance: 4,
      seed: 77,
      width: 768,
    });
    for (const text of [
      'not json',
      '[]',
      '{"version":"1"}',
      JSON.stringify({ version: 1, settings: { ...settings(), extra: 1 } }),
    ]) {
      expect(
        readGenerationMetadata(addPngTextChunks(basePng, [{ keyword: 'latent-studio', text }]))
          .source,
      ).toBe('none');
    }
  });
});

describe('ComfyUI', () => {
  const prompt = comfyApiGraph({
    positive: 'masterpiece best quality girl',
    checkpoint: 'v1-5-pruned-emaonly.safetensors',
  });
  // The UI `workflow` chunk (LiteGraph serialisation), abbreviated.
  const workflow = {
    last_node_id: 9,
    last_link_id: 9,
    nodes: [
      {
        id: 3,
        type: 'KSampler',
        widgets_values: [8566257, 'fixed', 20, 8, 'dpmpp_2m', 'karras', 1],
      },
    ],
    links: [],
    version: 0.4,
  };

  test('reads the KSampler, its prompts and the latent size', () => {
    const png = addPngTextChunks(basePng, [
      { keyword: 'prompt', text: JSON.stringify(prompt) },
      { keyword: 'workflow', text: JSON.stringify(workflow) },
    ]);
    const read = readGenerationMetadata(png);
    expect(read.source).toBe('comfyui');
    expect(read.settings).toEqual({
      seed: 8566257,
      steps: 20,
      guidance: 8,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      strength: 1,
      prompt: 'masterpiece best quality girl',
      negativePrompt: 'bad hands',
      width: 768,
      height: 512,
    });
    expect(read.raw).toMatchObject({
      sampler_name: 'dpmpp_2m',
      scheduler: 'karras',
      ckpt_name: 'v1-5-pruned-emaonly.safetensors',
    });
  });

  test('two-pass graphs use the first pass; unknown samplers and huge seeds are left out', () => {
    const twoPass = {
      ...prompt,
      '10': {
        class_type: 'LatentUpscale',
        inputs: { samples: ['3', 0], width: 1536, height: 1024 },
      },
      '11': {
        class_type: 'KSampler',
        inputs: {
          ...prompt['3'].inputs,
          latent_image: ['10', 0],
          denoise: 0.5,
          sampler_name: 'uni_pc',
          seed: 2 ** 60,
        },
      },
      '6': { class_type: 'CLIPTextEncode', inputs: { clip: ['4', 1], text: ['12', 0] } },
      '12': { class_type: 'PrimitiveNode', inputs: { value: 'linked text' } },
    };
    twoPass['3'] = {
      ...prompt['3'],
      inputs: {
        ...prompt['3'].inputs,
        sampler_name: 'euler_ancestral',
        scheduler: 'normal',
        seed: 2 ** 60,
      },
    };
    const read = readGenerationMetadata(
      addPngTextChunks(basePng, [{ keyword: 'prompt', text: JSON.stringify(twoPass) }]),
    );
    expect(read.source).toBe('comfyui');
    expect(read.settings.sampler).toBe('euler_a');
    expect(read.settings.seed).toBeUndefined();
    expect(read.settings.prompt).toBe('linked text');
    expect(read.settings.width).toBe(768);
    expect(read.raw.node).toBe('3');
  });

  test('hostile graphs: wrong types, cycles, deep nesting never throw', () => {
    const cyclic = {
      '1': {
        class_type: 'KSampler',
        inputs: {
          positive: ['2', 0],
          negative: ['1', 0],
          latent_image: ['2', 0],
          seed: 'x',
          steps: [1],
          cfg: {},
        },
      },
      '2': {
        class_type: 'ConditioningCombine',
        inputs: { conditioning: ['2', 0], samples: ['2', 0] },
      },
      '3': 'not a node',
      '4': { class_type: 5, inputs: null },
    };
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    for (const text of [
      JSON.stringify(cyclic),
      deep,
      '{"a":',
      'null',
      '"str"',
      '1e400',
      JSON.stringify({ x: { class_type: 'KSampler', inputs: [] } }),
    ]) {
      const read = readGenerationMetadata(addPngTextChunks(basePng, [{ keyword: 'prompt', text }]));
      expect(['comfyui', 'none']).toContain(read.source);
    }
    const read = readGenerationMetadata(
      addPngTextChunks(basePng, [{ keyword: 'prompt', text: JSON.stringify(cyclic) }]),
    );
    expect(read).toEqual({
      source: 'comfyui',
      settings: {},
      raw: { node: '1', class_type: 'KSampler', 'sampler count': '1', seed: 'x' },
    });
  });
});

describe('InvokeAI', () => {
  // `invokeai_metadata` as written by InvokeAI's core_metadata node (invokeai/app/invocations/metadata.py,
  // CoreMetadataInvocation fields: generation_mode, positive_prompt, negative_prompt, width, height, seed,
  // rand_device, cfg_scale, steps, scheduler, model, ...).
  const meta = {
    app_version: '4.2.4',
    generation_mode: 'txt2img',
    positive_prompt: 'a lighthouse at dusk, volumetric light',
    negative_prompt: 'lowres',
    width: 768,
    height: 1024,
    seed: 2361668801,
    rand_device: 'cpu',
    cfg_scale: 7.5,
    cfg_rescale_multiplier: 0,
    steps: 30,
    scheduler: 'dpmpp_2m_k',
    model: {
      key: 'b0f6d1c8',
      hash: 'blake3:1234',
      name: 'Juggernaut XL',
      base: 'sdxl',
      type: 'main',
    },
    loras: [],
  };

  test('reads the core metadata fields and maps the scheduler', () => {
    const read = readGenerationMetadata(
      addPngTextChunks(basePng, [{ keyword: 'invokeai_metadata', text: JSON.stringify(meta) }]),
    );
    expect(read.source).toBe('invokeai');
    expect(read.settings).toEqual({
      prompt: 'a lighthouse at dusk, volumetric light',
      negativePrompt: 'lowres',
      seed: 2361668801,
      steps: 30,
      guidance: 7.5,
      width: 768,
      height: 1024,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
    });
    expect(read.raw).toMatchObject({
      scheduler: 'dpmpp_2m_k',
      model: 'Juggernaut XL',
      app_version: '4.2.4',
    });
  });

  test('unknown schedulers and wrong types are left out', () => {
    const odd = {
      ...meta,
      scheduler: 'dpmpp_2m_sde_k',
      seed: '12',
      steps: 'many',
      width: 770,
      positive_prompt: 5,
    };
    const read = readGenerationMetadata(
      addPngTextChunks(basePng, [{ keyword: 'invokeai_metadata', text: JSON.stringify(odd) }]),
    );
    expect(read.settings).toEqual({
      negativePrompt: 'lowres',
      seed: 12,
      guidance: 7.5,
      height: 1024,
    });
    expect(read.raw.scheduler).toBe('dpmpp_2m_sde_k');
  });
});

// ---------------------------------------------------------------------------------------------

describe('the schedule apart from the sampler', () => {
  test('A1111: webui 1.9+ names it in Schedule type, older versions in the sampler name', () => {
    expect(samplerFromA1111('DPM++ 2M', 'Karras')).toEqual({
      sampler: 'dpmpp_2m',
      schedule: 'karras',
    });
    expect(samplerFromA1111('DPM++ 2M Karras')).toEqual({
      sampler: 'dpmpp_2m',
      schedule: 'karras',
    });
    expect(samplerFromA1111('Euler', 'Exponential')).toEqual({
      sampler: 'euler',
      schedule: 'exponential',
    });
    expect(samplerFromA1111('Euler a', 'Automatic')).toEqual({
      sampler: 'euler_a',
      schedule: 'default',
    });
    expect(samplerFromA1111('Heun')).toEqual({ sampler: 'heun', schedule: 'default' });
    // DDIM steps on its own timesteps; a schedule we do not have stays in raw.
    expect(samplerFromA1111('DDIM', 'Karras')).toBeUndefined();
    expect(samplerFromA1111('DPM++ 2M', 'Polyexponential')).toBeUndefined();
    expect(samplerFromA1111('DPM++ SDE Karras')).toBeUndefined();

    const old = 'p\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x512';
    const png = addPngTextChunks(basePng, [{ keyword: 'parameters', text: old }]);
    expect(readGenerationMetadata(png).settings).toMatchObject({
      sampler: 'dpmpp_2m',
      schedule: 'karras',
    });
  });

  test('ComfyUI: karras and exponential for every sigma sampler, the plain ones for the rest', () => {
    expect(samplerFromComfy('euler', 'exponential')).toEqual({
      sampler: 'euler',
      schedule: 'exponential',
    });
    expect(samplerFromComfy('heun', 'karras')).toEqual({ sampler: 'heun', schedule: 'karras' });
    expect(samplerFromComfy('ddim', 'normal')).toEqual({ sampler: 'ddim', schedule: 'default' });
    expect(samplerFromComfy('ddim', 'karras')).toBeUndefined();
    expect(samplerFromComfy('euler', 'beta')).toBeUndefined();
  });

  test('our own settings written as dpmpp_2m_karras by older versions read as dpmpp_2m + karras', () => {
    const stored = { model: 'models/sd15', prompt: 'a cat', seed: 1, sampler: 'dpmpp_2m_karras' };
    const png = addPngTextChunks(basePng, [
      { keyword: 'latent-studio', text: JSON.stringify({ version: 1, settings: stored }) },
    ]);
    const read = readGenerationMetadata(png);
    expect(read.source).toBe('latent-studio');
    expect(read.settings).toMatchObject({ sampler: 'dpmpp_2m', schedule: 'karras' });
    // An explicit schedule beside a legacy id wins; new settings default to the sampler's own.
    expect(GenerationSettings.parse({ ...stored, schedule: 'exponential' })).toMatchObject({
      sampler: 'dpmpp_2m',
      schedule: 'exponential',
    });
    expect(GenerationSettings.parse({ ...stored, sampler: 'euler' }).schedule).toBe('default');
    expect(GenerationSettings.safeParse({ ...stored, schedule: 'uniform' }).success).toBe(false);
  });
});
