// `npm run models -- list | download <repo-id|URL> [--revision REV] | remove NAME | catalogue`:
// the model manager for scripts and servers, over the same data folder, queue and checks as the
// studio (src/main/downloads). The Hub endpoint comes from HF_ENDPOINT and the token from
// HF_TOKEN, else huggingface_hub's token file (`hf auth login`; downloads/token.ts). A download
// stopped by Ctrl+C (or a crash) resumes when the same command runs again.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type ModelEntry, StudioError, modelCatalogue } from '../shared';
import { UsageError, runCli } from './cli-run';
import { libraryDownloads } from './downloads/host';
import { ModelTrash } from './downloads/model-trash';
import { type DownloadProgress, type DownloadManager, formatBytes } from './downloads/manager';
import { EventHub } from './events';
import { Library } from './library/service';
import { resourcesDirFrom } from './models/checkpoint-cache';
import { CheckpointImports } from './models/imports';
import { defaultDataDir } from './paths';
import type { HostContext } from './services';
import { SettingsStore } from './settings-store';

const usage = `Usage: npm run models -- COMMAND [options]

  list                          the models in the library, and unfinished downloads
  catalogue                     ready ONNX models to download (repo ids)
  download REPO|URL             a Hub repo (owner/name or its page) or one file's URL;
    --revision REV              a branch, tag or commit of the repo (default main)
  remove NAME                   a model by name or id; a downloaded folder goes to the trash

  --data-dir DIR                the data folder (default: the studio's, or LATENT_STUDIO_DATA_DIR)
  --quiet                       no progress on stderr

Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN for gated or private repos
(else the token of \`hf auth login\`: HF_TOKEN_PATH, HF_HOME/token or ~/.cache/huggingface/token,
unless HF_HUB_DISABLE_IMPLICIT_TOKEN is set), HTTPS_PROXY / HTTP_PROXY / NO_PROXY.`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      revision: { type: 'string' },
      'data-dir': { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    console.log(usage);
    return command || values.help ? 0 : 2;
  }
  if (command === 'catalogue') {
    for (const e of modelCatalogue)
      console.log(
        `${e.repo}\t${e.title}\t${e.family}\t~${formatBytes(e.approxBytes)}\t${e.license}${e.verified === 'unverified' ? '\t(unverified)' : ''}`,
      );
    return 0;
  }
  if (!['list', 'download', 'remove'].includes(command))
    throw new UsageError(`Unknown command "${command}"; use list, catalogue, download or remove.`);
  if (command !== 'list' && rest.length !== 1)
    throw new UsageError(
      `${command} takes one ${command === 'download' ? 'repo id or URL' : 'model name'}.`,
    );
  if (values.revision && command !== 'download')
    throw new UsageError('--revision applies to download.');

  const dataDir = path.resolve(
    values['data-dir'] ?? process.env.LATENT_STUDIO_DATA_DIR ?? defaultDataDir(),
  );
  const here = path.dirname(fileURLToPath(import.meta.url));
  const worker = path.join(here, 'engine-worker.mjs');
  const context: HostContext = {
    dataDir,
    resourcesDir: resourcesDirFrom(here),
    workerPath: fs.existsSync(worker) ? worker : null,
    sqliteNativeBinding: null,
    desktop: null,
    events: new EventHub(),
    settings: new SettingsStore(dataDir),
    updateEngineStatus: () => {},
    log: () => {},
  };
  const library = new Library(context, { backupIntervalMs: 0 });
  await library.ready;
  const imports = new CheckpointImports(context, (folder) => library.addModel(folder));
  const downloads = libraryDownloads(context, library, imports, {
    onProgress: values.quiet
      ? undefined
      : (p) => process.stderr.write(`\r${progressLine(p)}      `),
    onKeptFile: (file, why) => console.error(`${path.basename(file)} was saved as ${file}; ${why}`),
  });
  try {
    if (command === 'list') return list(library, downloads);
    if (command === 'remove') return await remove(context, library, downloads, rest[0]);
    return await download(downloads, rest[0], values.revision ?? null, values.quiet);
  } catch (err) {
    // The download's own sentences are for a person as they are.
    if (!(err instanceof StudioError)) throw err;
    console.error(`latent-studio models: ${err.message}`);
    return 1;
  } finally {
    await downloads.close();
    library.close();
  }
}

function list(library: Library, downloads: DownloadManager): number {
  const sources = new Map<string, string>();
  for (const d of downloads.list())
    if (d.state === 'done' && d.model_id)
      sources.set(d.model_id, d.sha ? `${d.source}@${d.sha}` : d.source);
  for (const m of library.models.listModels())
    console.log(
      [
        m.name,
        m.family ?? '?',
        m.status,
        m.builtIn ? 'built-in' : (sources.get(m.id) ?? 'added folder'),
        m.path,
      ].join('\t'),
    );
  for (const d of downloads.list().filter((x) => !['done', 'cancelled'].includes(x.state)))
    console.log(
      [
        `(download ${d.state})`,
        d.source,
        d.sha ?? '',
        d.bytes_total !== null ? formatBytes(d.bytes_total) : '',
        d.error_message ?? '',
      ].join('\t'),
    );
  return 0;
}

async function download(
  downloads: DownloadManager,
  reference: string,
  revision: string | null,
  quiet: boolean,
): Promise<number> {
  downloads.start();
  const row = await downloads.add(reference, { revision });
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    downloads.pause(row.id);
  });
  const done = await downloads.wait(row.id);
  if (!quiet) process.stderr.write('\n');
  if (done.state === 'done') {
    console.log(done.result_path);
    return 0;
  }
  if (interrupted || done.state === 'paused') {
    console.error(`Paused; run the same command again to resume ${done.source}.`);
    return 130;
  }
  console.error(
    `latent-studio models: ${done.error_message ?? `the download ended ${done.state}.`}`,
  );
  return 1;
}

async function remove(
  context: HostContext,
  library: Library,
  downloads: DownloadManager,
  name: string,
): Promise<number> {
  const models = library.models.listModels();
  const matches = models.filter((m: ModelEntry) => m.id === name || m.name === name);
  if (matches.length === 0)
    throw new UsageError(`No model is called "${name}"; run list to see their names.`);
  if (matches.length > 1)
    throw new UsageError(
      `${matches.length} models are called "${name}"; remove one by its id (${matches.map((m) => m.id).join(', ')}).`,
    );
  const model = matches[0];
  const downloaded = new Set(
    downloads
      .list()
      .filter((d) => d.model_id === model.id)
      .map((d) => d.id),
  );
  // Only a folder a download put in the data folder's models/ moves (to the app's trash, which
  // empties itself after 30 days); an added folder stays where it is.
  const { trashedTo } = await new ModelTrash(context, library).trash(model.id);
  for (const id of downloaded) downloads.store.remove(id);
  console.log(
    trashedTo
      ? `removed ${model.name} and moved ${model.path} to ${path.join(context.dataDir, 'trash')}`
      : `removed ${model.name} (its folder ${model.path} was kept)`,
  );
  return 0;
}

function progressLine(p: DownloadProgress): string {
  const total = p.bytesTotal !== null ? ` of ${formatBytes(p.bytesTotal)}` : '';
  const rate = p.bytesPerSecond > 0 ? `, ${formatBytes(p.bytesPerSecond)}/s` : '';
  const eta = p.etaSeconds !== null ? `, ${p.etaSeconds} s left` : '';
  return `${p.name}: ${formatBytes(p.bytesDone)}${total} (${p.filesDone}/${p.filesTotal} files${rate}${eta}) ${p.state}`;
}

runCli('latent-studio models', main);
