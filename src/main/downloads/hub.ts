/**
 * A client of the Hugging Face Hub's HTTP API, the parts a model download needs: a revision
 * resolved to its commit sha (GET /api/models/{repo}/revision/{rev}), the file tree at that sha
 * with sizes and LFS sha256 (GET /api/models/{repo}/tree/{sha}?recursive=true, paged by Link
 * headers), search (GET /api/models?search=&filter=), and file URLs pinned to the sha
 * ({endpoint}/{repo}/resolve/{sha}/{path}, which redirects LFS files to a CDN host). The shapes
 * are those huggingface_hub's HfApi parses (ModelInfo, RepoFile with lfs {oid, size,
 * pointerSize}); tests/fixtures/hub/ records examples.
 */
import { z } from 'zod';
import { DownloadError } from './errors';
import { HttpClient, type HttpOptions } from './http';
import { readHubTokenFile } from './token';

/** Where the Hub is and who asks it: HF_ENDPOINT and HF_TOKEN, as huggingface_hub reads them. */
export interface HubConfig {
  /** Without a trailing slash, e.g. https://huggingface.co. */
  endpoint: string;
  token: string | null;
}

export const defaultEndpoint = 'https://huggingface.co';

/**
 * The Hub config from the environment. The token: HF_TOKEN, else the one from Settings, else
 * huggingface_hub's token file (token.ts).
 */
