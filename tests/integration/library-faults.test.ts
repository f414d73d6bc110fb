// Fault tests of the library with real SQLite and real files: a corrupt database file, a full
// disk during a save, and kill -9 of a child process in the middle of saves and of a migration.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { dispatch } from '../../src/main/dispatch';
import { GalleryQuery, type QueueState, StudioError } from '../../src/shared';
import { openDatabase, quickCheck } from '../../src/main/library/db';
import { schemaVersion, userVersion } from '../../src/main/library/migrations';
import type { Library } from '../../src/main/library/service';
import { openLibrary, saveOne, settingsOf, pngOf, tempDir } from './library-helpers';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');
const dirs: string[] = [];
function dir(): string {
  const d = tempDir('ls-fault-');
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const all = (library: Library) => library.gallery.searchGallery(GalleryQuery.parse({ limit: 500 }));

async function expectStudioError(p: unknown, code: string, message?: RegExp) {
  const err = await Promise.resolve()
    .then(() => (typeof p === 'function' ? (p as () => unknown)() : p))
    .then(
      () => null,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(StudioError);
  expect((err as StudioError).code).toBe(code);
  if (message) expect((err as StudioError).message).toMatch(message);
}

/** Every live image row has its complete file with the recorded hash; no temp files around. */
async function expectConsistent(d: string, library: Library) {
  expect(library.readOnly).toBe(false);
  expect(quickCheck(library.db)).toBeNull();
  const rows = library.db
    .prepare('SELECT id, file, sha256, missing FROM images WHERE deleted_at IS NULL')
    .all() as Array<{ id: string; file: string; sha256: string; missing: number }>;
  for (const r of rows) {
    expect(r.missing).toBe(0);
    const data = fs.readFileSync(path.join(d, r.file));
    expect(crypto.createHash('sha256').update(data).digest('hex')).toBe(r.sha256);
    await sharp(data, { failOn: 'truncated' }).raw().toBuffer();
  }
  const files = fs.existsSync(path.join(d, 'images'))
    ? (fs.readdirSync(path.join(d, 'images'), { recursive: true }) as string[])
    : [];
  const pngs = files
    .filter((f) => f.endsWith('.png'))
    .map((f) => `images/${f.split(path.sep).join('/')}`);
  expect(files.filter((f) => path.basename(f).startsWith('.'))).toEqual([]);
  expect(new Set(pngs)).toEqual(new Set(rows.map((r) => r.file)));
  expect(fs.existsSync(path.join(d, 'quarantine'))).toBe(false);
  return rows.length;
}

describe('a corrupt database file', () => {
  async function damagedLibrary(damage: (file: string) => void, backup: boolean) {
    const d = dir();
    const { library } = await openLibrary(d);
    for (let i = 0; i < 3; i++) await saveOne(library, { prompt: `before backup ${i}`, seed: i });
    if (backup) await library.backupNow();
    for (let i = 0; i < 2; i++)
      await saveOne(library, { prompt: `after backup ${i}`, seed: 10 + i });
    library.close();
    // The first start took a backup of the empty library; 'no backup' removes it.
    if (!backup) fs.rmSync(path.join(d, 'backups'), { recursive: true, force: true });
    damage(path.join(d, 'library.sqlite'));
    return d;
  }

  const scramblePages = (file: string) => {
    const data = fs.readFileSync(file);
    const noise = crypto.randomBytes(data.length - 8192);
    noise.copy(data, 8192);
    fs.writeFileSync(file, data);
  };
  const scrambleHeader = (file: string) => {
    const data = fs.readFileSync(file);
    crypto.randomBytes(100).copy(data, 0);
    fs.writeFileSync(file, data);
  };

  it('opens read-only, refuses writes, and restores the last backup', async () => {
    const d = await damagedLibrary(scramblePages, true);
    const { library, context } = await openLibrary(d);
    const status = library.getLibraryStatus();
    expect(status.readOnly).toBe(true);
    expect(status.problem).toMatch(/read-only until the last backup is restored/);
    expect(status.lastBackupAt).not.toBeNull();
    expect(library.readOnly).toBe(true);
    await expectStudioError(() => library.gallery.setFavorite(['x'], true), 'storage', /read-only/);
    await expectStudioError(
      library.saveGeneration({
        settings: settingsOf(),
        images: [{ png: await pngOf(null), width: 64, height: 64, seed: 1, batchIndex: 0 }],
        family: null,
        provider: null,
        fallbackReason: null,
        timings: {},
      }),
      'storage',
    );
    await expectStudioError(
      library.uploads.uploadImage({
        data: Buffer.from(await pngOf(null)).toString('base64'),
        purpose: 'init',
      }),
      'storage',
    );
    // Reads do not crash the host: they answer or fail with a sentence.
    try {
      all(library);
    } catch (e) {
      expect(e).toBeInstanceOf(StudioError);
    }

    // The job queue hears the reopened database once its start-up (reconcile) is done.
    const heard: number[] = [];
    library.onReopened(() => heard.push(library.getLibraryStatus().images));
    const restored = await library.integrity.restoreBackup();
    expect(restored).toMatchObject({ readOnly: false, problem: null, images: 5 });
    expect(heard).toEqual([5]);
    expect(context.emitted.some((e) => e.event === 'libraryStatus')).toBe(true);
    // The backup held 3; the 2 saved after it came back from their PNG metadata.
    expect(
      all(library)
        .items.map((i) => i.prompt)
        .sort(),
    ).toEqual([
      'after backup 0',
      'after backup 1',
      'before backup 0',
      'before backup 1',
      'before backup 2',
    ]);
    expect(fs.readdirSync(path.join(d, 'corrupt')).some((f) => f.endsWith('.sqlite'))).toBe(true);
    await expectConsistent(d, library);
    await saveOne(library, { prompt: 'after restore' });
    await expectStudioError(library.integrity.restoreBackup(), 'invalid-argument');
    library.close();
  });

  it('a file that is not a database at all, with no backup: a new library re-imports the images', async () => {
    const d = await damagedLibrary(scrambleHeader, false);
    const { library } = await openLibrary(d);
    expect(library.getLibraryStatus()).toMatchObject({
      readOnly: true,
      lastBackupAt: null,
      images: 0,
    });
    expect(all(library).items).toEqual([]);
    const restored = await library.integrity.restoreBackup();
    expect(restored).toMatchObject({ readOnly: false, images: 5 });
    await expectConsistent(d, library);
    library.close();
  });

  it('keeps the newest three automatic backups', async () => {
    const d = dir();
    const { library } = await openLibrary(d, { library: { backupMaxAgeMs: 0 } });
    // backupMaxAgeMs 0: the start took one.
    expect(library.getLibraryStatus().lastBackupAt).not.toBeNull();
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 3));
      await library.backupNow();
    }
    const backups = fs.readdirSync(path.join(d, 'backups'));
    expect(backups.filter((f) => /^library-\d+\.sqlite$/.test(f))).toHaveLength(3);
    expect(backups.filter((f) => f.startsWith('.'))).toEqual([]);
    library.close();
  });
});

