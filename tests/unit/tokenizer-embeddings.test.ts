// Textual-inversion embeddings in prompts, with CLIP's own vocabulary: a name is matched as the
// token sequence of its tokenization (A1111 modules/textual_inversion/textual_inversion.py,
// `find_embedding_at_position`), replaced by one id per vector, and never split across 75-token
// chunks (A1111 modules/sd_hijack_clip.py, `tokenize_line`: when the vectors do not fit, the
// chunk is closed and padded and they start the next one; the closed chunk counts 75).

import { beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, type PromptEmbeddingTokens } from '../../src/engine/tokenizer';
import { readClipBpeVocabulary } from '../fixtures/clip-tokenizer';

let tok: ClipTokenizer;
const BASE = 49408;

beforeAll(async () => {
  const data = await readClipBpeVocabulary();
  tok = new ClipTokenizer({ vocab: data.vocab, merges: data.merges });
});

function embedding(name: string, vectors: number, first = BASE): PromptEmbeddingTokens {
  return { nameIds: tok.encode(name), ids: Array.from({ length: vectors }, (_, i) => first + i) };
}

describe('finding embedding names in a prompt', () => {
  it('finds names written plainly, with emphasis, in any case, and names of several tokens', () => {
    expect(tok.encode('easynegative').length).toBeGreaterThan(1);
    const names = ['easynegative', 'bad-hands-5', 'unused'];
    expect(
      tok.findEmbeddingNames('photo, (EasyNegative:1.2), [bad-hands-5], blurry', names),
    ).toEqual(['easynegative', 'bad-hands-5']);
  });

  it('does not match a name inside a longer word', () => {
    expect(tok.findEmbeddingNames('two cats on a mat', ['cat'])).toEqual([]);
    expect(tok.findEmbeddingNames('a cat on a mat', ['cat'])).toEqual(['cat']);
  });
});

describe('tokenizing with embeddings', () => {
  it('an embedding of 3 vectors costs 3 tokens, each carrying its emphasis', () => {
    const style = embedding('mystyle', 3);
    const r = tok.tokenizeWeighted('a house, (mystyle:1.3)', { embeddings: [style] });
    const plain = tok.encode('a house,');
    expect(r.chunks).toHaveLength(1);
    expect(r.chunks[0]!.ids.slice(0, plain.length + 5)).toEqual([
      tok.bosId,
      ...plain,
      BASE,
      BASE + 1,
      BASE + 2,
      tok.eosId,
    ]);
    expect(r.chunks[0]!.weights.slice(plain.length + 1, plain.length + 4)).toEqual([1.3, 1.3, 1.3]);
    expect(r.tokenCount).toBe(plain.length + 3);
    expect(tok.countTokens('a house, mystyle', { embeddings: [style] })).toBe(plain.length + 3);
    // Without the embedding, the name is its own tokens.
    expect(tok.countTokens('a house, mystyle')).toBe(plain.length + tok.encode('mystyle').length);
  });

  it('a longer name wins over a shorter one that starts the same way', () => {
    const red = embedding('red', 1, BASE);
    const redFox = embedding('red fox', 2, BASE + 1);
    const ids = (p: string) =>
      tok.tokenizeWeighted(p, { embeddings: [red, redFox] }).chunks[0]!.ids.slice(1, 4);
    expect(ids('red fox')).toEqual([BASE + 1, BASE + 2, tok.eosId]);
    expect(ids('red cat')).toEqual([BASE, tok.encode('cat')[0], tok.eosId]);
  });

  it('vectors that do not fit start the next chunk; the closed chunk counts 75', () => {
    const style = embedding('mystyle', 3);
    const r = tok.tokenizeWeighted(`${'cat '.repeat(74)}mystyle`, { embeddings: [style] });
    expect(r.chunkTokenCounts).toEqual([74, 3]);
    expect(r.tokenCount).toBe(75 + 3);
    expect(r.chunks[0]!.ids[75]).toBe(tok.eosId); // padded after 74 cats
    expect(r.chunks[1]!.ids.slice(0, 5)).toEqual([tok.bosId, BASE, BASE + 1, BASE + 2, tok.eosId]);
  });

  it('vectors that just fit stay in the chunk', () => {
    const style = embedding('mystyle', 3);
    const r = tok.tokenizeWeighted(`${'cat '.repeat(72)}mystyle`, { embeddings: [style] });
    expect(r.chunkTokenCounts).toEqual([75]);
    expect(r.chunks[0]!.ids.slice(73, 77)).toEqual([BASE, BASE + 1, BASE + 2, tok.eosId]);
  });

  it('moving the tail after a late comma moves whole embeddings', () => {
    // 70 tokens, a comma, the 3 vectors and a word fill the chunk; the next word finds the
    // comma 5 back, so the vectors and the word move to the next chunk together.
    const style = embedding('mystyle', 3);
    const r = tok.tokenizeWeighted(`${'cat '.repeat(70)}, mystyle cat cat`, {
      embeddings: [style],
    });
    expect(r.chunkTokenCounts).toEqual([71, 5]);
    expect(r.chunks[1]!.ids.slice(1, 5)).toEqual([BASE, BASE + 1, BASE + 2, tok.encode('cat')[0]]);
  });
});
