import path from 'node:path';
import { DownloadError } from './errors';

/** Windows device names that open a device instead of a file, whatever the extension. */
const deviceNames = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;

/**
 * The path on disk for `name`, a file name that came from a server (the Hub's file tree, a URL,
 * a Content-Disposition) and is untrusted: it must be a relative POSIX path of plain segments
 * that stays inside `root`. Absolute paths, `..`, `.`, empty segments, backslashes, drive
 * letters, control characters and Windows device names are refused with DownloadError
 * 'bad-input', so nothing is ever written outside the model's folder.
 */
export function safeJoin(root: string, name: string): string {
  const refuse = (why: string): never => {
    throw new DownloadError(
      'bad-input',
      `The server named a file "${printable(name)}", which ${why}; nothing was written.`,
    );
  };
  if (name.length === 0 || name.length > 1024) refuse('is empty or too long');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) refuse('contains control characters');
  if (name.includes('\\')) refuse('contains a backslash');
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) refuse('is an absolute path');
  for (const segment of name.split('/')) {
    if (segment === '' || segment === '.' || segment === '..')
      refuse('would reach outside the model folder');
    if (deviceNames.test(segment) || /[<>:"|?*]/.test(segment) || /[. ]$/.test(segment))
      refuse('is not a portable file name');
  }
  const base = path.resolve(root);
  const full = path.resolve(base, ...name.split('/'));
  const rel = path.relative(base, full);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel))
    refuse('would reach outside the model folder');
  return full;
}

/** A name as it can be shown in a sentence: control characters as \uXXXX, at most 120 chars. */
export function printable(name: string): string {
  const shown = name.replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return shown.length > 120 ? `${shown.slice(0, 117)}...` : shown;
}
