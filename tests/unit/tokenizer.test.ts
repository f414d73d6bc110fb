import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BYTE_SYMBOLS_IN_VOCAB_ORDER,
  BYTE_TO_CHAR,
  ClipTokenizer,
  END_OF_WORD,
  cleanText,
  splitWords,
} from '../../src/engine/tokenizer';
import { buildClipTokenizerData, writeClipTokenizerFiles } from '../fixtures/clip-tokenizer';

// These tests use the fixture tokenizer (tests/fixtures/clip-tokenizer.ts): CLIP's layout with
// a few hundred merges learned from a small corpus, small enough to reason about by hand. The
// ids of CLIP's own vocabulary are checked against CLIP's own tokenizer in clip-text.test.ts. Its byte-level ids (0-511) are laid out exactly as CLIP's: "!" is 0, "a</w>" is
// 320 and ",</w>" is 267 in both.

const data = buildClipTokenizerData();
const ranks = new Map(data.merges.map(([a, b], i) => [`${a} ${b}`, i]));
const v = (token: string): number => {
  const id = data.vocab[token];
  if (id === undefined) throw new Error(`fixture vocab lacks ${token}`);
  return id;
};
/** Vocabulary id of byte `b` as a word-inner symbol, or as the last symbol (`</w>`). */
const byteId = (b: number, last = false): number =>
  BYTE_SYMBOLS_IN_VOCAB_ORDER.indexOf(BYTE_TO_CHAR[b]) + (last ? 256 : 0);

