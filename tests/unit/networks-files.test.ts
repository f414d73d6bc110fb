// LoRA and embedding files on disk: what their headers say (family, vector count), A1111's
// short hashes and their cache, and scanning a folder laid out as A1111 users keep it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { a1111NetworkHash, HASHES_FILE, NetworkHashes } from '../../src/main/adapters/hashes';
import { embeddingShape, loraFamily, readFileHeader } from '../../src/main/adapters/header';
import { FolderScanner, networkFolders } from '../../src/main/adapters/scan';
import { NetworkService } from '../../src/main/adapters/service';
import { type TensorSpec, writeSafetensors } from '../fixtures/checkpoint';

const TI_PT = path.join(import.meta.dirname, '../fixtures/reference/embeddings/tiny-ti.pt');

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-networks-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A safetensors file of zero-filled tensors (the headers are what is read here). */
async function tensors(
  file: string,
  specs: Array<[string, number[]]>,
  metadata: Record<string, string> = {},
): Promise<string> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const list: TensorSpec[] = specs.map(([name, shape]) => ({ name, dtype: 'F16', shape }));
  let seed = 1;
  await writeSafetensors(
    file,
    list,
    (t) => {
      const n = t.shape.reduce((a, b) => a * b, 1) * 2;
      return Uint8Array.from({ length: n }, () => (seed = (seed * 75 + 74) % 65537) & 0xff);
    },
    metadata,
  );
  return file;
}

const kohya = (block: string, width: number): Array<[string, number[]]> => [
  [`lora_unet_${block}_attn2_to_k.lora_down.weight`, [4, width]],
  [`lora_unet_${block}_attn2_to_k.lora_up.weight`, [320, 4]],
  [`lora_unet_${block}_attn2_to_k.alpha`, []],
];

describe('headers', () => {
  it('tells the family of a LoRA from metadata, key names or the cross-attention width', async () => {
    const family = async (specs: Array<[string, number[]]>, meta = {}) =>
      loraFamily(await readFileHeader(await tensors(path.join(dir, 'l.safetensors'), specs, meta)));
    const block = 'down_blocks_0_attentions_0_transformer_blocks_0';
    expect(await family(kohya(block, 768))).toBe('sd1');
    expect(await family(kohya(block, 1024))).toBe('sd2');
    expect(await family(kohya(block, 2048))).toBe('sdxl');
    expect(
      await family([['lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', [4, 768]]]),
    ).toBe('sdxl');
    // PEFT/diffusers naming.
    expect(
      await family([
        [
          `unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight`,
          [8, 1024],
        ],
      ]),
    ).toBe('sd2');
    // kohya's metadata wins, as A1111 reads it.
    expect(await family(kohya(block, 768), { ss_base_model_version: 'sdxl_base_v1-0' })).toBe(
      'sdxl',
    );
    expect(await family([['lora_unet_conv_in.lora_down.weight', [4, 4, 3, 3]]])).toBeNull();
  });

  it('counts the vectors of A1111 .pt and safetensors embeddings, SDXL pairs included', async () => {
    const pt = embeddingShape(await readFileHeader(TI_PT));
    expect(pt).toEqual({ vectors: 3, family: 'sd1' });
    const st = await tensors(path.join(dir, 'e.safetensors'), [['emb_params', [8, 768]]]);
    expect(embeddingShape(await readFileHeader(st))).toEqual({ vectors: 8, family: 'sd1' });
    const xl = await tensors(path.join(dir, 'xl.safetensors'), [
      ['clip_g', [2, 1280]],
      ['clip_l', [2, 768]],
    ]);
    expect(embeddingShape(await readFileHeader(xl))).toEqual({ vectors: 2, family: 'sdxl' });
    const none = await tensors(path.join(dir, 'n.safetensors'), [
      ['a', [1]],
      ['b', [1]],
    ]);
    expect(embeddingShape(await readFileHeader(none))).toBeNull();
  });

  it('names what is wrong with a file that is not a tensor file', async () => {
    const bad = path.join(dir, 'bad.pt');
    fs.writeFileSync(bad, 'hello, this is text');
    await expect(readFileHeader(bad)).rejects.toThrow(
      'it is neither a .safetensors file nor a PyTorch file (.pt)',
    );
    const cut = path.join(dir, 'cut.safetensors');
    const whole = fs.readFileSync(await tensors(path.join(dir, 'w.safetensors'), [['x', [4]]]));
    fs.writeFileSync(cut, whole.subarray(0, 20));
    await expect(readFileHeader(cut)).rejects.toThrow('header length does not fit the file');
  });
});

