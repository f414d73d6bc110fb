import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { methodNames, studioMethods } from '../../src/shared';

// The host implements each method of the contract through an adapter the type check holds to
// the method's schemas (`satisfies Pick<StudioService, ...>`, never a cast). This proves it bites:
// the host is type-checked against a mutated copy of src/shared/contract.ts, and every method
// whose schema changed must give an error at its own adapter.
const root = process.cwd();
const contractFile = path.join(root, 'src/shared/contract.ts');
const entry = path.join(root, 'src/main/api.ts');

function compilerOptions(): ts.CompilerOptions {
  const config = ts.getParsedCommandLineOfConfigFile(
    path.join(root, 'tsconfig.node.json'),
    {},
    { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} },
  );
  if (!config) throw new Error('tsconfig.node.json could not be read');
  return { ...config.options, noEmit: true };
}

/** The contract's source with each method's entry `{ ... }` rewritten. */
function mutate(source: string, rewrite: (name: string, body: string) => string): string {
  const start = source.indexOf('export const studioMethods = {');
  const end = source.indexOf('} as const satisfies', start);
  let block = source.slice(start, end);
  for (const name of methodNames) {
    const at = block.search(new RegExp(`\\n  ${name}: \\{`));
    expect(at, name).toBeGreaterThan(0);
    const open = block.indexOf('{', at);
    let depth = 0;
    let i = open;
    for (; i < block.length; i++) {
      if (block[i] === '{') depth++;
      else if (block[i] === '}' && --depth === 0) break;
    }
    const body = block.slice(open, i + 1);
    block = block.slice(0, open) + rewrite(name, body) + block.slice(i + 1);
  }
  return source.slice(0, start) + block + source.slice(end);
}

/** The contract method a position of the host belongs to: its innermost `name:` or `name()`. */
function methodAt(file: ts.SourceFile, position: number): string | null {
  const names = new Set<string>(methodNames);
  let found: string | null = null;
  const visit = (node: ts.Node): void => {
    if (position < node.getStart(file) || position >= node.getEnd()) return;
    if (
      (ts.isPropertyAssignment(node) || ts.isMethodDeclaration(node)) &&
      (ts.isIdentifier(node.name) || ts.isPrivateIdentifier(node.name)) &&
      names.has(node.name.text)
    )
      found = node.name.text;
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

/** The methods whose implementation in src/main has a type error under `contract`. */
function methodsWithErrors(contract: string, options: ts.CompilerOptions): Set<string> {
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  host.readFile = (file) => (path.resolve(file) === contractFile ? contract : readFile(file));
  const program = ts.createProgram([entry], options, host);
  const hit = new Set<string>();
  const mainDir = path.join(root, 'src/main') + path.sep;
  // Only the host's own files are checked (the engine and shared are not what is under test).
  for (const file of program.getSourceFiles()) {
    if (!path.resolve(file.fileName).startsWith(mainDir)) continue;
    for (const d of program.getSemanticDiagnostics(file)) {
      if (d.start === undefined) continue;
      const name = methodAt(file, d.start);
      if (name) hit.add(name);
    }
  }
  return hit;
}

describe('the contract binds the host', () => {
  const options = compilerOptions();
  const original = fs.readFileSync(contractFile, 'utf8');

  it('the host type-checks against the contract as it is', () => {
    expect([...methodsWithErrors(original, options)]).toEqual([]);
  }, 120_000);

  it("changing any method's output schema fails the type check at that method", () => {
    const changed = mutate(
      original,
      (_name, body) => `{ ...${body}, output: z.object({ probe: z.literal(7) }) }`,
    );
    const hit = methodsWithErrors(changed, options);
    expect(methodNames.filter((m) => !hit.has(m))).toEqual([]);
  }, 120_000);

  it("changing any method's input schema fails the type check where the input is read", () => {
    const changed = mutate(
      original,
      (_name, body) => `{ ...${body}, input: z.object({ probe: z.literal(7) }).strict() }`,
    );
    const hit = methodsWithErrors(changed, options);
    // Methods without input (z.undefined()) read nothing from it.
    const reading = methodNames.filter((m) => !studioMethods[m].input.safeParse(undefined).success);
    expect(reading.filter((m) => !hit.has(m))).toEqual([]);
  }, 120_000);
});
