// Intra-op spinning by situation (src/engine/models/providers.ts): off on a busy machine, on
// when quiet, and an explicit choice wins; the choice reaches ONNX Runtime as the
// session.intra_op.allow_spinning config entry.
import { describe, expect, test } from 'vitest';
import {
  sessionOptions,
  setBackgroundState,
  spinByDefault,
} from '../../src/engine/models/providers';

const spinning = (o: ReturnType<typeof sessionOptions>) =>
  (o.extra as { session: { intra_op: { allow_spinning: string } } }).session.intra_op
    .allow_spinning;

describe('intra-op spinning', () => {
  test('spins only while the load average is below the usable cores', () => {
    expect(spinByDefault(0.4, 2)).toBe(true);
    expect(spinByDefault(1.9, 2)).toBe(true);
    expect(spinByDefault(2, 2)).toBe(false);
    expect(spinByDefault(17.9, 2)).toBe(false);
  });

  test('sessions created while the studio is in the background and gentle never spin', () => {
    try {
      setBackgroundState({ background: true, onBattery: false, mode: 'gentle' });
      expect(spinByDefault(0.4, 2)).toBe(false);
      expect(spinning(sessionOptions('cpu'))).toBe('0');
      setBackgroundState({ background: true, onBattery: false, mode: 'full' });
      expect(spinByDefault(0.4, 2)).toBe(true);
    } finally {
      setBackgroundState({ background: false, onBattery: false, mode: 'gentle' });
    }
    expect(spinByDefault(0.4, 2)).toBe(true);
  });

  test('sessions created on battery never spin, unless the person keeps full speed', () => {
    try {
      setBackgroundState({ background: false, onBattery: true, mode: 'gentle' });
      expect(spinByDefault(0.4, 2)).toBe(false);
      expect(spinning(sessionOptions('cpu'))).toBe('0');
      // An explicit choice (the benchmark's) still wins.
      expect(spinning(sessionOptions('cpu', { spinning: true }))).toBe('1');
      setBackgroundState({ background: false, onBattery: true, mode: 'full' });
      expect(spinByDefault(0.4, 2)).toBe(true);
    } finally {
      setBackgroundState({ background: false, onBattery: false, mode: 'gentle' });
    }
    expect(spinByDefault(0.4, 2)).toBe(true);
  });

  test('an explicit choice is written as ORT config, whatever the load', () => {
    expect(spinning(sessionOptions('cpu', { spinning: false }))).toBe('0');
    expect(spinning(sessionOptions('cpu', { spinning: true }))).toBe('1');
    expect(['0', '1']).toContain(spinning(sessionOptions('cpu')));
  });
});
