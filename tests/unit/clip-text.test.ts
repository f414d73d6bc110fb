import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, cleanText, unescapeHtml } from '../../src/engine/tokenizer';
import { fixText } from '../../src/engine/tokenizer/ftfy';
import { readClipBpeVocabulary } from '../fixtures/clip-tokenizer';

// Reference values recorded from OpenAI CLIP's own tokenizer (simple_tokenizer.py) with ftfy
// 6.3.1 on CLIP's own vocabulary, by tools/reference/record_clip_text.py.
interface Entry {
  kind: string;
  text: string;
  /** ftfy.fix_text(text) */
  fixed: string;
  /** whitespace_clean(basic_clean(text)).lower() */
  cleaned: string;
  /** SimpleTokenizer.encode(text) */
  ids: number[];
}
const reference = JSON.parse(
  readFileSync(new URL('../fixtures/reference/clip-text-ids.json', import.meta.url), 'utf8'),
) as { entries: Entry[] };
const label = (e: Entry): string => `${e.kind}: ${JSON.stringify(e.text)}`;

let clip: ClipTokenizer;
beforeAll(async () => {
  const { vocab, merges, bosToken, eosToken } = await readClipBpeVocabulary();
  clip = new ClipTokenizer({ vocab, merges, bosToken, eosToken });
});

describe("CLIP's text cleaning against CLIP's tokenizer", () => {
  it('covers every kind the fixture was recorded for', () => {
    expect(reference.entries.length).toBeGreaterThanOrEqual(45);
  });

  it.each(reference.entries.map((e) => [label(e), e] as const))('fix_text: %s', (_name, entry) => {
    expect(fixText(entry.text)).toBe(entry.fixed);
  });

  it.each(reference.entries.map((e) => [label(e), e] as const))(
    'cleaned text: %s',
    (_name, entry) => {
      expect(cleanText(entry.text)).toBe(entry.cleaned);
    },
  );

  it.each(reference.entries.map((e) => [label(e), e] as const))('token ids: %s', (_name, entry) => {
    expect(clip.encode(entry.text)).toEqual(entry.ids);
  });

  it('frames the ids as the text encoder takes them', () => {
    const entry = reference.entries.find((e) => e.kind === 'mojibake latin-1')!;
    const row = clip.encodeForModel(entry.text);
    expect(row).toHaveLength(77);
    expect(row.slice(0, entry.ids.length + 2)).toEqual([49406, ...entry.ids, 49407]);
  });
});

describe("Python's html.unescape", () => {
  it('resolves names with and without a semicolon, and the longest legacy prefix', () => {
    expect(unescapeHtml('&copy &copyright &amp;amp; &notin; &notit;')).toBe(
      '© ©right &amp; ∉ ¬it;',
    );
  });

  it('follows Python for numeric references: replacements, dropped code points, out of range', () => {
    expect(
      unescapeHtml('&#x80;|&#1;|&#xFFFF;|&#x1FFFE;|&#xD800;|&#99999999999999999999;|&#0;'),
    ).toBe('€||||\ufffd|\ufffd|\ufffd');
    expect(unescapeHtml('&#0000065;&#x41&#97x&#x;')).toBe('AAax&#x;');
  });

  it('leaves unknown names and bare ampersands alone', () => {
    expect(unescapeHtml('&xyz; a & b &; &#;')).toBe('&xyz; a & b &; &#;');
  });
});