describe('a full disk during a save', () => {
  const enospc = () =>
    Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

  it('injected: the second image fails, the first one written is removed, earlier saves stay', async () => {
    const d = dir();
    const { library, context } = await openLibrary(d);
    const before = await saveOne(library, { prompt: 'saved before' }, { images: 2 });
    let writes = 0;
    library.store.beforeWrite = () => {
      if (++writes === 3) throw enospc(); // image 1, thumb 1, then image 2 fails
    };
    const events = context.emitted.length;
    await expectStudioError(
      saveOne(library, { prompt: 'never saved' }, { images: 2 }),
      'disk-full',
      /The disk is full, so the image was not saved\. Free some space and try again; nothing saved before was lost\./,
    );
    expect(context.emitted.length).toBe(events);
    library.store.beforeWrite = null;
    expect(all(library).items.map((i) => i.prompt)).toEqual(['saved before', 'saved before']);
    expect(await expectConsistent(d, library)).toBe(2);
    // And it works again once there is room.
    await saveOne(library, { prompt: 'saved after' });
    expect(all(library).total).toBe(3);
    expect(before.imageIds.every((id) => fs.existsSync(library.resolveImage(id).file))).toBe(true);
    library.close();
  });

  // A real full disk: a 2 MiB tmpfs, where mounting is allowed (root in a container with
  // CAP_SYS_ADMIN); skipped elsewhere, where the injected test above covers the paths.
  const mountPoint = path.join(tempDir('ls-tmpfs-'), 'mnt');
  fs.mkdirSync(mountPoint);
  dirs.push(path.dirname(mountPoint));
  const mounted =
    process.platform === 'linux' &&
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint], { stdio: 'ignore' })
      .status === 0;
  afterAll(() => {
    if (mounted) spawnSync('umount', ['-l', mountPoint], { stdio: 'ignore' });
  });

  it.runIf(mounted)('real ENOSPC on a tiny tmpfs: a clear error, nothing lost', async () => {
    const d = path.join(mountPoint, 'data');
    const { library } = await openLibrary(d);
    await saveOne(library, { prompt: 'fits' }, { images: 2 });
    // Fill the disk.
    const filler = path.join(mountPoint, 'filler');
    const fd = fs.openSync(filler, 'w');
    const chunk = Buffer.alloc(16 * 1024, 1);
    try {
      for (;;) fs.writeSync(fd, chunk);
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    try {
      for (;;) fs.writeSync(fd, chunk.subarray(0, 512));
    } catch {
      // full to the last block
    }
    fs.closeSync(fd);
    const settings = settingsOf({ prompt: 'too big' });
    await expectStudioError(
      library.saveGeneration({
        settings,
        images: [
          {
            png: await pngOf(settings, 9, 256, true),
            width: 256,
            height: 256,
            seed: 9,
            batchIndex: 0,
          },
        ],
        family: null,
        provider: null,
        fallbackReason: null,
        timings: {},
      }),
      'disk-full',
      /The disk is full/,
    );
    fs.rmSync(filler);
    expect(all(library).items.map((i) => i.prompt)).toEqual(['fits', 'fits']);
    expect(await expectConsistent(d, library)).toBe(2);
    await saveOne(library, { prompt: 'fits again' });
    library.close();
    const again = await openLibrary(d);
    expect(all(again.library).total).toBe(3);
    await expectConsistent(d, again.library);
    again.library.close();
  });
});

