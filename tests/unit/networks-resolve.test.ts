// LoRA tags and embedding names, from a prompt to the files and the infotext, as A1111 writes
// and reads them. The infotext lines are A1111's own output as published with images (web UI
// 1.3.1 and 1.6.0, quoted in public infotext parsers' test data), so the round trip is checked
// against the real format, not against our writer.
import { describe, expect, it } from 'vitest';
import type { ScannedFile } from '../../src/main/adapters/scan';
import { findLora, resolveNetworks, usedEmbeddings } from '../../src/main/adapters/resolve';
import { formatA1111Parameters, parseA1111Parameters } from '../../src/main/library/png-metadata';
import { settingsFromA1111 } from '../../src/main/library/png/foreign';
import {
  GenerationSettings,
  StudioError,
  findEmbeddingWords,
  networkInfotextFields,
  parseNetworkHashes,
  parseNetworkTags,
} from '../../src/shared';

/** A1111 1.3.1: one LoRA, its name with a space, tagged in the prompt. */
const A1111_LORA = `masterpiece,gufeng boy,<lora:gufeng boy_20230805210621:0.8>,armor
Negative prompt: (worst quality:2),lowres
Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1008176401, Size: 512x768, Model hash: 87ce93011a, Model: majicMIX alpha 麦橘男团, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, Lora hashes: "gufeng boy_20230805210621: 60129e9d06ab", Version: v1.3.1`;

/** A1111 1.6.0's parameters line with both lists (TI hashes repeats names, as it wrote them). */
const A1111_BOTH_LINE =
  'Steps: 40, Sampler: DPM++ 2M Karras, CFG scale: 8, Seed: 1429876294, Size: 512x512, Model hash: 61bc7001e8, Model: anyhentai_20, Denoising strength: 0.7, Clip skip: 2, Hires upscale: 1.5, Hires steps: 10, Hires upscaler: Latent, Lora hashes: "concept_sunbathing: 7b93421e39bd", TI hashes: "EasyNegativeV2: 339cc9210f70, FastNegativeV2: a7465e7cc2a2, EasyNegativeV2: 339cc9210f70, FastNegativeV2: a7465e7cc2a2", Version: 1.6.0';

function file(kind: 'lora' | 'embedding', relativeName: string, extra: Partial<ScannedFile> = {}) {
  const name = relativeName.split('/').pop()!;
  return {
    kind,
    name,
    relativeName,
    file: `/folder/${relativeName}.safetensors`,
    bytes: 1,
    mtime: 0,
    hash: null,
    family: null,
    vectors: kind === 'embedding' ? 2 : null,
    hasPreview: false,
    previewFile: null,
    problem: null,
    alias: null,
    ...extra,
  } satisfies ScannedFile;
}

const catalog = {
  loraDir: '/data/models/Lora',
  embeddingsDir: '/data/embeddings',
  loras: [
    file('lora', 'film_grain'),
    file('lora', 'styles/ink'),
    file('lora', 'other/ink'),
    file('lora', 'kohya_run_17', { alias: 'detail' }),
  ],
  embeddings: [file('embedding', 'EasyNegative'), file('embedding', 'badhands')],
};
/** A fake hash per file: the first hex digits of its path's characters, 64 long. */
const hashOf = async (_kind: string, f: string) =>
  Buffer.from(f).toString('hex').padEnd(64, '0').slice(0, 64);

describe('A1111 infotext: Lora hashes and TI hashes', () => {
  it('reads the lists out of real A1111 infotexts', () => {
    const parsed = parseA1111Parameters(A1111_LORA);
    expect(parsed.params['Lora hashes']).toBe('gufeng boy_20230805210621: 60129e9d06ab');
    expect(parseNetworkHashes(parsed.params['Lora hashes'])).toEqual([
      { name: 'gufeng boy_20230805210621', hash: '60129e9d06ab' },
    ]);
    // The tag stays in the prompt, which is how reusing the image restores the LoRA.
    const { settings } = settingsFromA1111(parsed);
    expect(parseNetworkTags(settings.prompt ?? '').tags.map((t) => [t.name, t.teWeight])).toEqual([
      ['gufeng boy_20230805210621', 0.8],
    ]);

    const both = parseA1111Parameters(`a beach\n${A1111_BOTH_LINE}`).params;
    expect(parseNetworkHashes(both['Lora hashes'])).toEqual([
      { name: 'concept_sunbathing', hash: '7b93421e39bd' },
    ]);
    expect(parseNetworkHashes(both['TI hashes']).map((h) => h.name)).toEqual([
      'EasyNegativeV2',
      'FastNegativeV2',
      'EasyNegativeV2',
      'FastNegativeV2',
    ]);
    expect(both.Version).toBe('1.6.0');
  });

  it('writes them exactly as A1111 does, and reads its own lines back', () => {
    const fields = networkInfotextFields({
      loraHashes: [
        { name: 'gufeng boy_20230805210621', hash: '60129e9d06ab' },
        { name: 'film_grain', hash: '0123456789ab' },
      ],
      tiHashes: [{ name: 'EasyNegative', hash: 'c74b4e810b03' }],
    });
    const settings = GenerationSettings.parse({
      model: 'm',
      prompt: 'masterpiece,<lora:gufeng boy_20230805210621:0.8> <lora:film_grain:0.5>',
      negativePrompt: 'EasyNegative',
      seed: 1008176401,
    });
    const text = formatA1111Parameters(settings, { modelName: 'm', ...fields, version: 'x' });
    const line = text.split('\n').pop()!;
    expect(line).toContain(
      ', Lora hashes: "gufeng boy_20230805210621: 60129e9d06ab, film_grain: 0123456789ab", TI hashes: "EasyNegative: c74b4e810b03", Version: x',
    );
    const back = parseA1111Parameters(text);
    expect(back.prompt).toBe(settings.prompt);
    expect(back.params['Lora hashes']).toBe(fields['Lora hashes']);
    expect(back.params['TI hashes']).toBe(fields['TI hashes']);
    expect(networkInfotextFields({ loraHashes: [], tiHashes: [] })).toEqual({});
  });

  it('skips pieces that are not name: hash', () => {
    expect(parseNetworkHashes('a: 0123456789ab, nonsense, b:zz, c: ABCDEF123456')).toEqual([
      { name: 'a', hash: '0123456789ab' },
      { name: 'c', hash: 'abcdef123456' },
    ]);
    expect(parseNetworkHashes(undefined)).toEqual([]);
  });
});

