import js from '@eslint/js';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';
import ts from 'typescript-eslint';

// The layers of shared/DESIGN.md, enforced here (as VS Code's `local/code-layering` does).
const nodeAndNative = [
  'electron',
  'onnxruntime-node',
  'onnxruntime-common',
  'better-sqlite3',
  'sharp',
  'ws',
  'fs',
  'fs/promises',
  'path',
  'os',
  'child_process',
  'worker_threads',
  'http',
  'net',
  'crypto',
  'util',
  'url',
  'stream',
  'zlib',
];
const restrict = (message, patterns, paths = []) => [
  'error',
  {
    paths: paths.map((name) => ({ name, message })),
    patterns: [
      { group: ['node:*'], message },
      ...patterns.map((group) => ({ group: [group], message })),
    ],
  },
];
const layer = (files, message, { paths = [], patterns = [], allowNode = false } = {}) => ({
  files,
  rules: {
    'no-restricted-imports': allowNode
      ? ['error', { paths: paths.map((name) => ({ name, message })), patterns: patterns.map((g) => ({ group: [g], message })) }]
      : restrict(message, patterns, paths),
  },
});

export default ts.config(
  {
    ignores: ['node_modules/', 'out/', 'release/', 'test-results/', 'playwright-report/', 'tests/fixtures/.models/', 'resources/'],
  },
  js.configs.recommended,
  ...ts.configs.recommended,
  ...svelte.configs['flat/recommended'],
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  {
    files: ['**/*.svelte', '**/*.svelte.ts'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: { parser: ts.parser, extraFileExtensions: ['.svelte'] },
    },
  },
  {
    files: ['src/renderer/**'],
    languageOptions: { globals: { ...globals.browser } },
  },
  layer(
    ['src/shared/**'],
    'src/shared is the pure contract: it imports nothing of ours outside it, and no Node, Electron or native module.',
    { paths: nodeAndNative, patterns: ['../engine/*', '../main/*', '../preload/*', '../renderer/*', '**/engine', '**/main', '**/renderer', '**/preload'] },
  ),
  layer(
    ['src/renderer/**'],
    'The renderer talks to the host only through StudioApi (src/shared): no Node, Electron or native modules, no engine or main code.',
    { paths: nodeAndNative, patterns: ['**/engine/*', '**/main/*', '**/preload/*', '**/engine', '**/main', '**/preload'] },
  ),
  layer(
    ['src/engine/**'],
    'The engine imports only src/shared (plus Node and onnxruntime-node): never Electron, SQLite or the app host.',
    { paths: ['electron', 'better-sqlite3'], patterns: ['**/main/*', '**/renderer/*', '**/preload/*', '**/main', '**/renderer', '**/preload'], allowNode: true },
  ),
  layer(
    ['src/main/**'],
    'Only src/main/electron may import electron; main never imports the renderer or preload.',
    { paths: ['electron'], patterns: ['**/renderer/*', '**/preload/*'], allowNode: true },
  ),
  {
    files: ['src/main/electron/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/renderer/*', '**/preload/*'], message: 'main never imports the renderer or preload.' }] },
      ],
    },
  },
  layer(
    ['src/preload/**'],
    'The preload imports only electron (contextBridge, ipcRenderer) and src/shared.',
    { paths: nodeAndNative.filter((n) => n !== 'electron'), patterns: ['**/engine/*', '**/main/*', '**/renderer/*'] },
  ),
);