describe('A1111 short hashes', () => {
  it('hashes a safetensors LoRA after its header (kohya addnet hash), anything else whole', async () => {
    const file = await tensors(path.join(dir, 'l.safetensors'), kohya('mid_block', 768));
    const bytes = fs.readFileSync(file);
    const start = 8 + Number(bytes.readBigUInt64LE(0));
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(await a1111NetworkHash(file, 'lora')).toBe(sha(bytes.subarray(start)));
    expect(await a1111NetworkHash(file, 'embedding')).toBe(sha(bytes));
    // Editing only the metadata keeps a LoRA's hash.
    const edited = await tensors(path.join(dir, 'l2.safetensors'), kohya('mid_block', 768), {
      ss_output_name: 'renamed',
    });
    expect(await a1111NetworkHash(edited, 'lora')).toBe(await a1111NetworkHash(file, 'lora'));
    // kohya's precomputed hash is what A1111 shows when the metadata has one.
    const recorded = await tensors(path.join(dir, 'l3.safetensors'), kohya('mid_block', 768), {
      sshs_model_hash: 'ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789',
    });
    expect(await a1111NetworkHash(recorded, 'lora')).toBe(
      'abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789',
    );
    expect(await a1111NetworkHash(TI_PT, 'embedding')).toBe(sha(fs.readFileSync(TI_PT)));
  });

  it('keeps hashes by path, size and time, and hashes a changed file again', async () => {
    const file = await tensors(path.join(dir, 'l.safetensors'), kohya('mid_block', 768));
    const hashes = new NetworkHashes(dir);
    const first = await hashes.hash('lora', file);
    expect(fs.existsSync(path.join(dir, HASHES_FILE))).toBe(true);
    // Same size, same time, other bytes: a fresh cache answers from the file, not the bytes.
    const st = fs.statSync(file);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff;
    fs.writeFileSync(file, bytes);
    fs.utimesSync(file, st.atime, st.mtime);
    const again = new NetworkHashes(dir);
    expect(await again.known('lora', file, st.size, st.mtimeMs)).toBe(first);
    expect(await again.hash('lora', file)).toBe(first);
    // A new modification time: hashed again, and the stale entry replaced.
    fs.utimesSync(file, st.atime, new Date(st.mtimeMs + 5000));
    const changed = await again.hash('lora', file);
    expect(changed).not.toBe(first);
    const stored = JSON.parse(fs.readFileSync(path.join(dir, HASHES_FILE), 'utf8')) as object;
    expect(Object.values(stored)).toEqual([changed]);
  });
});

