// The download history's retention (issue 13, item 6): finished downloads are kept for the
// panel, but only the newest 50 and none finished over 30 days ago; unfinished and failed ones
// (which can still resume) always stay. Real SQLite in a temp data folder.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Library } from '../../src/main/library/service';
import {
  DownloadStore,
  type DownloadRow,
  type DownloadState,
} from '../../src/main/downloads/store';
import { openLibrary, tempDir } from './library-helpers';

const opened: Array<{ dir: string; library: Library }> = [];
afterEach(() => {
  for (const o of opened.splice(0)) {
    o.library.close();
    fs.rmSync(o.dir, { recursive: true, force: true });
  }
});

const day = 24 * 3600_000;

function row(id: string, state: DownloadState, finishedAt: number | null): DownloadRow {
  return {
    id,
    kind: 'repo',
    source: `owner/${id}`,
    revision: 'main',
    sha: null,
    name: id,
    license: null,
    state,
    bytes_total: 1,
    created_at: finishedAt ?? 0,
    finished_at: finishedAt,
    error_code: null,
    error_message: null,
    result_path: null,
    model_id: null,
    replaces: null,
  };
}

describe('the download history', () => {
  it('keeps the newest finished downloads and drops old ones, never an unfinished or failed one', async () => {
    const dir = tempDir('ls-dl-hist-');
    const { library } = await openLibrary(dir);
    opened.push({ dir, library });
    const store = new DownloadStore(library.database);
    const now = 1_000 * day;
    // 60 done, one a day back from now; a cancelled one 40 days ago; a failed one 90 days ago.
    for (let i = 0; i < 60; i++) store.insert(row(`done${i}`, 'done', now - i * day - 1), []);
    store.insert(row('cancelled-old', 'cancelled', now - 40 * day), []);
    store.insert(row('failed-old', 'failed', now - 90 * day), []);
    store.insert(row('paused', 'paused', null), [
      { path: 'a.onnx', url: 'http://x/a.onnx', size: 1, sha256: null, git_oid: null },
    ]);

    const removed = store.prune({ keep: 50, olderThan: now - 30 * day });
    const left = new Set(store.list().map((r) => r.id));
    // Older than 30 days: done30..done59 and the cancelled one; the newest 30 are within 50.
    expect(removed).toBe(31);
    for (let i = 0; i < 30; i++) expect(left.has(`done${i}`), `done${i}`).toBe(true);
    for (let i = 30; i < 60; i++) expect(left.has(`done${i}`), `done${i}`).toBe(false);
    expect(left.has('cancelled-old')).toBe(false);
    expect(left.has('failed-old')).toBe(true);
    expect(left.has('paused')).toBe(true);
    expect(store.files('paused')).toHaveLength(1);

    // Within the age limit, the count keeps the newest.
    expect(store.prune({ keep: 10, olderThan: 0 })).toBe(20);
    const kept = store
      .list()
      .filter((r) => r.state === 'done')
      .map((r) => r.id);
    expect(kept).toEqual(Array.from({ length: 10 }, (_, i) => `done${i}`));
  });
});