export function hubConfigFrom(
  env: NodeJS.ProcessEnv = process.env,
  settingsToken: string | null = null,
): HubConfig {
  const endpoint = (env.HF_ENDPOINT?.trim() || defaultEndpoint).replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(endpoint);
  } catch {
    throw new DownloadError('bad-input', `HF_ENDPOINT is not a web address: "${endpoint}".`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')
    throw new DownloadError(
      'bad-input',
      `HF_ENDPOINT must be an http(s) address, not "${endpoint}".`,
    );
  const token =
    env.HF_TOKEN?.trim() || settingsToken?.trim() || readHubTokenFile(env)?.token || null;
  return { endpoint, token };
}

/**
 * A Hub repo id: "name" or "owner/name" of letters, digits, '-', '_' and '.', at most 96 each,
 * not starting or ending with '-' or '.', without '--' or '..' (the Hub's own rule, as
 * huggingface_hub's validate_repo_id checks it).
 */
export function isRepoId(text: string): boolean {
  const parts = text.split('/');
  if (parts.length > 2) return false;
  return parts.every(
    (p) =>
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/.test(p) &&
      !/[-.]$/.test(p) &&
      !p.includes('--') &&
      !p.includes('..'),
  );
}

/** What a person pasted: a repo (id or its Hub page) or one file's URL. */
export type ModelReference =
  { kind: 'repo'; repo: string; revision: string | null } | { kind: 'url'; url: string };

/**
 * Reads `owner/name`, `https://huggingface.co/owner/name[/tree/REV]` (on the configured
 * endpoint) or any other http(s) URL (a single file). Throws DownloadError 'bad-input' otherwise.
 */
export function parseModelReference(text: string, endpoint = defaultEndpoint): ModelReference {
  const input = text.trim();
  if (isRepoId(input) && input.includes('/')) return { kind: 'repo', repo: input, revision: null };
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new DownloadError(
      'bad-input',
      `"${input.slice(0, 100)}" is neither a Hub repo id (owner/name) nor a web address.`,
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new DownloadError(
      'bad-input',
      `Only http(s) addresses can be downloaded, not ${url.protocol}.`,
    );
  const hubOrigins = new Set([new URL(endpoint).origin, 'https://huggingface.co', 'https://hf.co']);
  if (hubOrigins.has(url.origin)) {
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (parts.length === 2 && isRepoId(`${parts[0]}/${parts[1]}`))
      return { kind: 'repo', repo: `${parts[0]}/${parts[1]}`, revision: null };
    if (parts.length === 4 && parts[2] === 'tree' && isRepoId(`${parts[0]}/${parts[1]}`))
      return { kind: 'repo', repo: `${parts[0]}/${parts[1]}`, revision: parts[3] };
    // A file page (/blob/) is its download (/resolve/).
    if (parts.length > 4 && parts[2] === 'blob') {
      url.pathname = url.pathname.replace('/blob/', '/resolve/');
      return { kind: 'url', url: url.href };
    }
  }
  return { kind: 'url', url: url.href };
}

const RevisionDocument = z.object({
  id: z.string(),
  sha: z.string().regex(/^[0-9a-f]{40}$/),
  private: z.boolean().optional(),
  gated: z.union([z.literal(false), z.string()]).optional(),
  disabled: z.boolean().optional(),
  lastModified: z.string().optional(),
  tags: z.array(z.string()).optional(),
  pipeline_tag: z.string().optional(),
  library_name: z.string().optional(),
  cardData: z.object({ license: z.unknown().optional() }).passthrough().nullish(),
});

const TreeEntry = z.object({
  type: z.enum(['file', 'directory']),
  path: z.string(),
  oid: z.string().optional(),
  size: z.number().int().nonnegative().optional(),
  lfs: z
    .object({
      oid: z.string().regex(/^[0-9a-f]{64}$/),
      size: z.number().int().nonnegative(),
      pointerSize: z.number().optional(),
    })
    .nullish(),
});

const SearchEntry = z.object({
  id: z.string(),
  downloads: z.number().optional(),
  likes: z.number().optional(),
  tags: z.array(z.string()).optional(),
  pipeline_tag: z.string().optional(),
  lastModified: z.string().optional(),
  siblings: z.array(z.object({ rfilename: z.string() }).passthrough()).optional(),
});

/** A revision of a repo, resolved to the commit every file of the download is pinned to. */
export interface RepoRevision {
  repo: string;
  /** The 40-hex commit sha. */
  sha: string;
  private: boolean;
  /** false, or how access is granted ('auto', 'manual'). */
  gated: false | string;
  license: string | null;
  tags: string[];
  lastModified: string | null;
}

/** One file of a repo at a commit, with what verifies it. */
export interface RepoFile {
  /** Its path in the repo, as the Hub sent it (untrusted: see safe-path.ts). */
  path: string;
  size: number;
  /** The LFS object's sha256 (hex) for LFS files, null for files kept in git itself. */
  sha256: string | null;
  /** The git blob id (sha1 of "blob SIZE\0" + content) of a file kept in git, else null. */
  gitOid: string | null;
}

export interface HubSearchResult {
  id: string;
  downloads: number;
  likes: number;
  tags: string[];
  pipelineTag: string | null;
  lastModified: string | null;
  /** The repo's file paths (the search asks for them with full=true). */
  siblings: string[];
}

export class HubClient {
  readonly http: HttpClient;

  constructor(
    readonly config: HubConfig,
    http: Partial<HttpOptions> = {},
  ) {
    this.http = new HttpClient({
      token: config.token,
      tokenOrigin: new URL(config.endpoint).origin,
      ...http,
    });
  }

  /** `revision` (a branch, tag or sha; default main) of `repo`, resolved to its commit sha. */
  async revision(repo: string, revision = 'main', signal?: AbortSignal): Promise<RepoRevision> {
    assertRepoId(repo);
    const doc = await this.#json(
      `${this.config.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`,
      repo,
      z.unknown(),
      signal,
    );
    return revisionFrom(doc, repo);
  }

  /** Every file of `repo` at commit `sha` (all pages of the tree). */
  async files(repo: string, sha: string, signal?: AbortSignal): Promise<RepoFile[]> {
    assertRepoId(repo);
    const files: RepoFile[] = [];
    const origin = new URL(this.config.endpoint).origin;
    let next: string | null =
      `${this.config.endpoint}/api/models/${repo}/tree/${encodeURIComponent(sha)}?recursive=true&expand=false`;
    for (let page = 0; next; page++) {
      if (page > 1000) throw new DownloadError('server', `The file list of ${repo} never ends.`);
      const response = await this.http.request(next, { what: repo, signal });
      files.push(...repoFilesFrom(await readJson(response, repo), repo));
      next = nextLink(response.headers.get('link'), next);
      // Pages stay on the Hub: a Link elsewhere would take the token with it.
      if (next && new URL(next).origin !== origin) next = null;
    }
    return files;
  }

  /** Models whose name matches `query` and that carry every tag in `tags`, most downloaded first. */
  async search(
    options: { query?: string; tags?: string[]; limit?: number },
    signal?: AbortSignal,
  ): Promise<HubSearchResult[]> {
    const params = new URLSearchParams();
    if (options.query) params.set('search', options.query);
    for (const tag of options.tags ?? []) params.append('filter', tag);
    params.set('sort', 'downloads');
    params.set('direction', '-1');
    params.set('limit', String(Math.min(Math.max(options.limit ?? 20, 1), 100)));
    // full=true adds each repo's file list (siblings), which tells whether it loads as it is.
    params.set('full', 'true');
    const docs = await this.#json(
      `${this.config.endpoint}/api/models?${params}`,
      'the Hub search',
      z.array(SearchEntry),
      signal,
    );
    return docs.map((d) => ({
      id: d.id,
      downloads: d.downloads ?? 0,
      likes: d.likes ?? 0,
      tags: d.tags ?? [],
      pipelineTag: d.pipeline_tag ?? null,
      lastModified: d.lastModified ?? null,
      siblings: (d.siblings ?? []).map((f) => f.rfilename),
    }));
  }

  /** The download URL of `path` in `repo` at `sha` (each path segment escaped). */
  fileUrl(repo: string, sha: string, path: string): string {
    const escaped = path.split('/').map(encodeURIComponent).join('/');
    return `${this.config.endpoint}/${repo}/resolve/${sha}/${escaped}`;
  }

  async #json<T>(
    url: string,
    what: string,
    schema: z.ZodType<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const response = await this.http.request(url, { what, signal });
    return parseDocument(await readJson(response, what), schema, what);
  }
}

