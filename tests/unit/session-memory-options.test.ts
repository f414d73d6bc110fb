// The memory options of a session (src/engine/models/providers.ts): ONNX Runtime's CPU arena and
// memory patterns stay on unless a caller turns them off (bench:memory measures both), and the
// attention rewrite is on by default (attention-rewrite.ts).
import { describe, expect, test } from 'vitest';
import { sessionOptions } from '../../src/engine/models/providers';

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
});
