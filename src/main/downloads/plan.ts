/**
 * What a download will fetch, decided before any byte is written: a repo resolved to its commit
 * and narrowed to the files an ONNX model folder needs, or one file's URL. Every file name is
 * checked (safe-path.ts) here, so a hostile name refuses the whole download up front.
 */
import path from 'node:path';
import { DownloadError } from './errors';
import { type HubClient, parseModelReference } from './hub';
import { safeJoin } from './safe-path';

export interface PlannedFile {
  path: string;
  url: string;
  size: number | null;
  sha256: string | null;
  gitOid: string | null;
}

export interface DownloadPlan {
  kind: 'repo' | 'url';
  source: string;
  revision: string | null;
  sha: string | null;
  name: string;
  license: string | null;
  files: PlannedFile[];
  /** Bytes to fetch, when every size is known. */
  bytesTotal: number | null;
}

/** Weights for other frameworks, which an ONNX folder does not load. */
const otherFrameworkWeights =
  /\.(safetensors|bin|ckpt|pt|pth|msgpack|h5|gguf|tflite|mlmodel|mlpackage)$/i;
/**
 * Git and Hub bookkeeping, pictures of the card, the safety checker and its feature extractor
 * (the engine does not run them), and OpenVINO's graphs.
 */
const notModelFiles =
  /(^|\/)\.git|\.(png|jpe?g|gif|webp|mp4)$|^(safety_checker|feature_extractor)\/|(^|\/)openvino_/i;

/** Files of a Hub repo that make an ONNX model folder: everything but other frameworks' weights. */
export function modelFilesOf(paths: string[]): string[] {
  return paths.filter((p) => !otherFrameworkWeights.test(p) && !notModelFiles.test(p));
}

/** Resolves what `reference` (repo id, Hub page, or file URL) will download. */
export async function planDownload(
  hub: HubClient,
  reference: string,
  options: { revision?: string | null; signal?: AbortSignal } = {},
): Promise<DownloadPlan> {
  const ref = parseModelReference(reference, hub.config.endpoint);
  if (ref.kind === 'url') {
    const hubFile = await hubFileOf(hub, ref.url, options.signal);
    if (hubFile) return hubFile;
    const name = fileNameOf(ref.url);
    return {
      kind: 'url',
      source: ref.url,
      revision: null,
      sha: null,
      name,
      license: null,
      files: [{ path: name, url: ref.url, size: null, sha256: null, gitOid: null }],
      bytesTotal: null,
    };
  }
  const revision = options.revision ?? ref.revision ?? 'main';
  const info = await hub.revision(ref.repo, revision, options.signal);
  const all = await hub.files(ref.repo, info.sha, options.signal);
  // Every name is checked, kept or not: a repo that names a file outside itself is not trusted.
  for (const f of all) safeJoin('/model', f.path);
  const wanted = new Set(modelFilesOf(all.map((f) => f.path)));
  const files = all.filter((f) => wanted.has(f.path));
  if (!files.some((f) => f.path.endsWith('.onnx')))
    throw new DownloadError(
      'bad-input',
      all.some((f) => /\.(safetensors|ckpt)$/i.test(f.path))
        ? `${ref.repo} holds no ONNX model; download its checkpoint file by its URL instead, and it is converted.`
        : `${ref.repo} holds no ONNX model, so there is nothing the studio can load from it.`,
    );
  return {
    kind: 'repo',
    source: ref.repo,
    revision,
    sha: info.sha,
    name: ref.repo.replace('/', '--'),
    license: info.license,
    files: files.map((f) => ({
      path: f.path,
      url: hub.fileUrl(ref.repo, info.sha, f.path),
      size: f.size,
      sha256: f.sha256,
      gitOid: f.gitOid,
    })),
    bytesTotal: files.reduce((n, f) => n + f.size, 0),
  };
}

/**
 * A file URL on the Hub ({endpoint}/{repo}/resolve/{rev}/{path}) planned like a repo file:
 * pinned to the commit, with the size and sha256 the Hub publishes. Null for other URLs.
 */
async function hubFileOf(
  hub: HubClient,
  url: string,
  signal?: AbortSignal,
): Promise<DownloadPlan | null> {
  const parsed = new URL(url);
  if (parsed.origin !== new URL(hub.config.endpoint).origin) return null;
  const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(parsed.pathname);
  if (!m) return null;
  const [repo, revision, file] = [
    m[1],
    decodeURIComponent(m[2]),
    m[3].split('/').map(decodeURIComponent).join('/'),
  ];
  const info = await hub.revision(repo, revision, signal);
  const entry = (await hub.files(repo, info.sha, signal)).find((f) => f.path === file);
  if (!entry) throw new DownloadError('not-found', `${repo} has no file ${file} at that revision.`);
  const name = fileNameOf(url);
  return {
    kind: 'url',
    source: `${repo}/${file}`,
    revision,
    sha: info.sha,
    name,
    license: info.license,
    files: [
      {
        path: name,
        url: hub.fileUrl(repo, info.sha, file),
        size: entry.size,
        sha256: entry.sha256,
        gitOid: entry.gitOid,
      },
    ],
    bytesTotal: entry.size,
  };
}

/** The last path segment of a URL as a safe file name. */
export function fileNameOf(url: string): string {
  let last = '';
  try {
    last = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? '');
  } catch {
    // a malformed %-escape: no usable name
  }
  const name = path.posix.basename(last);
  try {
    safeJoin('/files', name);
  } catch {
    throw new DownloadError('bad-input', `${url} does not end in a usable file name.`);
  }
  return name;
}