/** A revision document (GET /api/models/{repo}/revision/{rev}) as a RepoRevision. */
export function revisionFrom(json: unknown, repo: string): RepoRevision {
  const doc = parseDocument(json, RevisionDocument, repo);
  const licenseTag = doc.tags?.find((t) => t.startsWith('license:'));
  const cardLicense = doc.cardData?.license;
  return {
    repo: doc.id,
    sha: doc.sha,
    private: doc.private ?? false,
    gated: doc.gated ?? false,
    license:
      typeof cardLicense === 'string'
        ? cardLicense
        : licenseTag
          ? licenseTag.slice('license:'.length)
          : null,
    tags: doc.tags ?? [],
    lastModified: doc.lastModified ?? null,
  };
}

/** The files of one tree page (GET /api/models/{repo}/tree/{sha}), folders left out. */
export function repoFilesFrom(json: unknown, repo: string): RepoFile[] {
  const files: RepoFile[] = [];
  for (const e of parseDocument(json, z.array(TreeEntry), repo)) {
    if (e.type !== 'file') continue;
    if (e.lfs) files.push({ path: e.path, size: e.lfs.size, sha256: e.lfs.oid, gitOid: null });
    else if (e.size !== undefined && e.oid && /^[0-9a-f]{40}$/.test(e.oid))
      files.push({ path: e.path, size: e.size, sha256: null, gitOid: e.oid });
    else
      throw new DownloadError(
        'server',
        `The Hub listed ${e.path} of ${repo} without its size or hash.`,
      );
  }
  return files;
}

function assertRepoId(repo: string): void {
  if (!isRepoId(repo) || !repo.includes('/'))
    throw new DownloadError(
      'bad-input',
      `"${repo.slice(0, 100)}" is not a Hub repo id (owner/name).`,
    );
}

async function readJson(response: { text(): Promise<string> }, what: string): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new DownloadError('server', `The Hub's answer about ${what} was not JSON.`);
  }
}

function parseDocument<T>(doc: unknown, schema: z.ZodType<T>, what: string): T {
  const parsed = schema.safeParse(doc);
  if (!parsed.success)
    throw new DownloadError(
      'server',
      `The Hub's answer about ${what} was not in the expected shape.`,
    );
  return parsed.data;
}

/** The rel="next" target of a Link header (RFC 8288), resolved against the page's URL. */
export function nextLink(header: string | null, base: string): string | null {
  if (!header) return null;
  for (const part of header.split(',')) {
    const m = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (m && /rel="?next"?/i.test(m[2])) return new URL(m[1], base).href;
  }
  return null;
}
