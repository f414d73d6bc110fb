export { ClipTokenizer } from './clip-tokenizer';
export type {
  ClipTokenizerFiles,
  ClipTokenizerInit,
  MergeRule,
  PromptEmbeddingTokens,
  TokenizeWeightedOptions,
  WeightedChunk,
  WeightedTokens,
} from './clip-tokenizer';
export { parsePromptAttention } from './prompt-attention';
export type { PromptSegment } from './prompt-attention';
export { applyEmphasis } from './emphasis';
export { cleanText, splitWords, unescapeHtml } from './text';
export { BYTE_SYMBOLS_IN_VOCAB_ORDER, BYTE_TO_CHAR, END_OF_WORD, byteEncode } from './byte-encoder';
