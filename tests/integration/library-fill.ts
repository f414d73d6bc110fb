/**
 * A generated library for gallery tests, and the reference that searches it: a few thousand
 * images in generations of 1 to 3 sharing their creation time, several generations sharing one
 * millisecond (created_at ties within and across generations), deleted images, tags, LoRAs
 * and embeddings, common, rare and prefix words. The reference filters and sorts the rows in
 * JavaScript, so the SQL's indexes, hints, query shapes and counts are checked against plain
 * rules.
 */
import type { GalleryQuery } from '../../src/shared';
import type { Library } from '../../src/main/library/service';

/** One image as the reference sees it. */
export interface Row {
  id: string;
  createdAt: number;
  rating: number;
  favorite: boolean;
  deleted: boolean;
  sampler: string;
  mode: string;
  modelId: string;
  width: number;
  height: number;
  words: string[];
  tags: string[];
  loras: string[];
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure reproduces. */
export function randomSource(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

const subjects = ['cat', 'dog', 'castle', 'lighthouse', 'light'];
const styles = ['oil painting', 'watercolor', 'photograph', 'pixel art'];
const negatives = ['', 'blurry', 'watermark, text'];
// Weighted so that one sampler, one mode and the favourites each have more matches than a
// page fetched through a filter's index and sorted (gallery.ts, smallSet): their pages walk the
// filter's own index in date order.
const samplers = ['euler_a', 'ddim', 'ddim', 'ddim', 'heun'];
const modes = ['txt2img', 'img2img', 'img2img'];

/**
 * Fills `l` with `generations` generations straight through SQL (the triggers run as for a
 * save), and returns its images as reference rows.
 */
export function fillLibrary(l: Library, generations: number, seed = 7): Row[] {
  const rand = randomSource(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];
  const db = l.db;
  const rows: Row[] = [];
  const models = ['m0', 'm1', 'm2'];
  // Random ids, so id order is not insertion order and ties are broken by id alone.
  const id = () =>
    Math.floor(rand() * 36 ** 8).toString(36) + Math.floor(rand() * 36 ** 8).toString(36);
  // Prepared once: preparing each row's statements took most of a fill's time.
  const insertTag = db.prepare(
    'INSERT INTO tags (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id',
  );
  const insertPrompt = db.prepare(
    'INSERT INTO prompts (text, negative) VALUES (?, ?) ON CONFLICT (text, negative) DO NOTHING',
  );
  const promptOf = db.prepare('SELECT id FROM prompts WHERE text = ? AND negative = ?');
  const insertGeneration = db.prepare(
    `INSERT INTO generations (id, settings, prompt_id, model_id, model_name, seed, sampler, mode,
       steps, guidance, width, height, variant_key, timings, provider, family, created_at)
     VALUES (?, '{}', ?, ?, ?, ?, ?, ?, 20, 7, ?, ?, ?, '{}', 'cpu', 'sd1', ?)`,
  );
  const insertLora = db.prepare(
    "INSERT INTO generation_networks (generation_id, kind, name) VALUES (?, 'lora', ?)",
  );
  const insertEmbedding = db.prepare(
    "INSERT INTO generation_networks (generation_id, kind, name) VALUES (?, 'embedding', 'detail')",
  );
  const insertImage = db.prepare(
    `INSERT INTO images (id, generation_id, file, sha256, width, height, bytes, seed, batch_index,
       prompt_id, model_id, sampler, mode, variant_key, favorite, rating, created_at)
     VALUES (?, ?, ?, '', ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const linkTag = db.prepare('INSERT INTO image_tags (image_id, tag_id) VALUES (?, ?)');
  const trash = db.prepare("UPDATE images SET deleted_at = 1, delete_token = 'x' WHERE id = ?");
  db.transaction(() => {
    for (const m of models)
      db.prepare(
        "INSERT INTO models (id, path, name, family, added_at) VALUES (?, ?, ?, 'sd1', 0)",
      ).run(m, `/models/${m}`, m);
    const tagId = (name: string) => (insertTag.get(name) as { id: number }).id;
    for (let g = 0; g < generations; g++) {
      const text = `a ${pick(subjects)}, ${pick(styles)}${rand() < 0.01 ? ', zanzibar' : ''}`;
      const negative = pick(negatives);
      insertPrompt.run(text, negative);
      const promptId = (promptOf.get(text, negative) as { id: number }).id;
      // Three generations to a millisecond (ties across generations, and within each), ten
      // minutes apart: days of the scroll bar's day index.
      const createdAt = 1_700_000_000_000 + Math.floor(g / 3) * 600_000;
      const sampler = pick(samplers);
      const mode = pick(modes);
      const modelId = pick(models);
      const [width, height] = pick([
        [512, 512],
        [768, 512],
      ]);
      const gid = id();
      insertGeneration.run(
        gid,
        promptId,
        modelId,
        modelId,
        g,
        sampler,
        mode,
        width,
        height,
        `k${g % 50}`,
        createdAt,
      );
      const loras: string[] = [];
      if (rand() < 0.25) loras.push('Detail');
      if (rand() < 0.02) loras.push('rare-style');
      // The same LoRA twice in two cases: its images are found once.
      if (loras[0] === 'Detail' && rand() < 0.2) loras.push('detail');
      for (const name of loras) insertLora.run(gid, name);
      // An embedding of a LoRA's name is not that LoRA.
      if (rand() < 0.1) insertEmbedding.run(gid);
      const count = 1 + Math.floor(rand() * 3);
      for (let b = 0; b < count; b++) {
        const iid = id();
        const rating = rand() < 0.4 ? 0 : 1 + Math.floor(rand() * 5);
        const favorite = rand() < 0.6;
        insertImage.run(
          iid,
          gid,
          `images/${iid}.png`,
          width,
          height,
          g,
          b,
          promptId,
          modelId,
          sampler,
          mode,
          `k${g % 50}`,
          favorite ? 1 : 0,
          rating,
          createdAt,
        );
        const tags: string[] = [];
        if (rand() < 0.2) tags.push('keep');
        if (rand() < 0.02) tags.push('Print');
        for (const t of tags) linkTag.run(iid, tagId(t));
        const deleted = rand() < 0.05;
        if (deleted) trash.run(iid);
        rows.push({
          id: iid,
          createdAt,
          rating,
          favorite,
          deleted,
          sampler,
          mode,
          modelId,
          width,
          height,
          words: `${text} ${negative}`.toLowerCase().split(/[^a-z0-9]+/),
          tags: tags.map((t) => t.toLowerCase()),
          loras: loras.map((n) => n.toLowerCase()),
        });
      }
    }
  })();
  return rows;
}

/** The reference: the query's matches in its order, by plain rules over the rows. */
export function naive(rows: Row[], q: GalleryQuery): string[] {
  const terms = (q.text ?? '').toLowerCase().split(/\s+/).filter(Boolean);
  const found = rows.filter(
    (r) =>
      !r.deleted &&
      (q.modelId === undefined || r.modelId === q.modelId) &&
      (q.sampler === undefined || r.sampler === q.sampler) &&
      (q.mode === undefined || r.mode === q.mode) &&
      (q.width === undefined || r.width === q.width) &&
      (q.favorite === undefined || r.favorite === q.favorite) &&
      (q.minRating === undefined || r.rating >= q.minRating) &&
      (q.from === undefined || r.createdAt >= q.from) &&
      (q.to === undefined || r.createdAt <= q.to) &&
      (q.tag === undefined || r.tags.includes(q.tag.toLowerCase())) &&
      (q.lora === undefined || r.loras.includes(q.lora.toLowerCase())) &&
      terms.every((t) => r.words.some((w) => w.startsWith(t))),
  );
  const cmp = (a: number | string, b: number | string) => (a < b ? -1 : a > b ? 1 : 0);
  found.sort((a, b) =>
    q.sort === 'oldest'
      ? cmp(a.createdAt, b.createdAt) || cmp(a.id, b.id)
      : (q.sort === 'rating' ? cmp(b.rating, a.rating) : 0) ||
        cmp(b.createdAt, a.createdAt) ||
        cmp(b.id, a.id),
  );
  return found.map((r) => r.id);
}
