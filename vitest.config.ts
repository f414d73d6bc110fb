import { defineConfig } from 'vitest/config';

// Two suites: `unit` is pure code and fast; `integration` runs real onnxruntime-node,
// real SQLite and real sockets, so it gets longer timeouts and runs files one at a time
// (the machine has two cores and ONNX Runtime uses both).
export default defineConfig({
  test: {
    // A developer's own Hub login (huggingface_hub's token file) must not reach the loopback
    // Hubs of the tests; tests of that file point these elsewhere.
    env: { HF_TOKEN_PATH: '/nonexistent/latent-studio-tests/hf-token' },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
