// The prompt field's LoRA and embedding handling in the studio: marks, token costs, the edits of
// the picker and the weight slider, and what a reused generation is missing.
import { describe, expect, it } from 'vitest';
import type { NetworkFile, NetworkList } from '../../src/shared';
import { parseEmphasis } from '../../src/renderer/lib/prompt';
import {
  insertAt,
  loraTagAt,
  markSegments,
  missingNetworks,
  promptMarks,
  retagWeight,
  textForCounting,
  withEmbeddingCost,
} from '../../src/renderer/lib/prompt-networks';

function file(kind: 'lora' | 'embedding', relativeName: string, vectors: number | null = null) {
  return {
    kind,
    name: relativeName.split('/').pop()!,
    relativeName,
    file: `/f/${relativeName}`,
    bytes: 1,
    mtime: 0,
    hash: null,
    family: null,
    vectors,
    hasPreview: false,
    problem: null,
    alias: null,
  } satisfies NetworkFile;
}

const list: NetworkList = {
  loraDir: '/l',
  embeddingsDir: '/e',
  loras: [file('lora', 'film_grain'), file('lora', 'styles/ink')],
  embeddings: [file('embedding', 'EasyNegative', 8), file('embedding', 'tiny', 1)],
  problems: [],
};

describe('prompt marks', () => {
  it('marks tags (0 tokens), embeddings (their vectors) and missing or unsupported tags', () => {
    const text = '(cat:1.2) <lora:film_grain:0.5> easynegative <lora:ghost:1> <hypernet:h:1> tiny';
    const marks = promptMarks(text, list);
    expect(marks.map((m) => [m.kind, m.name, m.cost, m.missing])).toEqual([
      ['lora', 'film_grain', 0, false],
      ['embedding', 'EasyNegative', 8, false],
      ['lora', 'ghost', 0, true],
      ['unsupported', 'h', 0, true],
      ['embedding', 'tiny', 1, false],
    ]);
    expect(marks[0].title).toBe('LoRA film_grain: weight 0.5, 0 tokens');
    expect(marks[2].title).toBe('LoRA "ghost" is not in the LoRA folder');
    // Before the folders are listed nothing is called missing.
    expect(promptMarks('<lora:ghost:1>', null)[0].missing).toBe(false);
  });

  it('counts the text without tags and embeddings, then adds the vectors chunk by chunk', () => {
    const text = 'a <lora:film_grain:0.5>cat, EasyNegative';
    expect(textForCounting(text, promptMarks(text, list))).toBe('a cat, ');
    expect(withEmbeddingCost([10], [8])).toEqual([18]);
    // An embedding that does not fit in the chunk starts the next one, as A1111 places them.
    expect(withEmbeddingCost([70], [8])).toEqual([70, 8]);
    expect(withEmbeddingCost([], [3])).toEqual([3]);
    // Longer than a chunk: split over chunks.
    expect(withEmbeddingCost([74], [80])).toEqual([75, 75, 4]);
  });

  it('cuts the emphasis segments where marks begin and end, keeping every character', () => {
    const text = '(a <lora:film_grain:1>:1.2) EasyNegative';
    const pieces = markSegments(parseEmphasis(text), promptMarks(text, list));
    expect(pieces.map((p) => p.text).join('')).toBe(text);
    const tagged = pieces
      .filter((p) => p.mark?.kind === 'lora')
      .map((p) => p.text)
      .join('');
    expect(tagged).toBe('<lora:film_grain:1>');
    expect(pieces.find((p) => p.mark?.kind === 'lora')!.weight).toBeCloseTo(1.2, 6);
    expect(pieces.filter((p) => p.mark?.kind === 'embedding').map((p) => p.text)).toEqual([
      'EasyNegative',
    ]);
  });
});

describe('picker and slider edits', () => {
  it('inserts at the caret with a space on each side only where needed', () => {
    expect(insertAt('a cat', 5, 5, '<lora:x:1>')).toEqual({ text: 'a cat <lora:x:1>', caret: 16 });
    expect(insertAt('a cat, dog', 6, 6, 'tiny')).toEqual({ text: 'a cat, tiny dog', caret: 11 });
    expect(insertAt('', 0, 0, 'tiny')).toEqual({ text: 'tiny', caret: 4 });
    // A selection is replaced.
    expect(insertAt('a BIG cat', 2, 5, 'small').text).toBe('a small cat');
  });

  it('finds the tag at the caret and rewrites its weight', () => {
    const text = 'a <lora:film_grain:0.5:1.5> cat';
    expect(loraTagAt(text, 1)).toBeUndefined();
    const tag = loraTagAt(text, 10)!;
    expect(tag.name).toBe('film_grain');
    expect(loraTagAt(text, text.indexOf('>') + 1)?.name).toBe('film_grain');
    expect(retagWeight(text, tag, 0.75)).toEqual({
      text: 'a <lora:film_grain:0.75> cat',
      tag: '<lora:film_grain:0.75>',
    });
  });

  it('names what a reused generation needs that the folders lack', () => {
    expect(
      missingNetworks(
        {
          prompt: '<lora:film_grain:1> <lora:gone:1> <lora:ink:1>',
          negativePrompt: '<lora:gone:2>',
        },
        list,
        ['easynegative', 'badhands'],
      ),
    ).toEqual({ loras: ['gone'], embeddings: ['badhands'] });
  });
});