let root: string;
let tok: ClipTokenizer; // vocab.json + merges.txt, pad <|endoftext|>
let tokBang: ClipTokenizer; // pad "!"

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'clip-tok-'));
  await writeClipTokenizerFiles(path.join(root, 'sd1'));
  await writeClipTokenizerFiles(path.join(root, 'sd2'), { pad: '!' });
  await writeClipTokenizerFiles(path.join(root, 'json-strings'), { format: 'tokenizer.json' });
  await writeClipTokenizerFiles(path.join(root, 'json-pairs'), {
    format: 'tokenizer.json',
    tokenizerJsonMerges: 'pairs',
  });
  tok = await ClipTokenizer.fromFolder(path.join(root, 'sd1'));
  tokBang = await ClipTokenizer.fromFolder(path.join(root, 'sd2'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('fixture tokenizer files', () => {
  it('has CLIP layout: 256 bytes, 256 </w> forms, merges, then BOS and EOS last', () => {
    const size = Object.keys(data.vocab).length;
    expect(data.merges.length).toBeGreaterThanOrEqual(300);
    expect(v('!')).toBe(0);
    expect(v('!</w>')).toBe(256);
    expect(v('a</w>')).toBe(320);
    expect(v(',</w>')).toBe(267);
    expect(v('<|startoftext|>')).toBe(size - 2);
    expect(v('<|endoftext|>')).toBe(size - 1);
    expect(new Set(Object.values(data.vocab)).size).toBe(size);
  });

  it('is deterministic', () => {
    expect(buildClipTokenizerData()).toEqual(data);
  });
});

describe('ClipTokenizer BPE', () => {
  it('reads BOS, EOS and pad ids from the files', () => {
    expect(tok.bosId).toBe(v('<|startoftext|>'));
    expect(tok.eosId).toBe(v('<|endoftext|>'));
    expect(tok.padId).toBe(tok.eosId);
    expect(tokBang.padId).toBe(0);
    expect(tok.maxLength).toBe(77);
    expect(tok.chunkLength).toBe(75);
    expect(tok.vocabSize).toBe(Object.keys(data.vocab).length);
  });

  it('does not hard-code special ids', () => {
    const vocab = { ...data.vocab, '<|startoftext|>': 5000, '<|endoftext|>': 5001 };
    const t = new ClipTokenizer({ vocab, merges: data.merges });
    expect(t.encodeForModel('red').slice(0, 4)).toEqual([5000, v('red</w>'), 5001, 5001]);
  });

  it('applies merges by rank: "zebra" (a word the corpus never saw)', () => {
    // z e b r a</w>: of the pairs (z,e) (e,b) (b,r) (r,a</w>) only "b r" has a rank, so
    // -> z e br a</w>; then (z,e) (e,br) (br,a</w>) have none: four tokens.
    expect(ranks.has('b r')).toBe(true);
    for (const p of ['z e', 'e b', 'r a</w>', 'e br', 'br a</w>']) expect(ranks.has(p)).toBe(false);
    expect(tok.encode('zebra')).toEqual([byteId(0x7a), byteId(0x65), v('br'), v('a</w>')]);
    expect(tok.encode('zebra')).toEqual([89, 68, v('br'), 320]);
  });

  it('applies merges by rank: "hello"', () => {
    // h e l l o</w>: only "e l" is ranked -> h el l o</w>; (h,el) (el,l) (l,o</w>) are not.
    for (const p of ['h e', 'l l', 'l o</w>', 'h el', 'el l']) expect(ranks.has(p)).toBe(false);
    expect(tok.encode('hello')).toEqual([v('h'), v('el'), v('l'), v('o</w>')]);
  });

  it('applies merges by rank: corpus words become single tokens', () => {
    // r e d</w>: "r e" (rank 2) -> re d</w>; "re d</w>" -> red</w>.
    expect(ranks.get('r e')!).toBeLessThan(ranks.get('re d</w>')!);
    expect(tok.encode('red')).toEqual([v('red</w>')]);
    // c i r c l e</w>: "c ir" needs "i r" first; "c le</w>" needs "l e</w>"; then "cir cle</w>".
    expect(ranks.get('i r')!).toBeLessThan(ranks.get('c ir')!);
    expect(ranks.get('l e</w>')!).toBeLessThan(ranks.get('c le</w>')!);
    expect(tok.encode('circle')).toEqual([v('circle</w>')]);
    expect(tok.encode('A small red circle, in the top-left!')).toEqual(
      ['a', 'small', 'red', 'circle', ',', 'in', 'the', 'top', '-', 'left', '!'].map((w) =>
        v(w + END_OF_WORD),
      ),
    );
  });

  it('rank order decides between overlapping merges (hand-built vocab)', () => {
    const base: Record<string, number> = {};
    BYTE_SYMBOLS_IN_VOCAB_ORDER.forEach((s, i) => {
      base[s] = i;
      base[s + END_OF_WORD] = i + 256;
    });
    const vocab = { ...base, aa: 512, 'aa</w>': 513, '<|startoftext|>': 514, '<|endoftext|>': 515 };
    // a a a</w>: with "a a" first, the leftmost (a,a) merges -> aa a</w>.
    const first = new ClipTokenizer({ vocab, merges: ['#version: 0.2', 'a a', 'a a</w>'] });
    expect(first.encode('aaa')).toEqual([512, base['a</w>']]);
    // With "a a</w>" first -> a aa</w>.
    const second = new ClipTokenizer({ vocab, merges: ['a a</w>', 'a a'] });
    expect(second.encode('aaa')).toEqual([base.a, 513]);
    // a a a a</w> with "a a" first: both (a,a) pairs merge in one pass -> aa aa</w>? No: the
    // second pair is (a, a</w>), so -> aa a a</w>, then (a, a</w>) -> aa aa</w>.
    expect(first.encode('aaaa')).toEqual([512, 513]);
  });

  it('maps symbols missing from the vocab to the unknown (EOS) id', () => {
    const vocab = { ...data.vocab };
    delete vocab['q'];
    const t = new ClipTokenizer({ vocab, merges: data.merges });
    expect(t.encode('qz')).toEqual([t.eosId, v('z</w>')]);
  });

  it('gives identical ids from vocab.json + merges.txt and from tokenizer.json', async () => {
    const fromStrings = await ClipTokenizer.fromFolder(path.join(root, 'json-strings'));
    const fromPairs = await ClipTokenizer.fromFolder(path.join(root, 'json-pairs'));
    const prompts = [
      'a small red circle in the top left on a blue background',
      'zebra, xylophone & quantum café 🐱 — 1234',
      "it's a bright day, we're on the hill",
      '',
    ];
    for (const p of prompts) {
      expect(fromStrings.encodeForModel(p)).toEqual(tok.encodeForModel(p));
      expect(fromPairs.encodeForModel(p)).toEqual(tok.encodeForModel(p));
    }
    expect([fromStrings.bosId, fromStrings.eosId, fromStrings.padId]).toEqual([
      tok.bosId,
      tok.eosId,
      tok.padId,
    ]);
  });

  it('frames one model row: BOS, tokens, EOS, then padding to 77', () => {
    const row = tok.encodeForModel('red circle');
    expect(row).toHaveLength(77);
    expect(row.slice(0, 4)).toEqual([tok.bosId, v('red</w>'), v('circle</w>'), tok.eosId]);
    expect(row.slice(4).every((id) => id === tok.eosId)).toBe(true);
    const bang = tokBang.encodeForModel('red circle');
    expect(bang.slice(0, 4)).toEqual(row.slice(0, 4));
    expect(bang.slice(4).every((id) => id === 0)).toBe(true);
    // Truncates to 75 prompt tokens; EOS stays at the end.
    const long = tokBang.encodeForModel('red '.repeat(100));
    expect(long).toHaveLength(77);
    expect(long[76]).toBe(tokBang.eosId);
    expect(long[75]).toBe(v('red</w>'));
  });

  it('maps the special-token text to the special ids', () => {
    expect(tok.encode('red <|endoftext|> blue')).toEqual([v('red</w>'), tok.eosId, v('blue</w>')]);
  });
});

describe('text cleaning and splitting', () => {
  it('collapses whitespace, strips and lowercases', () => {
    expect(cleanText('  A   Small\n\tRED  Circle ')).toBe('a small red circle');
    expect(tok.encode('  A   Small\n\tRED  ')).toEqual(tok.encode('a small red'));
  });

  it('unescapes HTML entities, twice', () => {
    expect(cleanText('cats &amp; dogs &lt;3 &#39;x&#x27; &amp;amp;')).toBe("cats & dogs <3 'x' &");
    expect(tok.encode('red &amp; blue')).toEqual(tok.encode('red & blue'));
  });

  it('splits contractions, letter runs, single digits and punctuation runs', () => {
    expect(splitWords(cleanText("It's 42 cats!!! we're ok"))).toEqual([
      'it',
      "'s",
      '4',
      '2',
      'cats',
      '!!!',
      'we',
      "'re",
      'ok',
    ]);
    expect(splitWords('<|startoftext|>hi')).toEqual(['<|startoftext|>', 'hi']);
  });

  it('encodes emoji and accented text byte by byte', () => {
    // 🐱 is UTF-8 F0 9F 90 B1; no fixture merge joins these bytes, so four byte tokens, the
    // last with </w>. F0 -> 172 (printable range), 9F -> 253 and 90 -> 238 (remapped bytes),
    // B1 -> 109 + 256.
    expect(tok.encode('🐱')).toEqual([172, 253, 238, 365]);
    expect(tok.encode('🐱')).toEqual([
      byteId(0xf0),
      byteId(0x9f),
      byteId(0x90),
      byteId(0xb1, true),
    ]);
    // "é" is C3 A9: 'caf' then the two bytes, the last ending the word.
    const cafe = tok.encode('Café');
    expect(cafe.slice(-2)).toEqual([byteId(0xc3), byteId(0xa9, true)]);
    // NFC: a decomposed é (e + U+0301) encodes the same as the composed one.
    expect(tok.encode('Cafe\u0301')).toEqual(cafe);
    expect(tok.encode('日本 – ✓ 🐱🐶').every((id) => id >= 0 && id < tok.vocabSize)).toBe(true);
  });
});

describe('tokenizeWeighted (A1111 chunks)', () => {
  const red = () => v('red</w>');
  const blue = () => v('blue</w>');

  it('gives one framed chunk for an empty prompt', () => {
    const r = tok.tokenizeWeighted('');
    expect(r.chunks).toHaveLength(1);
    expect(r.chunks[0].ids).toEqual([tok.bosId, tok.eosId, ...new Array(75).fill(tok.padId)]);
    expect(r.chunks[0].weights).toEqual(new Array(77).fill(1));
    expect(r.tokenCount).toBe(0);
    expect(r.chunkTokenCounts).toEqual([0]);
    expect(tokBang.tokenizeWeighted('').chunks[0].ids.slice(0, 3)).toEqual([
      tokBang.bosId,
      tokBang.eosId,
      0,
    ]);
  });

  it('carries emphasis weights per token, 1.0 on BOS, EOS and padding', () => {
    const r = tok.tokenizeWeighted('a (red:1.5) [circle]');
    const c = r.chunks[0];
    expect(c.ids.slice(0, 5)).toEqual([tok.bosId, v('a</w>'), red(), v('circle</w>'), tok.eosId]);
    expect(c.weights.slice(0, 5)).toEqual([1, 1, 1.5, 1 / 1.1, 1]);
    expect(c.weights.slice(5).every((w) => w === 1)).toBe(true);
    expect(r.tokenCount).toBe(3);
  });

  it('fits exactly 75 tokens in one chunk and spills the 76th', () => {
    const one = tok.tokenizeWeighted('red '.repeat(75));
    expect(one.chunks).toHaveLength(1);
    expect(one.chunks[0].ids[76]).toBe(tok.eosId);
    const two = tokBang.tokenizeWeighted('red '.repeat(76));
    expect(two.chunks).toHaveLength(2);
    expect(two.chunkTokenCounts).toEqual([75, 1]);
    expect(two.tokenCount).toBe(76);
    expect(two.chunks[0].ids).toEqual([tokBang.bosId, ...new Array(75).fill(red()), tokBang.eosId]);
    expect(two.chunks[1].ids.slice(0, 4)).toEqual([tokBang.bosId, red(), tokBang.eosId, 0]);
  });

  it('moves the words after a late comma into the next chunk', () => {
    // 60 red, a comma at index 60, then 20 blue. The chunk fills at 75 (comma + 14 blue); the
    // next blue finds the last comma 15 <= 20 tokens back, so the 14 blues move on.
    const prompt = `${'red '.repeat(60)}, ${'blue '.repeat(20)}`;
    const r = tok.tokenizeWeighted(prompt);
    expect(r.chunks).toHaveLength(2);
    expect(r.chunkTokenCounts).toEqual([61, 20]);
    expect(r.chunks[0].ids).toEqual([
      tok.bosId,
      ...new Array(60).fill(red()),
      v(',</w>'),
      tok.eosId,
      ...new Array(14).fill(tok.padId),
    ]);
    expect(r.chunks[1].ids.slice(0, 22)).toEqual([
      tok.bosId,
      ...new Array(20).fill(blue()),
      tok.eosId,
    ]);
    expect(r.tokenCount).toBe(75 + 20);
  });

  it('keeps the chunk full when the comma is more than 20 tokens back, or backtracking is off', () => {
    const prompt = `${'red '.repeat(40)}, ${'blue '.repeat(40)}`;
    expect(tok.tokenizeWeighted(prompt).chunkTokenCounts).toEqual([75, 6]);
    const near = `${'red '.repeat(60)}, ${'blue '.repeat(20)}`;
    expect(tok.tokenizeWeighted(near, { commaBacktrack: 0 }).chunkTokenCounts).toEqual([75, 6]);
  });

  it('starts a new chunk at BREAK', () => {
    const r = tok.tokenizeWeighted('red BREAK blue');
    expect(r.chunks).toHaveLength(2);
    expect(r.chunks[0].ids.slice(0, 3)).toEqual([tok.bosId, red(), tok.eosId]);
    expect(r.chunks[1].ids.slice(0, 3)).toEqual([tok.bosId, blue(), tok.eosId]);
    expect(r.chunkTokenCounts).toEqual([1, 1]);
    expect(r.tokenCount).toBe(76); // A1111 counts a closed chunk as 75
    // Two BREAKs in a row leave an empty chunk between them, as in A1111.
    expect(tok.tokenizeWeighted('red BREAK BREAK blue').chunkTokenCounts).toEqual([1, 0, 1]);
    // Only the upper-case whole word is a break.
    expect(tok.tokenizeWeighted('red break blue').chunks).toHaveLength(1);
  });

  it('counts tokens for the UI', () => {
    expect(tok.countTokens('a small red circle')).toBe(4);
    expect(tok.countTokens('(a small:1.2) [red] circle')).toBe(4);
    expect(tok.chunkTokenCounts('red '.repeat(80))).toEqual([75, 5]);
    expect(tok.countTokens('red BREAK blue')).toBe(2);
  });

  it('handles a 1000-word prompt', () => {
    const words = [
      'a',
      'small',
      'red',
      'circle',
      'on',
      'the',
      'blue',
      'background,',
      'zebra',
      'hello',
    ];
    const prompt = Array.from({ length: 1000 }, (_, i) => words[i % words.length]).join(' ');
    const plain = tok.encode(prompt);
    const r = tok.tokenizeWeighted(prompt);
    // No token is lost or duplicated, every chunk is a framed 77-long row.
    expect(r.chunks.flatMap((c, i) => c.ids.slice(1, 1 + r.chunkTokenCounts[i]))).toEqual(plain);
    expect(r.chunks.length).toBeGreaterThanOrEqual(Math.ceil(plain.length / 75));
    for (const c of r.chunks) {
      expect(c.ids).toHaveLength(77);
      expect(c.weights).toHaveLength(77);
      expect(c.ids[0]).toBe(tok.bosId);
    }
    // Without commas the count is exact: 1000 single-token words -> 13 full chunks + 25.
    const reds = tok.tokenizeWeighted('red '.repeat(1000));
    expect(reds.chunks).toHaveLength(14);
    expect(reds.tokenCount).toBe(1000);
    expect(reds.chunkTokenCounts.at(-1)).toBe(25);
  });
});

describe('ClipTokenizer.fromFolder errors', () => {
  it('says what is missing', async () => {
    const empty = path.join(root, 'empty');
    await mkdir(empty, { recursive: true });
    await expect(ClipTokenizer.fromFolder(empty)).rejects.toThrow(
      /vocab\.json \+ merges\.txt or tokenizer\.json/,
    );
  });

  it('names a corrupt file', async () => {
    const bad = path.join(root, 'bad');
    await writeClipTokenizerFiles(bad);
    await writeFile(path.join(bad, 'vocab.json'), '{"a": 1,');
    await expect(ClipTokenizer.fromFolder(bad)).rejects.toThrow(/vocab\.json is not valid JSON/);
  });

  it('rejects a vocab without the special tokens', () => {
    const vocab = { ...data.vocab };
    delete vocab['<|startoftext|>'];
    expect(() => new ClipTokenizer({ vocab, merges: data.merges })).toThrow(/BOS token/);
  });
});