describe('finding files by the names prompts use', () => {
  it('finds a LoRA by file name exactly (case counts, as in A1111), by subfolder path, or by alias', () => {
    expect(findLora(catalog.loras, 'film_grain')?.relativeName).toBe('film_grain');
    expect(findLora(catalog.loras, 'Film_Grain')).toBeUndefined();
    // Two files named ink: the bare name takes the first by path; the path picks either.
    expect(findLora(catalog.loras, 'ink')?.relativeName).toBe('styles/ink');
    expect(findLora(catalog.loras, 'other/ink')?.relativeName).toBe('other/ink');
    expect(findLora(catalog.loras, 'other\\ink')?.relativeName).toBe('other/ink');
    expect(findLora(catalog.loras, 'detail')?.relativeName).toBe('kohya_run_17');
  });

  it('finds embeddings as whole words in any case, never inside words or LoRA tags', () => {
    const text = 'easynegative, (BadHands:1.2), badhandsv2, <lora:badhands:1>, x-EasyNegative';
    expect(findEmbeddingWords(text, ['EasyNegative', 'badhands']).map((m) => m.start)).toEqual([
      0,
      15,
      text.indexOf('EasyNegative', 40),
    ]);
    expect(usedEmbeddings('no embeddings here', catalog.embeddings)).toEqual([]);
  });
});

describe('resolveNetworks', () => {
  it('turns tags of both prompts into the engine request and the infotext lists', async () => {
    const r = await resolveNetworks(
      {
        prompt: 'a cat <lora:film_grain:0.6> <lora:other/ink:0.5:1.5>, EasyNegative',
        negativePrompt: 'badhands <lora:detail:-1>',
      },
      catalog,
      hashOf,
    );
    expect(r.loras).toEqual([
      {
        path: '/folder/film_grain.safetensors',
        name: 'film_grain',
        teWeight: 0.6,
        unetWeight: 0.6,
      },
      { path: '/folder/other/ink.safetensors', name: 'other/ink', teWeight: 0.5, unetWeight: 1.5 },
      { path: '/folder/kohya_run_17.safetensors', name: 'detail', teWeight: -1, unetWeight: -1 },
    ]);
    expect(r.embeddings).toEqual([
      { token: 'EasyNegative', path: '/folder/EasyNegative.safetensors' },
      { token: 'badhands', path: '/folder/badhands.safetensors' },
    ]);
    expect(r.loraHashes.map((h) => h.name)).toEqual(['film_grain', 'other/ink', 'detail']);
    expect(r.loraHashes[0].hash).toBe(
      (await hashOf('lora', '/folder/film_grain.safetensors')).slice(0, 12),
    );
    expect(r.tiHashes.map((h) => h.hash.length)).toEqual([12, 12]);
  });

  it('fails before anything loads, naming every missing LoRA and its folder', async () => {
    const err = await resolveNetworks(
      {
        prompt: '<lora:nope:1> <lora:film_grain> <lora:gone:0.5> <lora:nope:0.2>',
        negativePrompt: '',
      },
      catalog,
      hashOf,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StudioError);
    expect((err as StudioError).code).toBe('not-found');
    expect((err as Error).message).toBe(
      'The LoRA "nope" and "gone" are not in the LoRA folder /data/models/Lora: add the file there (or fix the tag\'s name) and try again.',
    );
  });

  it('says why a hypernetwork, an unknown kind or an unreadable weight is refused', async () => {
    const refuse = (prompt: string) =>
      resolveNetworks({ prompt, negativePrompt: '' }, catalog, hashOf).then(
        () => '',
        (e: Error) => e.message,
      );
    expect(await refuse('x <hypernet:anime:1>')).toMatch(
      /^The tag <hypernet:anime:1> asks for a hypernetwork, which Latent Studio does not apply; remove it/,
    );
    expect(await refuse('<lyco:film_grain:1> <foo:bar>')).toMatch(/of a kind \("foo"\)/);
    expect(await refuse('<lora:film_grain:strong>')).toBe(
      'The tag <lora:film_grain:strong> cannot be read: "strong" is not a number; write it as <lora:name:weight>.',
    );
  });

  it('takes files given outside the folder (the command line --lora) by their tag name', async () => {
    const r = await resolveNetworks(
      { prompt: 'x <lora:mine:0.7>', negativePrompt: '' },
      catalog,
      hashOf,
      new Map([['mine', '/elsewhere/mine.safetensors']]),
    );
    expect(r.loras).toEqual([
      { path: '/elsewhere/mine.safetensors', name: 'mine', teWeight: 0.7, unetWeight: 0.7 },
    ]);
  });

  it('writes names with : or , as A1111 does in the lists (without them)', async () => {
    const r = await resolveNetworks(
      { prompt: '<lora:a,b:1>', negativePrompt: '' },
      { ...catalog, loras: [file('lora', 'a,b')] },
      hashOf,
    );
    expect(r.loraHashes[0].name).toBe('ab');
    expect(r.loras[0].name).toBe('a,b');
  });
});
