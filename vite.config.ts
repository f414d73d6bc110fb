import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';

// The renderer only. Node-side bundles (main, preload, engine worker, CLI) are built by
// esbuild in scripts/build.mjs.
export default defineConfig({
  root: 'src/renderer',
  base: '/',
  plugins: [svelte()],
  build: {
    outDir: '../../out/renderer',
    emptyOutDir: true,
    target: 'chrome120',
    sourcemap: true,
  },
});
