/**
 * The download queue's tables (library migration 7). A download is one model (a repo pinned to
 * a commit, or one file's URL); its files are rows with what verifies them and the validator
 * their partial file started from, so a restart resumes each file where it stopped.
 */
export const downloadsSchema = `
CREATE TABLE downloads (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('repo','url')),
  source TEXT NOT NULL,
  revision TEXT,
  sha TEXT,
  name TEXT NOT NULL,
  license TEXT,
  state TEXT NOT NULL CHECK (state IN ('queued','running','paused','done','failed','cancelled')),
  bytes_total INTEGER,
  created_at INTEGER NOT NULL, finished_at INTEGER,
  error_code TEXT, error_message TEXT,
  result_path TEXT,
  model_id TEXT REFERENCES models(id) ON DELETE SET NULL
);
CREATE INDEX downloads_state ON downloads(state, created_at);
CREATE TABLE download_files (
  download_id TEXT NOT NULL REFERENCES downloads(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  url TEXT NOT NULL,
  size INTEGER,
  sha256 TEXT,
  git_oid TEXT,
  validator TEXT,
  done INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (download_id, path)
);
`;

/**
 * Library migration 11: the model a download replaces (an update of a downloaded model); the
 * model switches to the new folder only once every file of it is verified.
 */
export const downloadsReplacesSchema = `ALTER TABLE downloads ADD COLUMN replaces TEXT;`;
