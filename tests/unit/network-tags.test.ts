import { describe, expect, it } from 'vitest';
import { formatLoraTag, parseNetworkTags } from '../../src/shared/network-tags';

describe('parseNetworkTags', () => {
  it('takes LoRA tags out of the prompt as A1111 does, keeping the rest of the text', () => {
    const parsed = parseNetworkTags('a cat <lora:film_grain:0.6>, (sunset:1.2) <lora:detail>');
    expect(parsed.prompt).toBe('a cat , (sunset:1.2) ');
    expect(parsed.tags.map((t) => [t.kind, t.name, t.teWeight, t.unetWeight])).toEqual([
      ['lora', 'film_grain', 0.6, 0.6],
      ['lora', 'detail', 1, 1],
    ]);
    expect(parsed.tags[0].raw).toBe('<lora:film_grain:0.6>');
    expect(parsed.tags[0].start).toBe(6);
    expect(parsed.tags[0].end).toBe(6 + '<lora:film_grain:0.6>'.length);
  });

  it('reads separate text-encoder and UNet weights, positional and named', () => {
    const [a, b, c] = parseNetworkTags('<lora:a:0.5:1.25><lora:b:unet=0.3:te=0.7><lyco:c:-1>').tags;
    expect([a.teWeight, a.unetWeight]).toEqual([0.5, 1.25]);
    expect([b.teWeight, b.unetWeight]).toEqual([0.7, 0.3]);
    expect([c.kind, c.teWeight, c.unetWeight]).toEqual(['lora', -1, -1]);
  });

  it('keeps subfolder names and reports arguments it cannot read, other kinds by their kind', () => {
    const parsed = parseNetworkTags('x <lora:styles/ink:abc> <hypernet:old:1> <lora::1>');
    expect(parsed.prompt).toBe('x   ');
    expect(parsed.tags[0]).toMatchObject({ name: 'styles/ink', error: '"abc" is not a number' });
    expect(parsed.tags[1]).toMatchObject({ kind: 'hypernet', name: 'old' });
    expect(parsed.tags[2].error).toBe('the tag names no file');
  });

  it('leaves text without tags, and brackets that are not tags, alone', () => {
    expect(parseNetworkTags('a <b> c <d e:1>')).toEqual({ prompt: 'a <b> c <d e:1>', tags: [] });
  });

  it('formats tags as A1111 writes them', () => {
    expect(formatLoraTag('ink', 0.8)).toBe('<lora:ink:0.8>');
    expect(formatLoraTag('ink', 0.8, 1)).toBe('<lora:ink:0.8:1>');
    const round = parseNetworkTags(formatLoraTag('ink', 1 / 3)).tags[0];
    expect(round.teWeight).toBeCloseTo(0.333, 6);
  });
});
