// `npm test`: the quality gates, then every suite (unit, integration, end-to-end in Chromium,
// desktop in Electron where its binary exists). All steps run even when one fails, so one CI
// run reports everything; the exit code is non-zero if any step failed. The last line sums the
// tests of all suites.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

fs.mkdirSync('test-results', { recursive: true });
for (const f of ['vitest-unit.json', 'vitest-integration.json', 'e2e.json', 'electron.json'])
  fs.rmSync(`test-results/${f}`, { force: true });

const bin = (name) => `node_modules/.bin/${name}`;
const vitestArgs = (project) => [
  'run',
  '--project',
  project,
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=test-results/vitest-${project}.json`,
];
const steps = [
  ['lint', bin('eslint'), ['.', '--max-warnings', '0']],
  ['format', bin('prettier'), ['--check', '.', '--log-level', 'warn']],
  ['typecheck', 'npm', ['run', '--silent', 'typecheck']],
  ['build', process.execPath, ['scripts/build.mjs']],
  // One project after the other: integration tests measure the event loop and run ONNX
  // Runtime on both cores, so they should not share the machine with the unit suite.
  ['unit', bin('vitest'), vitestArgs('unit')],
  ['integration', bin('vitest'), vitestArgs('integration')],
  ['e2e (Chromium)', bin('playwright'), ['test', '--config', 'tests/e2e/playwright.config.ts']],
  ['desktop (Electron)', process.execPath, ['tests/electron/run.mjs']],
];
const only = process.argv.slice(2);
const failed = [];
for (const [name, cmd, args] of steps) {
  if (only.length && !only.some((o) => name.startsWith(o))) continue;
  if ((name.startsWith('e2e') || name.startsWith('desktop')) && failed.includes('build')) {
    failed.push(name);
    continue;
  }
  console.log(`\n▶ ${name}`);
  const started = Date.now();
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: process.env });
  const ok = r.status === 0;
  console.log(`${ok ? '✔' : '✖'} ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  if (!ok) failed.push(name);
}

let passed = 0;
let failedTests = 0;
let skipped = 0;
const readJson = (f) => (fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : null);
for (const f of ['test-results/vitest-unit.json', 'test-results/vitest-integration.json']) {
  const vitest = readJson(f);
  if (vitest) {
    passed += vitest.numPassedTests;
    failedTests += vitest.numFailedTests;
    skipped += vitest.numPendingTests + vitest.numTodoTests;
  }
}
for (const f of ['test-results/e2e.json', 'test-results/electron.json']) {
  const pw = readJson(f);
  if (pw) {
    passed += pw.stats.expected + pw.stats.flaky;
    failedTests += pw.stats.unexpected;
    skipped += pw.stats.skipped;
  }
}
console.log(failed.length ? `\nFailed steps: ${failed.join(', ')}` : '\nAll steps passed.');
console.log(`Summary: ${passed} passed, ${failedTests} failed, ${skipped} skipped`);
process.exit(failed.length ? 1 : 0);
