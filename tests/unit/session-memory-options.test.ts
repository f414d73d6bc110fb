// The memory options of a session (src/engine/models/providers.ts): ONNX Runtime's CPU arena and
// memory patterns stay on unless a caller turns them off (bench:memory measures both), the VAE
// decoders run without memory patterns (componentOptions), and the attention rewrite is on by
// default (attention-rewrite.ts).
import { describe, expect, test } from 'vitest';
import { componentOptions, sessionOptions } from '../../src/engine/models/providers';

describe('session memory options', () => {
  test('arena and memory patterns are on by default and off together on request', () => {
    const on = sessionOptions('cpu');
    expect(on.enableCpuMemArena).toBe(true);
    expect(on.enableMemPattern).toBe(true);
    const off = sessionOptions('cpu', { memArena: false });
    expect(off.enableCpuMemArena).toBe(false);
    expect(off.enableMemPattern).toBe(false);
  });

  test('DirectML never gets memory patterns, whatever the arena choice', () => {
    expect(sessionOptions('dml').enableMemPattern).toBe(false);
    expect(sessionOptions('dml', { memArena: true }).enableMemPattern).toBe(false);
  });

  test('memory patterns can be turned off alone, the arena kept', () => {
    const o = sessionOptions('cpu', { memPattern: false });
    expect(o.enableMemPattern).toBe(false);
    expect(o.enableCpuMemArena).toBe(true);
    // memPattern wins over memArena for the patterns; the arena follows memArena.
    const p = sessionOptions('cpu', { memArena: false, memPattern: true });
    expect(p.enableMemPattern).toBe(true);
    expect(p.enableCpuMemArena).toBe(false);
  });

  test('the VAE decoders run without memory patterns; every other session keeps them', () => {
    const base = { threads: 2, optimizedCacheDir: '/tmp/cache' };
    for (const name of ['vae_decoder', 'vae']) {
      const o = sessionOptions('cpu', componentOptions(name, base));
      expect(o.enableMemPattern).toBe(false);
      expect(o.enableCpuMemArena).toBe(true);
      expect(componentOptions(name, base)).toMatchObject(base);
    }
    for (const name of ['unet', 'text_encoder', 'text_encoder_2', 'vae_encoder']) {
      expect(componentOptions(name, base)).toBe(base);
      expect(sessionOptions('cpu', componentOptions(name, base)).enableMemPattern).toBe(true);
    }
  });
});
