// The safety checker's decision, as diffusers' StableDiffusionSafetyChecker.forward computes it
// (src/diffusers/pipelines/stable_diffusion/safety_checker.py): per image, each special-care
// score is round(cos - threshold + adjustment, 3), and the first positive one raises the
// adjustment to 0.01 for the special-care concepts after it and for every concept score; the
// image is flagged when any concept score (same formula) is positive.

/** One image's verdict with every score, as recorded in the history and the PNG's JSON. */
export interface SafetyVerdict {
  /** True when any concept score is above 0 (diffusers' has_nsfw_concepts). */
  flagged: boolean;
  /** round(cosine - threshold + adjustment, 3) per special-care concept (3 in the real file). */
  specialScores: number[];
  /** The same per concept (17 in the real file). */
  conceptScores: number[];
  /** Indices of the concepts whose score is above 0. */
  badConcepts: number[];
}

/** The checker's raw outputs for a batch (row-major [N, K] cosines; thresholds [K]). */
export interface SafetyCosines {
  specialCos: Float32Array;
  conceptCos: Float32Array;
  specialThresholds: Float32Array;
  conceptThresholds: Float32Array;
}

/** Python's round(x, 3) up to ties, which float inputs essentially never hit. */
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/** The verdict of each of the `n` images. */
export function safetyVerdicts(c: SafetyCosines, n: number): SafetyVerdict[] {
  const S = c.specialThresholds.length;
  const K = c.conceptThresholds.length;
  if (c.specialCos.length !== n * S || c.conceptCos.length !== n * K) {
    throw new Error(`safety checker outputs do not match ${n} images`);
  }
  const out: SafetyVerdict[] = [];
  for (let i = 0; i < n; i++) {
    // "increase this value to create a stronger nsfw filter" (diffusers): 0, then 0.01.
    let adjustment = 0;
    const specialScores: number[] = [];
    for (let s = 0; s < S; s++) {
      const score = round3(c.specialCos[i * S + s] - c.specialThresholds[s] + adjustment);
      specialScores.push(score);
      if (score > 0) adjustment = 0.01;
    }
    const conceptScores: number[] = [];
    const badConcepts: number[] = [];
    for (let k = 0; k < K; k++) {
      const score = round3(c.conceptCos[i * K + k] - c.conceptThresholds[k] + adjustment);
      conceptScores.push(score);
      if (score > 0) badConcepts.push(k);
    }
    out.push({ flagged: badConcepts.length > 0, specialScores, conceptScores, badConcepts });
  }
  return out;
}