describe('a save cut short between its files and its rows', () => {
  /**
   * The data folder exactly as a crash at the commit point leaves it: copied (database, WAL and
   * files) from inside the test hook, where no transaction is open and every file is written.
   */
  async function crashedCopy(images: number): Promise<{ d: string; generationId: string }> {
    const live = dir();
    const { library } = await openLibrary(live);
    const d = dir();
    let generationId = '';
    library.beforeCommit = (id) => {
      generationId = id;
      fs.cpSync(live, d, { recursive: true });
    };
    await saveOne(library, { prompt: 'cut short' }, { images });
    library.close();
    fs.rmSync(path.join(d, 'backups'), { recursive: true, force: true });
    return { d, generationId };
  }

  it('whole files: the next start finishes it under its own id, once', async () => {
    const { d, generationId } = await crashedCopy(2);
    const before = openDatabase(path.join(d, 'library.sqlite'));
    expect(before.prepare('SELECT count(*) FROM images').pluck().get()).toBe(0);
    expect(before.prepare('SELECT generation_id FROM pending_saves').pluck().all()).toEqual([
      generationId,
    ]);
    before.close();
    const { library } = await openLibrary(d);
    const page = all(library);
    expect(page.items.map((i) => [i.generationId, i.prompt])).toEqual([
      [generationId, 'cut short'],
      [generationId, 'cut short'],
    ]);
    expect(library.db.prepare('SELECT count(*) FROM pending_saves').pluck().get()).toBe(0);
    expect(await expectConsistent(d, library)).toBe(2);
    library.close();
    // And once only: a second start changes nothing.
    const again = await openLibrary(d);
    expect(all(again.library).total).toBe(2);
    again.library.close();
  });

  it('a torn file: the next start removes the save, and nothing is re-imported', async () => {
    const { d } = await crashedCopy(2);
    const pngs = (fs.readdirSync(path.join(d, 'images'), { recursive: true }) as string[])
      .filter((f) => f.endsWith('.png'))
      .map((f) => path.join(d, 'images', f));
    expect(pngs).toHaveLength(2);
    const data = fs.readFileSync(pngs[1]);
    fs.writeFileSync(pngs[1], data.subarray(0, data.length >> 1));
    const { library } = await openLibrary(d);
    expect(all(library).total).toBe(0);
    expect(library.db.prepare('SELECT count(*) FROM generations').pluck().get()).toBe(0);
    expect(library.db.prepare('SELECT count(*) FROM pending_saves').pluck().get()).toBe(0);
    expect(await expectConsistent(d, library)).toBe(0);
    library.close();
  });
});

