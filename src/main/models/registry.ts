/**
 * The model registry: model folders the studio knows (the built-in ones under resources/models,
 * registered at start, and those a person added), their token counts, and resolving a model id
 * (or folder) for the job queue.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type ModelEntry, type StudioService, StudioError } from '../../shared';
import type { LibraryDatabase } from '../library/database';
import { type Db, immediate } from '../library/db';
import { LibraryError } from '../library/errors';
import type { HostContext } from '../services';
import { type ModelRow, TokenizerCache, inspectModel, toModelEntry, upsertModel } from './models';

export class ModelRegistry {
  #tokenizers = new TokenizerCache();
  /** This slice of the contract (the type check holds it to the contract's schemas). */
  readonly methods;

  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
  ) {
    const guard = database.guard.bind(database);
    this.methods = {
      listModels: () => guard(() => this.listModels()),
      addModel: (input) => guard(() => this.addModel(input.path)),
      removeModel: (input) => guard(() => this.removeModel(input.id)),
      countTokens: (input) => guard(() => this.countTokens(input.modelId, input.prompt)),
    } satisfies Pick<StudioService, 'listModels' | 'addModel' | 'removeModel' | 'countTokens'>;
    // Model ids of the replaced database may name other folders now.
    database.on('reopened', () => {
      this.#tokenizers = new TokenizerCache();
    });
  }

  get #db(): Db {
    return this.database.db;
  }

  modelRowFor(idOrPath: string): ModelRow | undefined {
    const byId = this.#db.prepare('SELECT * FROM models WHERE id = ?').get(idOrPath) as
      ModelRow | undefined;
    if (byId) return byId;
    if (!path.isAbsolute(idOrPath)) return undefined;
    return this.#db.prepare('SELECT * FROM models WHERE path = ?').get(path.resolve(idOrPath)) as
      ModelRow | undefined;
  }

  /** A registered model by id (or by its folder path); StudioError 'not-found' otherwise. */
  resolveModel(idOrPath: string): ModelEntry & { path: string } {
    const row = this.modelRowFor(idOrPath);
    if (!row)
      throw new LibraryError(
        'unknown-model',
        'not-found',
        'That model is not in the library; add its folder under Models first.',
      );
    const entry = toModelEntry(row, 0);
    if (entry.status === 'missing')
      throw new LibraryError(
        'model-folder-gone',
        'not-found',
        `The model folder ${row.path} is not there any more.`,
      );
    return entry;
  }

  listModels(): ModelEntry[] {
    const rows = this.#db
      .prepare('SELECT * FROM models ORDER BY built_in DESC, name')
      .all() as ModelRow[];
    const bytes = new Map(
      (
        this.#db
          .prepare(
            `SELECT model_id AS id, sum(bytes) AS n FROM images
             WHERE deleted_at IS NULL AND model_id IS NOT NULL GROUP BY model_id`,
          )
          .all() as Array<{ id: string; n: number }>
      ).map((r) => [r.id, r.n]),
    );
    return rows.map((r) => toModelEntry(r, bytes.get(r.id) ?? 0));
  }

  async addModel(folder: string): Promise<ModelEntry> {
    this.database.assertWritable();
    const dir = path.resolve(folder);
    const inspected = await inspectModel(dir, { workerPath: this.context.workerPath });
    this.database.assertWritable();
    const id = immediate(this.#db, () =>
      upsertModel(this.#db, dir, inspected, { builtIn: false, now: Date.now() }),
    );
    this.#tokenizers.forget(id);
    const models = this.listModels();
    this.context.events.emit('modelsChanged', models);
    return models.find((m) => m.id === id)!;
  }

  removeModel(id: string): null {
    this.database.assertWritable();
    const row = this.#db.prepare('SELECT built_in FROM models WHERE id = ?').get(id) as
      { built_in: number } | undefined;
    if (!row) throw new StudioError('not-found', 'That model is not in the library.');
    if (row.built_in === 1)
      throw new StudioError(
        'forbidden',
        'The built-in model comes with the app and cannot be removed.',
      );
    immediate(this.#db, () => this.#db.prepare('DELETE FROM models WHERE id = ?').run(id));
    this.#tokenizers.forget(id);
    this.context.events.emit('modelsChanged', this.listModels());
    return null;
  }

  async countTokens(modelId: string, prompt: string): Promise<{ total: number; chunks: number[] }> {
    const model = this.resolveModel(modelId);
    const tokenizer = await this.#tokenizers.get(model.id, model.path);
    const chunks = tokenizer.chunkTokenCounts(prompt);
    return { total: chunks.reduce((a, b) => a + b, 0), chunks };
  }

  async registerBuiltInModels(): Promise<void> {
    const root = this.context.resourcesDir ? path.join(this.context.resourcesDir, 'models') : null;
    const dirs: string[] = [];
    if (root) {
      for (const e of await fsp.readdir(root, { withFileTypes: true }).catch(() => []))
        if (e.isDirectory() && !e.name.startsWith('.')) dirs.push(path.join(root, e.name));
    }
    const known = this.#db.prepare('SELECT id, path, status, built_in FROM models').all() as Array<
      Pick<ModelRow, 'id' | 'path' | 'status' | 'built_in'>
    >;
    const signatureOf = this.#db.prepare('SELECT value FROM meta WHERE key = ?').pluck();
    const setSignature = this.#db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
    );
    let changed = false;
    for (const dir of dirs) {
      const row = known.find((k) => k.path === dir);
      // A built-in folder is inspected again when its files changed (an update of the app that
      // ships new weights or a new model card): their names, sizes and times are its signature,
      // so an unchanged start costs a few stat calls, not reading the weights.
      const key = `builtin-model:${dir}`;
      const signature = await folderSignature(dir);
      if (row && row.built_in === 1 && row.status === 'ok' && signatureOf.get(key) === signature)
        continue;
      let inspected = null;
      let error: string | null = null;
      try {
        inspected = await inspectModel(dir, { workerPath: this.context.workerPath });
      } catch (err) {
        error = (err as Error).message;
      }
      immediate(this.#db, () => {
        upsertModel(this.#db, dir, inspected, { builtIn: true, error, now: Date.now() });
        setSignature.run(key, signature);
      });
      changed = true;
    }
    // Built-in models of an earlier install that are no longer shipped.
    const stale = known.filter((k) => k.built_in === 1 && !dirs.includes(k.path));
    if (stale.length) {
      immediate(this.#db, () => {
        const del = this.#db.prepare('DELETE FROM models WHERE id = ?');
        const forget = this.#db.prepare('DELETE FROM meta WHERE key = ?');
        for (const s of stale) {
          del.run(s.id);
          forget.run(`builtin-model:${s.path}`);
        }
      });
      changed = true;
    }
    if (changed) this.context.events.emit('modelsChanged', this.listModels());
  }
}

/** Names, sizes and modification times of a folder's files (two levels): cheap change detection. */
async function folderSignature(dir: string): Promise<string> {
  const parts: string[] = [];
  const walk = async (d: string, depth: number): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (depth > 0) await walk(p, depth - 1);
        continue;
      }
      const st = await fsp.stat(p).catch(() => null);
      if (st) parts.push(`${path.relative(dir, p)}:${st.size}:${Math.round(st.mtimeMs)}`);
    }
  };
  await walk(dir, 1);
  return parts.join('|');
}
