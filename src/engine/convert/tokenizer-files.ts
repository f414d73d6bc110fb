/**
 * Hugging Face CLIPTokenizer files (vocab.json, merges.txt, special_tokens_map.json,
 * tokenizer_config.json) built from CLIP's BPE merge list, which a single-file checkpoint does
 * not carry. Facts (openai/CLIP simple_tokenizer.py, and the tokenizer folders diffusers
 * publishes for SD 1.5, SD 2.1 and SDXL):
 * - the merges are lines 2 .. 48895 of bpe_simple_vocab_16e6.txt (48,894 = 49152 - 256 - 2);
 * - vocab ids: the 256 byte symbols, the same with `</w>`, one per merge (the halves joined),
 *   then `<|startoftext|>` 49406 and `<|endoftext|>` 49407;
 * - padding: CLIP ViT-L (SD 1.x, SDXL's tokenizer) pads with `<|endoftext|>`, OpenCLIP (SD 2.x,
 *   SDXL's tokenizer_2) with `!` (id 0).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { EngineError } from '../errors';
import { BYTE_SYMBOLS_IN_VOCAB_ORDER, END_OF_WORD } from '../tokenizer/byte-encoder';

const MERGE_COUNT = 49152 - 256 - 2;
const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';

export interface ClipVocabulary {
  vocab: Map<string, number>;
  merges: string[];
}

/** Reads CLIP's `bpe_simple_vocab_16e6.txt.gz` (shipped in resources/clip-bpe). */
export async function readClipVocabulary(file: string): Promise<ClipVocabulary> {
  let lines: string[];
  try {
    lines = gunzipSync(await readFile(file))
      .toString('utf8')
      .split('\n');
  } catch (e) {
    throw new EngineError(
      'model-missing-file',
      `CLIP's vocabulary ${path.basename(file)} could not be read; the installation is incomplete.`,
      { file, cause: e },
    );
  }
  const merges = lines.slice(1, 1 + MERGE_COUNT);
  if (merges.length !== MERGE_COUNT || merges.some((m) => m.split(' ').length !== 2)) {
    throw new EngineError('model-corrupt', `${path.basename(file)} is not CLIP's BPE merge list.`, {
      file,
    });
  }
  const vocab = new Map<string, number>();
  for (const symbol of BYTE_SYMBOLS_IN_VOCAB_ORDER) vocab.set(symbol, vocab.size);
  for (const symbol of BYTE_SYMBOLS_IN_VOCAB_ORDER) vocab.set(symbol + END_OF_WORD, vocab.size);
  for (const merge of merges) vocab.set(merge.replace(' ', ''), vocab.size);
  vocab.set(BOS, vocab.size);
  vocab.set(EOS, vocab.size);
  return { vocab, merges };
}

const addedToken = (content: string): Record<string, unknown> => ({
  content,
  lstrip: false,
  normalized: true,
  rstrip: false,
  single_word: false,
});

/** Writes a `tokenizer/` folder; `pad` is the encoder's pad token. */
export async function writeTokenizerFolder(
  dir: string,
  vocabulary: ClipVocabulary,
  pad: 'endoftext' | '!',
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(
    path.join(dir, 'vocab.json'),
    JSON.stringify(Object.fromEntries(vocabulary.vocab)),
  );
  await writeFile(
    path.join(dir, 'merges.txt'),
    ['#version: 0.2', ...vocabulary.merges].join('\n') + '\n',
  );
  const padToken = pad === '!' ? '!' : addedToken(EOS);
  await writeFile(
    path.join(dir, 'special_tokens_map.json'),
    JSON.stringify(
      {
        bos_token: addedToken(BOS),
        eos_token: addedToken(EOS),
        pad_token: padToken,
        unk_token: addedToken(EOS),
      },
      null,
      2,
    ) + '\n',
  );
  await writeFile(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify(
      {
        add_prefix_space: false,
        bos_token: addedToken(BOS),
        clean_up_tokenization_spaces: true,
        do_lower_case: true,
        eos_token: addedToken(EOS),
        errors: 'replace',
        model_max_length: 77,
        pad_token: padToken,
        tokenizer_class: 'CLIPTokenizer',
        unk_token: addedToken(EOS),
      },
      null,
      2,
    ) + '\n',
  );
}