describe('kill -9 of a child process', () => {
  let childScript: string;

  beforeAll(async () => {
    childScript = path.join(repoRoot, 'out', 'test-bundles', 'library-crash-child.mjs');
    const helpers = path.join(repoRoot, 'tests', 'integration', 'library-helpers.ts');
    const lib = (f: string) => path.join(repoRoot, 'src', 'main', 'library', f);
    await build({
      stdin: {
        contents: `
          import fs from 'node:fs';
          import { openLibrary, saveOne } from ${JSON.stringify(helpers)};
          import { openDatabase } from ${JSON.stringify(lib('db.ts'))};
          import { migrate, migrations } from ${JSON.stringify(lib('migrations.ts'))};
          const [mode, dataDir] = process.argv.slice(2);
          const say = (line) => fs.writeSync(1, line + '\\n');
          if (mode === 'save') {
            const { library } = await openLibrary(dataDir);
            for (let i = 0; ; i++) {
              const r = await saveOne(library, { prompt: 'crash ' + i, seed: i }, { images: 2, size: 128 });
              say('saved ' + r.imageIds.join(' '));
            }
          } else if (mode === 'migrate') {
            const db = openDatabase(dataDir + '/library.sqlite');
            migrate(db, [...migrations, { version: migrations[migrations.length - 1].version + 1, description: 'slow', up: (d) => {
              d.exec('ALTER TABLE images ADD COLUMN extra TEXT; CREATE TABLE big (x TEXT);');
              const ins = d.prepare('INSERT INTO big VALUES (?)');
              for (let i = 0; i < 200000; i++) ins.run('row ' + i + ' '.repeat(50));
              d.exec("UPDATE images SET extra = 'half'");
              say('migrating');
              for (;;) {}
            } }]);
          }
        `,
        resolveDir: repoRoot,
        loader: 'ts',
        sourcefile: 'library-crash-child.ts',
      },
      outfile: childScript,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'esm',
      packages: 'external',
      logLevel: 'warning',
      banner: {
        js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
      },
    });
  });

  function runChild(mode: string, dataDir: string) {
    const child: ChildProcess = spawn(process.execPath, [childScript, mode, dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let stderr = '';
    let buffer = '';
    const waiters: Array<() => void> = [];
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      const parts = buffer.split('\n');
      buffer = parts.pop()!;
      lines.push(...parts);
      for (const w of waiters.splice(0)) w();
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, s) => r(s)));
    const waitFor = async (n: number) => {
      const deadline = Date.now() + 30_000;
      while (lines.length < n) {
        if (Date.now() > deadline || child.exitCode !== null)
          throw new Error(`child gave ${lines.length} lines: ${stderr}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 100);
        });
      }
    };
    return { child, lines, waitFor, exited };
  }

  it('during saves: no lost or half-written image, a consistent database', async () => {
    const d = dir();
    const saved: string[] = [];
    for (let round = 0; round < 3; round++) {
      const run = runChild('save', d);
      await run.waitFor(2 + round);
      // Land the kill anywhere in a save: writing files, renaming, or in the transaction.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40)));
      run.child.kill('SIGKILL');
      expect(await run.exited).toBe('SIGKILL');
      for (const line of run.lines) saved.push(...line.split(' ').slice(1));

      const { library } = await openLibrary(d);
      const ids = new Set(all(library).items.map((i) => i.imageId));
      // Every save the child reported is there; a save cut short is either whole (re-imported
      // from its PNG) or absent, never half.
      for (const id of saved) expect(ids.has(id)).toBe(true);
      await expectConsistent(d, library);
      library.close();
    }
  });

  it('during a migration: the database stays at the previous version, whole', async () => {
    const d = dir();
    const { library } = await openLibrary(d);
    await saveOne(library, { prompt: 'before the migration' }, { images: 2 });
    library.close();
    const run = runChild('migrate', d);
    await run.waitFor(1);
    expect(run.lines[0]).toBe('migrating');
    run.child.kill('SIGKILL');
    expect(await run.exited).toBe('SIGKILL');

    const db = openDatabase(path.join(d, 'library.sqlite'));
    expect(quickCheck(db)).toBeNull();
    expect(userVersion(db)).toBe(schemaVersion);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'big'").get()).toBeUndefined();
    const cols = (db.prepare('PRAGMA table_info(images)').all() as Array<{ name: string }>).map(
      (c) => c.name,
    );
    expect(cols).not.toContain('extra');
    db.close();
    const reopened = await openLibrary(d);
    expect(all(reopened.library).items.map((i) => i.prompt)).toEqual([
      'before the migration',
      'before the migration',
    ]);
    await expectConsistent(d, reopened.library);
    reopened.library.close();
  });
});

describe('database edge cases (through the host, as both shells call it)', () => {
  /** A library of 5 images, 3 of them in a backup, closed; then `damage` on its file. */
  async function libraryThen(damage: (file: string) => void): Promise<string> {
    const d = dir();
    const { library } = await openLibrary(d);
    for (let i = 0; i < 3; i++) await saveOne(library, { prompt: `before backup ${i}`, seed: i });
    await library.backupNow();
    for (let i = 0; i < 2; i++)
      await saveOne(library, { prompt: `after backup ${i}`, seed: 10 + i });
    library.close();
    damage(path.join(d, 'library.sqlite'));
    return d;
  }

  /** Every cheap call answers, or fails with a sentence: never the generic internal error. */
  async function expectNoInternalErrors(host: StudioHost) {
    const calls: Array<[string, unknown]> = [
      ['getLibraryStatus', undefined],
      ['listModels', undefined],
      ['searchGallery', {}],
      ['getQueue', undefined],
      ['pauseQueue', undefined],
      ['resumeQueue', undefined],
      ['cancelAll', undefined],
      ['getImage', { id: 'abc' }],
      ['setFavorite', { imageIds: ['abc'], favorite: true }],
      ['enqueue', { settings: { model: 'm', prompt: 'p', seed: 1 } }],
    ];
    for (const [method, input] of calls) {
      const t0 = performance.now();
      const r = await dispatch(host.service, method, input);
      expect(performance.now() - t0, method).toBeLessThan(2000);
      if (!r.ok) expect(r.error.code, `${method}: ${r.error.message}`).not.toBe('internal');
    }
  }

  const prompts = (host: StudioHost) =>
    host.library.gallery
      .searchGallery(GalleryQuery.parse({ limit: 500 }))
      .items.map((i) => i.prompt)
      .sort();
  const everyPrompt = [
    'after backup 0',
    'after backup 1',
    'before backup 0',
    'before backup 1',
    'before backup 2',
  ];

  /** Random bytes over whole pages of the file (page numbers from 1, 4096 bytes each). */
  const overPages = (pages: (file: string) => number[]) => (file: string) => {
    const list = pages(file);
    const fd = fs.openSync(file, 'r+');
    for (const page of list) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, (page - 1) * 4096);
    fs.closeSync(fd);
  };
  const rootPages = (file: string, tables: string[]) => {
    const db = openDatabase(file, { readonly: true });
    const pages = db
      .prepare(`SELECT rootpage FROM sqlite_master WHERE tbl_name IN (${tables.map(() => '?')})`)
      .pluck()
      .all(...tables) as number[];
    db.close();
    return pages.filter((p) => p > 1);
  };

  it.each([
    // The header and schema page stay; the models table and what follows it are noise.
    ['the first pages', overPages(() => [2, 3, 4, 5])],
    // The images stay readable (the read-only library shows them); the queue's tables do not.
    ["the queue's pages", overPages((file) => rootPages(file, ['jobs', 'meta']))],
  ])('random bytes over %s: read-only with a sentence, then restore', async (_what, damage) => {
    const d = await libraryThen(damage);
    const host = new StudioHost({ shell: 'headless', dataDir: d, version: 't', log: () => {} });
    try {
      await host.library.ready;
      const status = await host.service.getLibraryStatus(undefined);
      expect(status).toMatchObject({ readOnly: true });
      expect(status.problem).toMatch(/read-only until the last backup is restored/);
      expect(status.lastBackupAt).not.toBeNull();
      await expectNoInternalErrors(host);
      const restored = await host.service.restoreBackup(undefined);
      expect(restored).toMatchObject({ readOnly: false, problem: null, images: 5 });
      expect(prompts(host)).toEqual(everyPrompt);
      // The queue works on the restored database.
      expect((host.service.getQueue(undefined) as QueueState).jobs).toEqual([]);
    } finally {
      await host.close();
    }
  });

  it('a zero-length library.sqlite: read-only, nothing re-imported, restore brings it back', async () => {
    const d = await libraryThen((file) => {
      fs.truncateSync(file, 0);
      for (const s of ['-wal', '-shm']) fs.rmSync(file + s, { force: true });
    });
    const imagesBefore = fs.readdirSync(path.join(d, 'images'), { recursive: true }).sort();
    const host = new StudioHost({ shell: 'headless', dataDir: d, version: 't', log: () => {} });
    try {
      await host.library.ready;
      const status = await host.service.getLibraryStatus(undefined);
      expect(status).toMatchObject({ readOnly: true, generations: 0, images: 0 });
      expect(status.problem).toMatch(/empty: its contents were lost/);
      expect(status.lastBackupAt).not.toBeNull();
      // No new library was started over it: the file is still empty, the images untouched.
      expect(fs.statSync(path.join(d, 'library.sqlite')).size).toBe(0);
      expect(fs.readdirSync(path.join(d, 'images'), { recursive: true }).sort()).toEqual(
        imagesBefore,
      );
      expect(fs.existsSync(path.join(d, 'quarantine'))).toBe(false);
      await expectNoInternalErrors(host);
      const restored = await host.service.restoreBackup(undefined);
      expect(restored).toMatchObject({ readOnly: false, problem: null, images: 5 });
      // The 3 of the backup under their own generations, the 2 after it from their metadata.
      expect(prompts(host)).toEqual(everyPrompt);
      await expectConsistent(d, host.library);
    } finally {
      await host.close();
    }
  });

  it('a zero-length file in a folder that never held a library is a new library', async () => {
    const d = dir();
    fs.writeFileSync(path.join(d, 'library.sqlite'), '');
    const { library } = await openLibrary(d);
    expect(library.getLibraryStatus()).toMatchObject({ readOnly: false, problem: null });
    await saveOne(library, { prompt: 'first' });
    library.close();
  });
});
