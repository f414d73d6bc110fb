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
/** A relative import that reaches into one of our other top-level folders. */
const intoFolders = (...folders) => `^(\\.{1,2}/)+(src/)?(${folders.join('|')})(/|$)`;
const layer = (files, message, { paths = [], folders = [], allowNode = false } = {}) => ({
  files,
  rules: {
    'no-restricted-imports': [
      'error',
      {
        paths: paths.map((name) => ({ name, message })),
        patterns: [
          ...(allowNode ? [] : [{ group: ['node:*'], message }]),
          ...(folders.length ? [{ regex: intoFolders(...folders), message }] : []),
        ],
      },
    ],
  },
});

export default ts.config(
  {
    ignores: [
      'node_modules/',
      'out/',
      'release/',
      'test-results/',
      'playwright-report/',
      'tests/fixtures/.models/',
      'resources/',
    ],
  },
  js.configs.recommended,
  ...ts.configs.recommended,
  ...svelte.configs['flat/recommended'],
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
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
    { paths: nodeAndNative, folders: ['engine', 'main', 'preload', 'renderer'] },
  ),
  layer(
    ['src/renderer/**'],
    'The renderer talks to the host only through StudioApi (src/shared): no Node, Electron or native modules, no engine or main code.',
    { paths: nodeAndNative, folders: ['engine', 'main', 'preload'] },
  ),
  layer(
    ['src/engine/**'],
    'The engine imports only src/shared (plus Node and onnxruntime-node): never Electron, SQLite or the app host.',
    {
      paths: ['electron', 'better-sqlite3'],
      folders: ['main', 'renderer', 'preload'],
      allowNode: true,
    },
  ),
  layer(
    ['src/main/**'],
    'Only src/main/electron may import electron; main never imports the renderer or preload.',
    { paths: ['electron'], folders: ['renderer', 'preload'], allowNode: true },
  ),
  {
    files: ['src/main/electron/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: intoFolders('renderer', 'preload'),
              message: 'main never imports the renderer or preload.',
            },
          ],
        },
      ],
    },
  },
  layer(
    ['src/preload/**'],
    'The preload imports only electron (contextBridge, ipcRenderer) and src/shared.',
    {
      paths: nodeAndNative.filter((n) => n !== 'electron'),
      folders: ['engine', 'main', 'renderer'],
    },
  ),
);
