// The pure parts of model downloads: untrusted file names, references a person pastes, the
// Hub's documents (tests/fixtures/hub/), Retry-After, Link paging, which repo files a folder needs.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  hubConfigFrom,
  isRepoId,
  nextLink,
  parseModelReference,
  repoFilesFrom,
  revisionFrom,
} from '../../src/main/downloads/hub';
import { retryAfterMs } from '../../src/main/downloads/http';
import { fileNameOf, modelFilesOf } from '../../src/main/downloads/plan';
import { safeJoin } from '../../src/main/downloads/safe-path';
import { CatalogueEntry, type ModelFamily, modelCatalogue } from '../../src/shared';

const HUB = path.join(import.meta.dirname, '..', 'fixtures', 'hub');
const doc = (name: string): unknown => JSON.parse(fs.readFileSync(path.join(HUB, name), 'utf8'));

describe('safeJoin', () => {
  const root = path.resolve('/data/models/x');
  it('keeps plain relative names inside the folder', () => {
    expect(safeJoin(root, 'unet/model.onnx')).toBe(path.join(root, 'unet', 'model.onnx'));
    expect(safeJoin(root, 'a b/c-d_e.json')).toBe(path.join(root, 'a b', 'c-d_e.json'));
  });
  it.each([
    ['../escape.onnx', 'would reach outside the model folder'],
    ['unet/../../escape', 'would reach outside the model folder'],
    ['./model.onnx', 'would reach outside the model folder'],
    ['a//b', 'would reach outside the model folder'],
    ['/etc/passwd', 'is an absolute path'],
    ['C:/Windows/x', 'is an absolute path'],
    ['..\\evil', 'contains a backslash'],
    ['bad\u0000name', 'contains control characters'],
    ['nul.txt', 'is not a portable file name'],
    ['trailing.', 'is not a portable file name'],
    ['', 'is empty or too long'],
  ])('refuses %j (%s)', (name, why) => {
    expect(() => safeJoin(root, name)).toThrow(why);
  });
  it('shows control characters escaped in the sentence', () => {
    expect(() => safeJoin(root, 'a\nb')).toThrow('"a\\u000ab"');
  });
});

describe('references a person pastes', () => {
  it('reads repo ids, Hub pages, tree pages and file pages', () => {
    expect(parseModelReference('stabilityai/sd-turbo')).toEqual({
      kind: 'repo',
      repo: 'stabilityai/sd-turbo',
      revision: null,
    });
    expect(parseModelReference('https://huggingface.co/stabilityai/sd-turbo')).toEqual({
      kind: 'repo',
      repo: 'stabilityai/sd-turbo',
      revision: null,
    });
    expect(parseModelReference('https://huggingface.co/a/b/tree/onnx')).toEqual({
      kind: 'repo',
      repo: 'a/b',
      revision: 'onnx',
    });
    expect(parseModelReference('https://huggingface.co/a/b/blob/main/v1.safetensors')).toEqual({
      kind: 'url',
      url: 'https://huggingface.co/a/b/resolve/main/v1.safetensors',
    });
    expect(parseModelReference('http://127.0.0.1:9/x/y', 'http://127.0.0.1:9')).toEqual({
      kind: 'repo',
      repo: 'x/y',
      revision: null,
    });
    expect(parseModelReference('https://example.com/files/model.safetensors?dl=1')).toEqual({
      kind: 'url',
      url: 'https://example.com/files/model.safetensors?dl=1',
    });
  });
  it('refuses what is neither, in a sentence', () => {
    expect(() => parseModelReference('sd turbo')).toThrow(
      '"sd turbo" is neither a Hub repo id (owner/name) nor a web address.',
    );
    expect(() => parseModelReference('file:///etc/passwd')).toThrow(
      'Only http(s) addresses can be downloaded, not file:.',
    );
  });
  it('holds repo ids to the Hub rule', () => {
    expect(isRepoId('owner/name.v1_2-x')).toBe(true);
    for (const bad of ['a/b/c', 'a/-b', 'a/b-', 'a/b--c', 'a/b..c', 'a/', '/b', 'a b/c'])
      expect(isRepoId(bad), bad).toBe(false);
  });
  it('names a downloaded file by the last segment of its URL, never a path', () => {
    expect(fileNameOf('https://x.org/a/b/model%20v2.safetensors?x=1')).toBe('model v2.safetensors');
    expect(() => fileNameOf('https://x.org/')).toThrow('does not end in a usable file name');
  });
});

