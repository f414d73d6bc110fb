/**
 * Gallery search benchmark: a library of 100,000 generations (one image each; any number given,
 * e.g. 1000000), then timed search pages for a mix of queries (text, filters, LoRA, sorts, deep
 * offsets, cursor pages). The target is a page (with its total: exact, "~N" estimated, or a
 * lower bound "N+") under 30 ms at p95. The library goes under the temporary folder (TMPDIR).
 *
 *   npm run bench:library -- [generations] [--keep | --reuse=DIR] [--only=text,tag]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GalleryQuery, GenerationSettings } from '../../src/shared';
import { EventHub } from '../../src/main/events';
import type { HostContext } from '../../src/main/services';
import { SettingsStore } from '../../src/main/settings-store';
import { immediate } from '../../src/main/library/db';
import { suspendLeadCounts } from '../../src/main/library/lead-counts';
import { suspendTextIndexes } from '../../src/main/library/image-text';
import { type CountCache, searchGallery } from '../../src/main/library/gallery';
import { newId } from '../../src/main/library/ids';
import { variantKeyOf } from '../../src/main/library/variant-key';
import { Library } from '../../src/main/library/service';

const args = process.argv.slice(2);
const total = Number(args.find((a) => /^\d+$/.test(a)) ?? 100_000);
const keep = args.includes('--keep');
/** `--reuse=<dir>`: query a library kept by an earlier `--keep` run instead of filling one. */
const reuse = args.find((a) => a.startsWith('--reuse='))?.slice('--reuse='.length) ?? null;
const targetMs = 30;
/** `--only=<words>`: only the query kinds whose name contains one of these (comma-separated). */
const only =
  args
    .find((a) => a.startsWith('--only='))
    ?.slice('--only='.length)
    .split(',') ?? null;

/** Deterministic pseudo-random numbers (xorshift32). */
let state = 0x9e3779b9;
function rand(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 2 ** 32;
}
const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];

const subjects = [
  'cat',
  'dog',
  'fox',
  'castle',
  'forest',
  'city',
  'robot',
  'portrait',
  'dragon',
  'ship',
  'mountain',
  'lighthouse',
  'garden',
  'astronaut',
  'owl',
  'river',
  'temple',
  'market',
  'knight',
  'whale',
];
const styles = [
  'oil painting',
  'watercolor',
  'photograph',
  'digital art',
  'pencil sketch',
  'anime',
  'studio lighting',
  'cinematic',
  'isometric',
  'pixel art',
  'baroque',
  'art nouveau',
  'ukiyo-e',
  'low poly',
];
const extras = [
  'highly detailed',
  'golden hour',
  'at night',
  'in the rain',
  'misty',
  'vibrant colors',
  'soft light',
  '8k',
  'bokeh',
  'wide angle',
  'trending',
  'masterpiece',
  'snow',
  'sunset',
  'underwater',
];
const negatives = [
  '',
  'blurry',
  'lowres, bad anatomy',
  'watermark, text',
  'blurry, jpeg artifacts, deformed',
];
const samplers = ['euler_a', 'euler', 'ddim', 'dpmpp_2m', 'ddpm', 'heun', 'lcm'] as const;
const modes = ['txt2img', 'txt2img', 'txt2img', 'img2img', 'inpaint', 'upscale'] as const;
const sizes = [
  [512, 512],
  [512, 768],
  [768, 512],
  [1024, 1024],
] as const;

function promptText(): string {
  const parts = [`a ${pick(subjects)}`, pick(styles)];
  const n = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < n; i++) parts.push(pick(extras));
  // A rare word in about 1 prompt in 2000.
  if (rand() < 0.0005) parts.push('zanzibar');
  return parts.join(', ');
}

function context(dataDir: string): HostContext {
  return {
    dataDir,
    resourcesDir: null,
    workerPath: null,
    sqliteNativeBinding: null,
    desktop: null,
    events: new EventHub(),
    settings: new SettingsStore(dataDir),
    updateEngineStatus: () => {},
    log: () => {},
  };
}