describe('scanning the folders', () => {
  it('lists files recursively with the preview beside each, and says when a folder is missing', async () => {
    const loras = path.join(dir, 'models', 'Lora');
    await tensors(path.join(loras, 'film_grain.safetensors'), kohya('mid_block', 768));
    await tensors(path.join(loras, 'styles', 'ink.safetensors'), kohya('mid_block', 2048), {
      ss_output_name: 'inky',
    });
    fs.writeFileSync(path.join(loras, 'broken.ckpt'), 'not a checkpoint');
    fs.writeFileSync(path.join(loras, 'notes.txt'), 'ignored');
    fs.mkdirSync(path.join(loras, '.hidden'));
    await tensors(path.join(loras, '.hidden', 'secret.safetensors'), kohya('mid_block', 768));
    const png = await sharp({
      create: { width: 300, height: 200, channels: 3, background: { r: 200, g: 10, b: 10 } },
    })
      .png()
      .toBuffer();
    fs.writeFileSync(path.join(loras, 'film_grain.preview.png'), png);
    fs.writeFileSync(path.join(loras, 'styles', 'ink.jpg'), await sharp(png).jpeg().toBuffer());

    const folders = networkFolders({ loraDir: null, embeddingsDir: null }, dir);
    expect(folders).toEqual({ loraDir: loras, embeddingsDir: path.join(dir, 'embeddings') });
    const problems: string[] = [];
    const scanner = new FolderScanner();
    const list = await scanner.scan('lora', loras, problems);
    expect(list.map((f) => [f.relativeName, f.name, f.family, f.alias, f.hasPreview])).toEqual([
      ['broken', 'broken', null, null, false],
      ['film_grain', 'film_grain', 'sd1', null, true],
      ['styles/ink', 'ink', 'sdxl', 'inky', true],
    ]);
    expect(list[0].problem).toBe('It is neither a .safetensors file nor a PyTorch file (.ckpt).');
    expect(list[2].previewFile).toBe(path.join(loras, 'styles', 'ink.jpg'));
    expect(list[1].bytes).toBe(fs.statSync(path.join(loras, 'film_grain.safetensors')).size);
    expect(problems).toEqual([]);

    expect(await scanner.scan('embedding', folders.embeddingsDir, problems)).toEqual([]);
    expect(problems).toEqual([
      `The embeddings folder ${folders.embeddingsDir} does not exist yet; put embeddings files there.`,
    ]);
  });

  it('serves the listing, small previews and hashes once a file was used', async () => {
    const loras = path.join(dir, 'loras');
    const embeddings = path.join(dir, 'emb');
    await tensors(path.join(loras, 'film_grain.safetensors'), kohya('mid_block', 768));
    fs.mkdirSync(embeddings);
    fs.copyFileSync(TI_PT, path.join(embeddings, 'tiny-ti.pt'));
    const big = await sharp({
      create: { width: 1200, height: 600, channels: 3, background: { r: 0, g: 90, b: 200 } },
    })
      .png()
      .toBuffer();
    fs.writeFileSync(path.join(loras, 'film_grain.png'), big);
    const service = new NetworkService(dir, () => ({ loraDir: loras, embeddingsDir: embeddings }));

    const list = await service.list(false);
    expect(list.loras.map((l) => [l.name, l.hash, l.hasPreview])).toEqual([
      ['film_grain', null, true],
    ]);
    expect(list.embeddings.map((e) => [e.name, e.vectors, e.family])).toEqual([
      ['tiny-ti', 3, 'sd1'],
    ]);

    const preview = await service.preview({ kind: 'lora', name: 'film_grain' });
    const data = Buffer.from(preview.dataUrl!.split(',')[1], 'base64');
    const meta = await sharp(data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 192, 96]);
    expect(await service.preview({ kind: 'embedding', name: 'tiny-ti' })).toEqual({
      dataUrl: null,
    });
    await expect(service.preview({ kind: 'lora', name: 'nope' })).rejects.toThrow(
      'No LoRA named "nope" is in its folder.',
    );

    const resolved = await service.resolve({
      prompt: 'a <lora:film_grain:0.5> tiny-ti',
      negativePrompt: '',
    });
    expect(resolved.embeddings).toEqual([
      { token: 'tiny-ti', path: path.join(embeddings, 'tiny-ti.pt') },
    ]);
    const after = await service.list(false);
    expect(after.loras[0].hash).toBe(resolved.loraHashes[0].hash);
    expect(after.embeddings[0].hash).toBe(
      createHash('sha256').update(fs.readFileSync(TI_PT)).digest('hex').slice(0, 12),
    );
    // A new service (the next start) shows the hashes from the cache without reading the files.
    const restarted = new NetworkService(dir, () => ({
      loraDir: loras,
      embeddingsDir: embeddings,
    }));
    expect((await restarted.list(false)).loras[0].hash).toBe(resolved.loraHashes[0].hash);
  });
});