describe('the Hub documents', () => {
  it('reads a revision: the commit, licence and gating', () => {
    expect(revisionFrom(doc('revision.json'), 'example-org/sd-turbo-onnx')).toEqual({
      repo: 'example-org/sd-turbo-onnx',
      sha: '3c1a0f5e2b7d9c4e8a6f1b0d2e3c4a5b6c7d8e9f',
      private: false,
      gated: false,
      license: 'other',
      tags: ['diffusers', 'onnx', 'text-to-image', 'license:other'],
      lastModified: '2025-03-14T10:22:01.000Z',
    });
  });
  it('reads a tree page: LFS files by sha256, git files by blob id, folders left out', () => {
    const files = repoFilesFrom(doc('tree.json'), 'r/x');
    expect(files.map((f) => f.path)).toEqual([
      '.gitattributes',
      'README.md',
      'model_index.json',
      'unet/config.json',
      'unet/model.onnx',
      'unet/model.onnx_data',
    ]);
    expect(files[5]).toEqual({
      path: 'unet/model.onnx_data',
      size: 3463798784,
      sha256: 'c0ffee1234567890abcdef1234567890abcdef1234567890abcdef1234567890',
      gitOid: null,
    });
    expect(files[2]).toEqual({
      path: 'model_index.json',
      size: 583,
      sha256: null,
      gitOid: '5e1f9d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7980',
    });
  });
  it('refuses documents of another shape, in a sentence', () => {
    expect(() => revisionFrom({ id: 'x/y', sha: 'main' }, 'x/y')).toThrow(
      "The Hub's answer about x/y was not in the expected shape.",
    );
    expect(() => repoFilesFrom([{ type: 'file', path: 'a' }], 'x/y')).toThrow(
      'The Hub listed a of x/y without its size or hash.',
    );
  });
  it('keeps the files an ONNX folder needs', () => {
    expect(
      modelFilesOf([
        '.gitattributes',
        'model_index.json',
        'unet/model.onnx',
        'unet/model.onnx_data',
        'unet/diffusion_pytorch_model.safetensors',
        'text_encoder/pytorch_model.bin',
        'sample.png',
        'safety_checker/model.onnx',
        'feature_extractor/preprocessor_config.json',
        'unet/openvino_model.xml',
        'tokenizer/vocab.json',
      ]),
    ).toEqual([
      'model_index.json',
      'unet/model.onnx',
      'unet/model.onnx_data',
      'tokenizer/vocab.json',
    ]);
  });
});

describe('HTTP details', () => {
  it('reads Retry-After as seconds or as a date', () => {
    expect(retryAfterMs('7')).toBe(7000);
    expect(retryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', Date.UTC(2026, 0, 1))).toBe(30_000);
    expect(retryAfterMs(null)).toBeNull();
    expect(retryAfterMs('soon')).toBeNull();
  });
  it('follows rel="next" Link headers', () => {
    expect(nextLink('<https://h/api/x?cursor=2>; rel="next"', 'https://h/api/x')).toBe(
      'https://h/api/x?cursor=2',
    );
    expect(nextLink('</p2>; rel="prev", </p3>; rel="next"', 'https://h/a')).toBe('https://h/p3');
    expect(nextLink(null, 'https://h/')).toBeNull();
  });
  it('takes the endpoint and token from HF_ENDPOINT and HF_TOKEN, Settings second', () => {
    expect(hubConfigFrom({}, null)).toEqual({ endpoint: 'https://huggingface.co', token: null });
    expect(
      hubConfigFrom({ HF_ENDPOINT: 'http://127.0.0.1:8080/', HF_TOKEN: 'hf_a' }, 'hf_b'),
    ).toEqual({
      endpoint: 'http://127.0.0.1:8080',
      token: 'hf_a',
    });
    expect(hubConfigFrom({}, 'hf_b').token).toBe('hf_b');
    expect(() => hubConfigFrom({ HF_ENDPOINT: 'ftp://x' })).toThrow(
      'HF_ENDPOINT must be an http(s) address',
    );
  });
});

describe('the curated catalogue', () => {
  it('is valid data: repo ids, one entry per family it covers, sizes in GB', () => {
    for (const e of modelCatalogue) {
      expect(CatalogueEntry.parse(e)).toEqual(e);
      expect(isRepoId(e.repo), e.repo).toBe(true);
      expect(e.approxBytes).toBeGreaterThan(1e9);
    }
    expect(new Set(modelCatalogue.map((e) => e.repo)).size).toBe(modelCatalogue.length);
    const families = new Set(modelCatalogue.map((e) => e.family));
    for (const f of ['sd1', 'sd-turbo', 'sdxl-turbo', 'sdxl', 'lcm', 'inpaint', 'x4-upscaler'])
      expect(families.has(f as ModelFamily), f).toBe(true);
  });
  it('says what it could not verify', () => {
    for (const e of modelCatalogue.filter((x) => x.verified === 'unverified'))
      expect(e.note, e.repo).toMatch(/upstream|estimated/);
  });
});