/** The 1-minute load average, to read each figure against (the machine may be shared). */
function loadAverage(): string {
  return os.loadavg()[0].toFixed(1);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Models and time base of a kept library. */
function existing(library: Library): { models: string[]; start: number } {
  const db = library.db;
  const models = (
    db.prepare('SELECT id FROM models ORDER BY id').all() as Array<{ id: string }>
  ).map((r) => r.id);
  const start = (db.prepare('SELECT min(created_at) AS t FROM images').get() as { t: number }).t;
  return { models, start };
}

/** LoRA names of the LoRA filter: the first common, the last rare. */
const loras = ['detail-tweaker', 'film-grain', 'pixel-style', 'ink-wash'];

/**
 * Indexes dropped while the rows go in and built once afterwards: a 1,000,000-row library fills
 * in minutes instead of most of an hour, since each index is then built by one sort rather than
 * by a million random B-tree inserts.
 */
function dropIndexes(db: Library['db']): string[] {
  const rows = db
    .prepare(
      `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
       AND tbl_name IN ('images', 'generations', 'image_tags', 'generation_networks')`,
    )
    .all() as Array<{ name: string; sql: string }>;
  for (const r of rows) db.exec(`DROP INDEX ${r.name}`);
  return rows.map((r) => r.sql);
}

/**
 * Fills the library: models, prompts (about 40% reused), generations, images, marks, tags,
 * LoRAs. One transaction, prepared statements, the indexes, the kept tag and LoRA counts and
 * the text indexes (suspendTextIndexes: one statement each instead of a trigger per row) built
 * at the end.
 */
function fill(library: Library): { models: string[]; start: number } {
  const db = library.db;
  const t0 = performance.now();
  const models: string[] = [];
  // While filling: 512 MiB, or about 2 KiB per generation (2 GiB at a million). A cache smaller
  // than the growing database spills dirty pages to the WAL in the middle of the one
  // transaction, and then every insert slows down: 1,000,000 at 512 MiB ran over 40 min.
  db.pragma(`cache_size = -${Math.max(524_288, Math.min(4_194_304, total * 2))}`);
  db.pragma('foreign_keys = OFF');
  const indexes = dropIndexes(db);
  const resumeLeadCounts = suspendLeadCounts(db);
  const resumeText = suspendTextIndexes(db);
  const insertModel = db.prepare(
    `INSERT INTO models (id, path, name, family, added_at) VALUES (?, ?, ?, 'sd1', ?)`,
  );
  const insertPrompt = db.prepare(
    'INSERT INTO prompts (text, negative) VALUES (?, ?) ON CONFLICT (text, negative) DO NOTHING',
  );
  const promptId = db.prepare('SELECT id FROM prompts WHERE text = ? AND negative = ?');
  const insertGeneration = db.prepare(
    `INSERT INTO generations (id, settings, prompt_id, model_id, model_name, seed, sampler, mode,
       steps, guidance, width, height, parent_id, variant_key, timings, provider, family, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', 'cpu', 'sd1', ?)`,
  );
  const insertImage = db.prepare(
    `INSERT INTO images (id, generation_id, file, thumb, sha256, width, height, bytes, seed,
       batch_index, prompt_id, model_id, sampler, mode, variant_key, favorite, rating, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertNetwork = db.prepare(
    "INSERT INTO generation_networks (generation_id, kind, name) VALUES (?, 'lora', ?)",
  );
  const tagNames = ['keep', 'wallpaper', 'reference', 'print', 'client'];
  const linkTag = db.prepare('INSERT OR IGNORE INTO image_tags (image_id, tag_id) VALUES (?, ?)');
  const start = Date.now() - total * 60_000; // one a minute
  const recent: Array<{ text: string; negative: string; id: number }> = [];
  // Parsed once: the schema's defaults, with each row's own values spread over them.
  const base = GenerationSettings.parse({ model: 'm', prompt: 'p', seed: 0 });
  immediate(db, () => {
    for (let m = 0; m < 6; m++) {
      const id = newId();
      models.push(id);
      insertModel.run(id, `/models/model-${m}`, `model-${m}`, Date.now());
    }
    const tagIds = tagNames.map(
      (name) =>
        (db.prepare('INSERT INTO tags (name) VALUES (?) RETURNING id').get(name) as { id: number })
          .id,
    );
    for (let i = 0; i < total; i++) {
      const reuse = recent.length > 0 && rand() < 0.4;
      let p = reuse ? pick(recent) : null;
      if (!p) {
        const text = promptText();
        const negative = pick(negatives);
        insertPrompt.run(text, negative);
        p = { text, negative, id: (promptId.get(text, negative) as { id: number }).id };
        recent.push(p);
        if (recent.length > 500) recent.shift();
      }
      const [w, h] = pick(sizes);
      const modelIndex = Math.floor(rand() ** 2 * models.length);
      const settings: GenerationSettings = {
        ...base,
        model: models[modelIndex],
        prompt: p.text,
        negativePrompt: p.negative,
        seed: Math.floor(rand() * 2 ** 32),
        sampler: pick(samplers),
        mode: pick(modes),
        steps: 20 + Math.floor(rand() * 3) * 5,
        width: w,
        height: h,
      };
      const created = start + i * 60_000 + Math.floor(rand() * 1000);
      const gid = newId(created);
      const iid = newId(created);
      const key = variantKeyOf(settings);
      insertGeneration.run(
        gid,
        JSON.stringify(settings),
        p.id,
        settings.model,
        `model-${modelIndex}`,
        settings.seed,
        settings.sampler,
        settings.mode,
        settings.steps,
        settings.guidance,
        w,
        h,
        null,
        key,
        created,
      );
      const r = rand();
      insertImage.run(
        iid,
        gid,
        `images/x/${iid}.png`,
        `thumbs/x/${iid}.webp`,
        '0'.repeat(64),
        w,
        h,
        400_000 + Math.floor(rand() * 400_000),
        settings.seed,
        p.id,
        settings.model,
        settings.sampler,
        settings.mode,
        key,
        r < 0.1 ? 1 : 0,
        r < 0.5 ? 0 : Math.ceil(rand() * 5),
        created,
      );
      if (rand() < 0.05) linkTag.run(iid, pick(tagIds));
      // About 1 in 5 with a LoRA: 10% detail-tweaker ... 0.05% ink-wash.
      const l = rand();
      if (l < 0.2) insertNetwork.run(gid, loras[l < 0.1 ? 0 : l < 0.15 ? 1 : l < 0.1995 ? 2 : 3]);
    }
  });
  const rowsMs = performance.now() - t0;
  for (const sql of indexes) db.exec(sql);
  const textStart = performance.now();
  resumeText();
  const textMs = performance.now() - textStart;
  resumeLeadCounts();
  db.pragma('foreign_keys = ON');
  db.exec('ANALYZE');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.pragma('cache_size = -2000');
  const fillMs = performance.now() - t0;
  const fileMb = fs.statSync(library.dbFile).size / 1e6;
  console.log(
    `library bench: ${total.toLocaleString('en')} generations (${(
      db.prepare('SELECT count(*) AS n FROM prompts').get() as { n: number }
    ).n.toLocaleString(
      'en',
    )} distinct prompts) filled in ${(fillMs / 1000).toFixed(1)} s (rows ${(rowsMs / 1000).toFixed(1)} s, then ${indexes.length} indexes, the text indexes ${(textMs / 1000).toFixed(1)} s), database ${fileMb.toFixed(0)} MB`,
  );

  return { models, start };
}

async function main(): Promise<void> {
  const dataDir = reuse ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ls-bench-library-'));
  const opening = performance.now();
  const library = new Library(context(dataDir), { backupIntervalMs: 0, backupMaxAgeMs: Infinity });
  await library.ready;
  // A kept library from an older build is migrated here: its time is the upgrade's.
  if (reuse)
    console.log(`library bench: opened in ${((performance.now() - opening) / 1000).toFixed(1)} s`);
  const db = library.db;

  const { models, start } = reuse ? existing(library) : fill(library);
  const loadBefore = loadAverage();
  // --- Queries: each timed cold (its total counted again) and as a cursor page.
  const anyImage = (db.prepare('SELECT id FROM images LIMIT 1 OFFSET 777').get() as { id: string })
    .id;
  const mid = start + Math.floor(total / 2) * 60_000;
  const queries: Array<[string, Record<string, unknown>]> = [
    ['newest', {}],
    ['oldest', { sort: 'oldest' }],
    ['rating sort', { sort: 'rating' }],
    ['text: common word', { text: 'cat' }],
    ['text: two words', { text: 'dragon watercolor' }],
    ['text: prefix', { text: 'light' }],
    ['text: rare word', { text: 'zanzibar' }],
    ['text: no match', { text: 'nonexistentword' }],
    ['text: negative prompt', { text: 'watermark' }],
    ['model', { modelId: models[3] }],
    ['sampler + mode', { sampler: 'ddim', mode: 'img2img' }],
    ['size', { width: 1024, height: 1024 }],
    ['favorites', { favorite: true }],
    ['min rating 4', { minRating: 4 }],
    ['tag', { tag: 'wallpaper' }],
    ['tag, oldest', { tag: 'client', sort: 'oldest' }],
    ['text + tag', { text: 'cat', tag: 'keep' }],
    ['LoRA', { lora: loras[0] }],
    ['LoRA: rare', { lora: loras[3] }],
    ['LoRA + text', { lora: loras[1], text: 'dragon' }],
    ['deep page (offset half)', { offset: Math.floor(total / 2) }],
    ['deep page (offset 90%)', { offset: Math.floor(total * 0.9) }],
    ['deep page, rating sort', { offset: Math.floor(total / 2), sort: 'rating' }],
    ['deep page, sampler', { offset: Math.floor(total / 20), sampler: 'ddim' }],
    ['deep page, sampler, 90%', { offset: Math.floor((total / 7) * 0.9), sampler: 'ddim' }],
    [
      'deep page, favourites, oldest',
      { offset: Math.floor(total / 20), favorite: true, sort: 'oldest' },
    ],
    ['date range', { from: mid, to: mid + 7 * 24 * 3600_000 }],
    ['text, rating sort', { text: 'cat', sort: 'rating' }],
    ['text: prefix, rating sort', { text: 'light', sort: 'rating' }],
    ['text + model + rating sort', { text: 'castle', modelId: models[1], sort: 'rating' }],
    ['text + tag, rating sort', { text: 'cat', tag: 'keep', sort: 'rating' }],
    ['LoRA + text, rating sort', { lora: loras[1], text: 'dragon', sort: 'rating' }],
    ['seed variants', { seedVariantsOf: anyImage }],
    [
      'everything',
      { text: 'fox', sampler: 'euler_a', favorite: false, minRating: 1, sort: 'oldest' },
    ],
  ];
  const rounds = 25;
  const allTimes: number[] = [];
  const firstTimes: number[] = [];
  const rows: string[] = [];
  for (const [name, raw] of queries) {
    if (only && !only.some((w) => name.includes(w))) continue;
    const times: number[] = [];
    const pageTimes: number[] = [];
    /** The first page again with its total cached: the page query alone, without the count. */
    const aloneTimes: number[] = [];
    let totalFound = '';
    for (let r = 0; r < rounds; r++) {
      const query = GalleryQuery.parse({ ...raw, limit: 100 });
      let t = performance.now();
      const first = searchGallery(db, query, new Map());
      times.push(performance.now() - t);
      totalFound = first.totalExact
        ? `${first.total}`
        : first.totalEstimate !== undefined
          ? `~${first.totalEstimate}`
          : `${first.total}+`;
      const cache: CountCache = new Map();
      searchGallery(db, query, cache);
      t = performance.now();
      searchGallery(db, query, cache);
      aloneTimes.push(performance.now() - t);
      if (first.nextCursor) {
        // Page 2 as the studio asks for it: the same filters, so the total is cached.
        t = performance.now();
        searchGallery(db, { ...query, cursor: first.nextCursor }, cache);
        pageTimes.push(performance.now() - t);
      }
    }
    const all = [...times, ...pageTimes].sort((a, b) => a - b);
    allTimes.push(...all);
    firstTimes.push(...times);
    times.sort((a, b) => a - b);
    aloneTimes.sort((a, b) => a - b);
    rows.push(
      `  ${name.padEnd(28)} ${totalFound.padStart(7)} matches   first page p50 ${percentile(times, 50).toFixed(1).padStart(5)} ms  p95 ${percentile(times, 95).toFixed(1).padStart(5)} ms   without its count p95 ${percentile(aloneTimes, 95).toFixed(1).padStart(5)} ms` +
        (pageTimes.length
          ? `   next page p95 ${percentile(
              pageTimes.sort((a, b) => a - b),
              95,
            )
              .toFixed(1)
              .padStart(5)} ms`
          : ''),
    );
  }
  console.log(rows.join('\n'));
  allTimes.sort((a, b) => a - b);
  firstTimes.sort((a, b) => a - b);
  const p95 = percentile(allTimes, 95);
  console.log(
    `library bench: first pages (a new search, counted) p95 ${percentile(firstTimes, 95).toFixed(1)} ms, p50 ${percentile(firstTimes, 50).toFixed(1)} ms, max ${firstTimes[firstTimes.length - 1].toFixed(1)} ms over ${firstTimes.length}`,
  );
  console.log(
    `library bench: search page p95 ${p95.toFixed(1)} ms, p50 ${percentile(allTimes, 50).toFixed(1)} ms, max ${allTimes[allTimes.length - 1].toFixed(1)} ms over ${allTimes.length} pages of 100 (target < ${targetMs} ms): ${p95 < targetMs ? 'PASS' : 'FAIL'}`,
  );
  console.log(
    `library bench: load average (1 min) ${loadBefore} before the searches, ${loadAverage()} after (${os.cpus().length} cores)`,
  );
  library.close();
  if (keep || reuse) console.log(`kept ${dataDir}`);
  else fs.rmSync(dataDir, { recursive: true, force: true });
  process.exitCode = p95 < targetMs ? 0 : 1;
}

await main();
