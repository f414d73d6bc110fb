/**
 * LoRAs and embeddings for the command line (`npm run generate`): the same folders and the same
 * resolution as the studio (defaults: the folders of the studio's settings in the data folder),
 * plus `--lora FILE:WEIGHT`, appended to the prompt as if it had been tagged there.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Settings, formatLoraTag } from '../../shared';
import { UsageError } from '../cli-run';
import { NetworkHashes } from './hashes';
import { type ResolvedNetworks, resolveNetworks } from './resolve';
import { FolderScanner, LORA_EXTENSIONS, networkFolders } from './scan';

export interface CliNetworkOptions {
  prompt: string;
  negativePrompt: string;
  dataDir: string;
  loraDir?: string | undefined;
  embeddingsDir?: string | undefined;
  /** Each `--lora` value: FILE or NAME, optionally `:WEIGHT` (default 1). */
  loras: readonly string[];
}

/** The studio's settings file as it is (no repair, no rename): only its folders are read. */
function studioFolders(dataDir: string): Pick<Settings, 'loraDir' | 'embeddingsDir'> {
  try {
    const parsed = Settings.safeParse(
      JSON.parse(readFileSync(path.join(dataDir, 'settings.json'), 'utf8')),
    );
    if (parsed.success) return parsed.data;
  } catch {
    // no settings yet: the defaults
  }
  return { loraDir: null, embeddingsDir: null };
}

/** `FILE:WEIGHT` -> file and weight; the weight is what follows the last colon, when a number. */
export function parseLoraArg(value: string): { target: string; weight: number } {
  const m = /^(.+):([+-]?(?:\d+\.?\d*|\.\d+))$/.exec(value.trim());
  const target = (m ? m[1] : value).trim();
  const weight = m ? Number(m[2]) : 1;
  if (!target)
    throw new UsageError(`--lora needs a file or a name, as FILE:WEIGHT, not "${value}".`);
  return { target, weight };
}

/**
 * The prompt with the `--lora` tags appended, and what it resolves to. Usage mistakes
 * (a `--lora` file of the wrong kind) are UsageErrors; a tag naming a LoRA that is not in the
 * folder is the resolver's StudioError sentence.
 */
export async function cliNetworks(
  options: CliNetworkOptions,
): Promise<{ prompt: string; resolved: ResolvedNetworks; loraDir: string; embeddingsDir: string }> {
  const studio = studioFolders(options.dataDir);
  const folders = networkFolders(
    {
      loraDir: options.loraDir ? path.resolve(options.loraDir) : studio.loraDir,
      embeddingsDir: options.embeddingsDir
        ? path.resolve(options.embeddingsDir)
        : studio.embeddingsDir,
    },
    options.dataDir,
  );
  for (const [flag, dir] of [
    ['lora-dir', options.loraDir],
    ['embeddings-dir', options.embeddingsDir],
  ] as const) {
    if (dir === undefined) continue;
    const st = statSync(path.resolve(dir), { throwIfNoEntry: false });
    if (!st?.isDirectory())
      throw new UsageError(`--${flag}: ${dir} ${st ? 'is not a folder' : 'does not exist'}.`);
  }
  const extraFiles = new Map<string, string>();
  let prompt = options.prompt;
  for (const value of options.loras) {
    const { target, weight } = parseLoraArg(value);
    const st = statSync(path.resolve(target), { throwIfNoEntry: false });
    let name = target;
    if (st?.isFile()) {
      const ext = path.extname(target).toLowerCase();
      if (!LORA_EXTENSIONS.includes(ext))
        throw new UsageError(
          `--lora: ${target} is not a LoRA file (${LORA_EXTENSIONS.join(', ')}).`,
        );
      name = path.basename(target, path.extname(target));
      extraFiles.set(name, path.resolve(target));
    } else if (/[\\/]/.test(target) && /\.(safetensors|pt|ckpt)$/i.test(target)) {
      throw new UsageError(`--lora: ${target} does not exist.`);
    }
    prompt = `${prompt}${prompt && !/\s$/.test(prompt) ? ' ' : ''}${formatLoraTag(name, weight)}`;
  }
  // The LoRA folder is only read when a tag needs it; a missing folder then reads as empty and
  // the resolver names the LoRA it could not find there.
  const hasTags = /<\w+:[^>]+>/.test(`${prompt}\n${options.negativePrompt}`);
  const scanner = new FolderScanner();
  const catalog = {
    ...folders,
    loras: hasTags ? await scanner.scan('lora', folders.loraDir, []) : [],
    embeddings: await scanner.scan('embedding', folders.embeddingsDir, []),
  };
  const hashes = new NetworkHashes(options.dataDir);
  const resolved = await resolveNetworks(
    { prompt, negativePrompt: options.negativePrompt },
    catalog,
    (kind, file) => hashes.hash(kind, file),
    extraFiles,
  );
  return { prompt, resolved, ...folders };
}
