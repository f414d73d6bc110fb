// Emphasis applied to text-encoder output, as AUTOMATIC1111's stable-diffusion-webui does it
// (modules/sd_hijack_clip.py, `process_tokens`; reference/ENGINE-NOTES.md section 5): every
// token's hidden vector is multiplied by its weight, then the whole chunk is rescaled so its
// mean equals the mean before weighting.

/**
 * Applies per-token weights to `hidden` ([T, D] or [B, T, D], row-major) and restores the mean.
 * `weights` has T entries (shared by every batch item) or B*T (one row per item). The mean is
 * restored per batch item (A1111 takes it over the whole batch; identical for B = 1).
 * Returns a new array; `hidden` is not modified.
 */
export function applyEmphasis(
  hidden: Float32Array,
  dims: readonly number[],
  weights: readonly number[],
): Float32Array {
  if (dims.length !== 2 && dims.length !== 3) {
    throw new Error(`applyEmphasis: dims must be [T, D] or [B, T, D], got [${dims.join(', ')}]`);
  }
  const [batch, tokens, width] = dims.length === 3 ? dims : [1, dims[0], dims[1]];
  if (batch * tokens * width !== hidden.length) {
    throw new Error(
      `applyEmphasis: dims [${dims.join(', ')}] do not match ${hidden.length} values`,
    );
  }
  if (weights.length !== tokens && weights.length !== batch * tokens) {
    throw new Error(
      `applyEmphasis: expected ${tokens} or ${batch * tokens} weights, got ${weights.length}`,
    );
  }
  const out = new Float32Array(hidden.length);
  const perItemWeights = weights.length === batch * tokens && batch > 1;
  const itemSize = tokens * width;
  for (let b = 0; b < batch; b++) {
    const base = b * itemSize;
    const wBase = perItemWeights ? b * tokens : 0;
    let sumBefore = 0;
    let sumAfter = 0;
    for (let t = 0; t < tokens; t++) {
      const w = weights[wBase + t];
      const row = base + t * width;
      for (let d = 0; d < width; d++) {
        const v = hidden[row + d];
        sumBefore += v;
        sumAfter += v * w;
      }
    }
    // A chunk whose weighted mean is 0 cannot be rescaled; keep the weighted values as they are.
    const scale = sumAfter === 0 ? 1 : sumBefore / sumAfter;
    for (let t = 0; t < tokens; t++) {
      const w = weights[wBase + t] * scale;
      const row = base + t * width;
      for (let d = 0; d < width; d++) out[row + d] = hidden[row + d] * w;
    }
  }
  return out;
}
