// Small ONNX subgraphs written the same way by the converter and by the test fixtures' builder:
// both graph classes satisfy `OpSink`, so each construction exists once.

/** What these helpers need of a graph under construction. */
export interface OpSink {
  /** Adds a node with one output and returns that output's name. */
  op(
    opType: string,
    inputs: string[],
    attrs?: Record<string, string | number | number[]>,
    hint?: string,
  ): string;
  /** A float32 constant: a scalar, or `values` shaped `dims`. */
  f32(values: number | Float32Array, dims?: number[]): string;
  /** A 1-D int64 constant. */
  i64(values: number[]): string;
}

export function silu(g: OpSink, x: string): string {
  return g.op('Mul', [x, g.op('Sigmoid', [x])], {}, 'silu');
}

/** Exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (opset 17 has no Gelu operator). */
export function gelu(g: OpSink, x: string): string {
  const e = g.op('Erf', [g.op('Mul', [x, g.f32(Math.SQRT1_2)])]);
  return g.op('Mul', [g.op('Mul', [x, g.f32(0.5)]), g.op('Add', [e, g.f32(1)])], {}, 'gelu');
}

/** CLIP's quick_gelu, x sigmoid(1.702 x) (openai/CLIP model.py). */
export function quickGelu(g: OpSink, x: string): string {
  return g.op('Mul', [x, g.op('Sigmoid', [g.op('Mul', [x, g.f32(1.702)])])], {}, 'quick_gelu');
}

/**
 * Nearest-neighbour upsampling of x [B, C, h, w] to the height and width of `like`: x2 for even
 * sizes, and the skip's size for odd ones (diffusers' upsample_size). asymmetric + floor is
 * PyTorch's F.interpolate(mode='nearest').
 */
export function upsampleNearestLike(g: OpSink, x: string, like: string): string {
  const sizes = g.op(
    'Concat',
    [
      g.op('Slice', [g.op('Shape', [x]), g.i64([0]), g.i64([2])]),
      g.op('Slice', [g.op('Shape', [like]), g.i64([2]), g.i64([4])]),
    ],
    { axis: 0 },
  );
  return g.op(
    'Resize',
    [x, '', '', sizes],
    { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' },
    'upsample',
  );
}

/**
 * The sinusoidal timestep embedding [N] -> [N, dim]: [cos(t f_i) | sin(t f_i)] with
 * f_i = 10000^(-i / half) (Vaswani et al. 2017, sec. 3.5; ldm's timestep_embedding, which is
 * diffusers' flip_sin_to_cos=True, downscale_freq_shift=0).
 */
export function timestepEmbedding(g: OpSink, t: string, dim: number, hint = 'time_proj'): string {
  const half = dim / 2;
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp((-Math.log(10000) * i) / half);
  const args = g.op('Mul', [g.op('Unsqueeze', [t, g.i64([1])]), g.f32(freqs, [1, half])], {}, hint);
  return g.op('Concat', [g.op('Cos', [args]), g.op('Sin', [args])], { axis: 1 }, hint);
}
