import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

// The layer rules of shared/DESIGN.md live in eslint.config.js; this proves they bite.
const eslint = new ESLint({ cwd: process.cwd() });

async function violations(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: file });
  return result.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

// ESLint's first lint loads the whole config (typescript-eslint, svelte); on a loaded 2-core
// machine that alone can pass vitest's default 5 s.
describe('layer rules', { timeout: 60_000 }, () => {
  it('reject Node, Electron and native modules in the renderer', async () => {
    for (const mod of [
      'fs',
      'node:fs',
      'electron',
      'onnxruntime-node',
      'better-sqlite3',
      'child_process',
    ]) {
      const found = await violations(
        'src/renderer/lib/probe.ts',
        `import x from '${mod}';\nexport const y = x;\n`,
      );
      expect(found, mod).toHaveLength(1);
    }
  });

  it('reject engine or main code in the renderer, and the app in the engine', async () => {
    expect(
      await violations(
        'src/renderer/lib/probe.ts',
        "import { x } from '../../engine/runtime';\nexport const y = x;\n",
      ),
    ).toHaveLength(1);
    expect(
      await violations(
        'src/engine/probe.ts',
        "import { x } from '../main/api';\nexport const y = x;\n",
      ),
    ).toHaveLength(1);
    expect(
      await violations(
        'src/engine/probe.ts',
        "import x from 'better-sqlite3';\nexport const y = x;\n",
      ),
    ).toHaveLength(1);
    expect(
      await violations(
        'src/main/probe.ts',
        "import { app } from 'electron';\nexport const y = app;\n",
      ),
    ).toHaveLength(1);
    expect(
      await violations('src/shared/probe.ts', "import x from 'node:path';\nexport const y = x;\n"),
    ).toHaveLength(1);
  });

  it('allow what each layer may use', async () => {
    expect(
      await violations(
        'src/renderer/lib/probe.ts',
        "import { StudioError } from '../../shared';\nexport const y = StudioError;\n",
      ),
    ).toEqual([]);
    expect(
      await violations(
        'src/engine/probe.ts',
        "import * as ort from 'onnxruntime-node';\nimport fs from 'node:fs';\nexport const y = [ort, fs];\n",
      ),
    ).toEqual([]);
    expect(
      await violations(
        'src/main/electron/probe.ts',
        "import { app } from 'electron';\nexport const y = app;\n",
      ),
    ).toEqual([]);
  });
});
