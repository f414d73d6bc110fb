/**
 * "An update exists": a model a download brought from the Hub records its repo and commit in
 * its folder's .download.json; its repo's main is asked for on demand, otherwise at most once a
 * day per repo (answers cached in the data folder's model-updates.json). An update downloads
 * main into a folder beside the model, verified like any download; only then does the model
 * switch to it (replaceModel), and its old folder goes to the trash. A new folder that does not
 * load changes nothing: the model stays on its old folder and the new one goes to the trash.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type ModelUpdate, StudioError } from '../../shared';
import type { Library } from '../library/service';
import { newToken } from '../library/ids';
import { inspectModel, upsertModel } from '../models/models';
import type { HostContext } from '../services';
import { DownloadError, isDownloadError } from './errors';
import { type HubClient, isRepoId } from './hub';
import type { DownloadManager } from './manager';
import { isOwnedModelFolder } from './model-trash';
import type { DownloadRow } from './store';

const day = 24 * 3600_000;

/** A repo's main as last seen, by repo id. */
interface CacheEntry {
  latestSha: string | null;
  checkedAt: number;
  error: string | null;
}

/** Where a downloaded model came from: its folder's .download.json, when it names a Hub repo. */
export function downloadSourceOf(folder: string): { source: string; sha: string } | null {
  try {
    const doc = JSON.parse(fs.readFileSync(path.join(folder, '.download.json'), 'utf8')) as {
      source?: unknown;
      sha?: unknown;
    };
    if (
      typeof doc.source === 'string' &&
      isRepoId(doc.source) &&
      doc.source.includes('/') &&
      typeof doc.sha === 'string' &&
      /^[0-9a-f]{40}$/.test(doc.sha)
    )
      return { source: doc.source, sha: doc.sha };
  } catch {
    // not downloaded from the Hub, or a file a person edited: nothing to check
  }
  return null;
}

export class ModelUpdates {
  readonly cacheFile: string;

  constructor(
    private readonly context: Pick<
      HostContext,
      'dataDir' | 'desktop' | 'events' | 'log' | 'workerPath'
    >,
    private readonly library: Library,
    private readonly manager: DownloadManager,
    private readonly hub: () => HubClient,
    private readonly now: () => number = Date.now,
  ) {
    this.cacheFile = path.join(context.dataDir, 'model-updates.json');
  }

  /** The downloaded models and what their repos' main is; asks the Hub when `force` or a day passed. */
  async check(force: boolean): Promise<ModelUpdate[]> {
    const models = this.#sources();
    const cache = this.#readCache();
    const stale = [...new Set(models.map((m) => m.source))].filter(
      (repo) => force || !cache[repo] || this.now() - cache[repo].checkedAt >= day,
    );
    if (stale.length) {
      const hub = this.hub();
      for (const repo of stale) {
        try {
          const info = await hub.revision(repo, 'main');
          cache[repo] = { latestSha: info.sha, checkedAt: this.now(), error: null };
        } catch (err) {
          const message = isDownloadError(err) ? err.message : (err as Error).message;
          cache[repo] = {
            latestSha: cache[repo]?.latestSha ?? null,
            checkedAt: this.now(),
            error: message,
          };
        }
      }
      this.#writeCache(cache);
    }
    return models.map((m) => {
      const c = cache[m.source];
      const latestSha = c?.latestSha ?? null;
      return {
        ...m,
        latestSha,
        checkedAt: c?.checkedAt ?? null,
        updateAvailable: latestSha !== null && latestSha !== m.sha,
        error: c?.error ?? null,
      };
    });
  }

  /** Queues the download of the model's repo at main, to replace the model once verified. */
  async update(modelId: string): Promise<DownloadRow> {
    const model = this.#sources().find((m) => m.modelId === modelId);
    if (!model)
      throw new StudioError(
        'invalid-argument',
        'That model was not downloaded from the Hub, so there is nothing to update it from.',
      );
    const latest = await this.hub().revision(model.source, 'main');
    if (latest.sha === model.sha)
      throw new StudioError('invalid-argument', `${model.source} has no newer commit on main.`);
    // Pinned to the commit just seen, so what was checked is what is fetched.
    return this.manager.add(model.source, { revision: latest.sha, replaces: modelId });
  }

  /**
   * The switch: model `modelId` now points at `folder` (inspected first), and the old folder goes
   * to the trash when it is one a download made. A `folder` that does not load changes nothing:
   * it goes to the trash instead, the model keeps its old folder, and this throws a DownloadError
   * 'unusable' whose one sentence says so (the download's error).
   */
  async replace(modelId: string, folder: string): Promise<string> {
    const db = this.library.database.db;
    const old = db.prepare('SELECT path, name FROM models WHERE id = ?').get(modelId) as
      { path: string; name: string } | undefined;
    if (!old) return (await this.library.addModel(folder)).id;
    let inspected: Awaited<ReturnType<typeof inspectModel>>;
    try {
      inspected = await inspectModel(folder, { workerPath: this.context.workerPath });
    } catch (err) {
      const commit = downloadSourceOf(folder)?.sha.slice(0, 7);
      // Left in models/, the folder would sit there unregistered; a rescan would list it broken.
      await this.#toTrash(folder);
      const why = (err as Error).message.replace(/\.$/, '');
      this.context.log(`model ${modelId}: the update in ${folder} does not load: ${why}`);
      throw new DownloadError(
        'unusable',
        `The update of ${old.name}${commit ? ` (commit ${commit})` : ''} does not load, so the model stays as it was and the downloaded folder went to the trash: ${why}.`,
      );
    }
    this.library.database.transaction(() => {
      db.prepare('UPDATE models SET path = ? WHERE id = ?').run(folder, modelId);
      upsertModel(db, folder, inspected, { builtIn: false, now: this.now() });
    });
    this.context.events.emit('modelsChanged', this.library.models.listModels());
    if (old.path !== folder) await this.#toTrash(old.path);
    this.context.log(`model ${modelId} updated to ${folder}`);
    return modelId;
  }

  /**
   * Moves `folder` to the app's trash (then the OS trash on desktop) when it is one a download
   * made in models/; any other folder stays where it is.
   */
  async #toTrash(folder: string): Promise<void> {
    const modelsDir = path.join(this.context.dataDir, 'models');
    if (!isOwnedModelFolder(modelsDir, folder)) return;
    const to = path.join(
      this.context.dataDir,
      'trash',
      `models-${newToken()}`,
      path.basename(folder),
    );
    await fsp.mkdir(path.dirname(to), { recursive: true });
    await fsp.rename(folder, to);
    if (this.context.desktop)
      await this.context.desktop
        .trash(to)
        .catch((err: unknown) =>
          this.context.log(`models: the OS trash refused ${to}: ${(err as Error).message}`),
        );
  }

  #sources(): Array<{ modelId: string; source: string; sha: string }> {
    const out: Array<{ modelId: string; source: string; sha: string }> = [];
    for (const m of this.library.models.listModels()) {
      if (m.builtIn || m.status !== 'ok') continue;
      const src = downloadSourceOf(m.path);
      if (src) out.push({ modelId: m.id, ...src });
    }
    return out;
  }

  #readCache(): Record<string, CacheEntry> {
    try {
      const doc = JSON.parse(fs.readFileSync(this.cacheFile, 'utf8')) as unknown;
      return doc && typeof doc === 'object' ? (doc as Record<string, CacheEntry>) : {};
    } catch {
      return {};
    }
  }

  #writeCache(cache: Record<string, CacheEntry>): void {
    const tmp = `${this.cacheFile}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(cache, null, 2));
    fs.renameSync(tmp, this.cacheFile);
  }
}
