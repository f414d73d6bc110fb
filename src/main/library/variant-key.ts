import type { GenerationSettings } from '../../shared';
import { sha256 } from './ids';

/**
 * Key of "the same generation except the seed": settings without seed and batch counts. It
 * hashes the settings as the current schema writes them, so a schema change that adds a field
 * (migration 5 did, for `schedule`) must recompute the stored keys.
 */
export function variantKeyOf(settings: GenerationSettings): string {
  const { seed: _seed, batchSize: _bs, batchCount: _bc, ...rest } = settings;
  return sha256(new TextEncoder().encode(JSON.stringify(rest))).slice(0, 32);
}
