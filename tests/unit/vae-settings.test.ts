// Replacement VAEs in the settings and the infotext (issue 11 item 4): the frozen settings carry
// `vae` (old ones parse as the model's own), the studio settings a VAE folder, the A1111 text
// `VAE hash:` and `VAE:` where webui's create_infotext puts them, and a VAE an imported image
// names is matched to the VAE folder's files or reported missing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodePngWithMetadata,
  formatA1111Parameters,
  readGenerationMetadata,
} from '../../src/main/library/png-metadata';
import {
  listVaeFiles,
  resolveVaeFile,
  vaeFolder,
  vaeFolderProblem,
  vaeFromImported,
  vaeInfotextFields,
} from '../../src/main/models/vaes';
import { GenerationSettings, Settings, SettingsPatch } from '../../src/shared';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-vae-unit-'));
  fs.writeFileSync(path.join(dir, 'vae-ft-mse-840000-ema-pruned.safetensors'), 'x'.repeat(7));
  fs.writeFileSync(path.join(dir, 'sdxl_vae.ckpt'), 'y');
  fs.writeFileSync(path.join(dir, 'readme.txt'), 'not a VAE');
  fs.writeFileSync(path.join(dir, '.hidden.safetensors'), '');
  fs.mkdirSync(path.join(dir, 'folder.safetensors'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { model: 'm', prompt: 'a cat', seed: 1 };

describe('settings', () => {
  it("parses stored settings without `vae` as the model's own VAE, and keeps a chosen one", () => {
    expect(GenerationSettings.parse(base).vae).toBeNull();
    // An old queued job with a legacy sampler id still parses, with no VAE.
    expect(GenerationSettings.parse({ ...base, sampler: 'dpmpp_2m_karras' })).toMatchObject({
      vae: null,
      sampler: 'dpmpp_2m',
    });
    expect(GenerationSettings.parse({ ...base, vae: 'sdxl_vae.ckpt' }).vae).toBe('sdxl_vae.ckpt');
    expect(GenerationSettings.safeParse({ ...base, vae: '' }).success).toBe(false);
    expect(GenerationSettings.safeParse({ ...base, vae: 3 }).success).toBe(false);
  });

  it('has a VAE folder setting (null: the data folder’s vae/) that a patch may set or clear', () => {
    expect(Settings.parse({}).vaeDir).toBeNull();
    expect(SettingsPatch.parse({ vaeDir: '/models/VAE' })).toEqual({ vaeDir: '/models/VAE' });
    expect(SettingsPatch.parse({ vaeDir: null })).toEqual({ vaeDir: null });
    expect(SettingsPatch.safeParse({ vaeDir: '' }).success).toBe(false);
    expect(vaeFolder({ vaeDir: null }, '/data')).toBe(path.resolve('/data/vae'));
    expect(vaeFolder({ vaeDir: '/models/VAE' }, '/data')).toBe(path.resolve('/models/VAE'));
  });
});

describe('infotext', () => {
  it('writes VAE hash and VAE after the model, as A1111 does', () => {
    const s = GenerationSettings.parse({ ...base, mode: 'img2img', strength: 0.5, initImage: 'i' });
    const fields = vaeInfotextFields({
      file: '/models/VAE/vae-ft-mse-840000-ema-pruned.safetensors',
      sha256: 'c6a580b13a5bc05a5e16e4dbb80608ff2ec251a162311590c1f34c013d7f3dab',
    });
    expect(fields).toEqual({
      'VAE hash': 'c6a580b13a',
      VAE: 'vae-ft-mse-840000-ema-pruned.safetensors',
    });
    expect(
      formatA1111Parameters(s, { modelName: 'sd15', modelHash: 'abcdef1234', ...fields }),
    ).toBe(
      'a cat\nSteps: 25, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ' +
        'Model hash: abcdef1234, Model: sd15, VAE hash: c6a580b13a, ' +
        'VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.5',
    );
  });

  it('round-trips the VAE through our PNG chunk and the A1111 text', async () => {
    const settings = GenerationSettings.parse({ ...base, vae: 'sdxl_vae.ckpt' });
    const png = await encodePngWithMetadata(new Uint8Array(4 * 4 * 3), 4, 4, 3, {
      settings,
      extra: { modelName: 'm', 'VAE hash': '0123456789', VAE: 'sdxl_vae.ckpt' },
    });
    const read = readGenerationMetadata(png);
    expect(read.source).toBe('latent-studio');
    expect(read.settings.vae).toBe('sdxl_vae.ckpt');
    expect(read.raw).toMatchObject({ 'VAE hash': '0123456789', VAE: 'sdxl_vae.ckpt' });
  });
});

describe('the VAE folder', () => {
  it('lists the VAE files in it by name, and nothing for a folder that is not there', async () => {
    expect(await listVaeFiles(dir)).toEqual([
      { name: 'sdxl_vae.ckpt', bytes: 1 },
      { name: 'vae-ft-mse-840000-ema-pruned.safetensors', bytes: 7 },
    ]);
    expect(await listVaeFiles(path.join(dir, 'none'))).toEqual([]);
  });

  it('says in one sentence why a folder cannot be the VAE folder', () => {
    expect(vaeFolderProblem(dir)).toBeNull();
    expect(vaeFolderProblem('models/VAE')).toBe(
      `The VAE folder must be a full path (such as ${path.resolve('/', 'models', 'VAE')}), not "models/VAE".`,
    );
    expect(vaeFolderProblem(path.join(dir, 'none'))).toBe(
      `The VAE folder ${path.join(dir, 'none')} does not exist: create it first, or choose another.`,
    );
    expect(vaeFolderProblem(path.join(dir, 'sdxl_vae.ckpt'))).toBe(
      `${path.join(dir, 'sdxl_vae.ckpt')} is a file, not a folder: choose the folder that holds the VAE files.`,
    );
  });

  it('resolves a name in the folder or a path, and says when it is not there', async () => {
    expect(await resolveVaeFile('sdxl_vae.ckpt', dir)).toBe(path.join(dir, 'sdxl_vae.ckpt'));
    const abs = path.join(dir, 'sdxl_vae.ckpt');
    expect(await resolveVaeFile(abs, '/elsewhere')).toBe(abs);
    await expect(resolveVaeFile('gone.safetensors', dir)).rejects.toThrow(
      `The VAE "gone.safetensors" is not in the VAE folder ${dir}: put the file there or choose another VAE.`,
    );
    await expect(resolveVaeFile(path.join(dir, 'readme.txt'), dir)).rejects.toThrow(
      'readme.txt is not a VAE file (.safetensors, .ckpt, .pt, .pth).',
    );
  });

  it('matches the VAE an imported image names, or says which file is missing', async () => {
    const ft = 'vae-ft-mse-840000-ema-pruned.safetensors';
    expect(await vaeFromImported(ft, dir)).toEqual({ vae: ft, note: null });
    // Older webui versions wrote the name without its extension; Windows paths keep their name.
    expect(await vaeFromImported('vae-ft-mse-840000-ema-pruned', dir)).toEqual({
      vae: ft,
      note: null,
    });
    expect(await vaeFromImported('C:\\sd\\models\\VAE\\SDXL_VAE.CKPT', dir)).toEqual({
      vae: 'sdxl_vae.ckpt',
      note: null,
    });
    expect(await vaeFromImported('None', dir)).toEqual({ vae: null, note: null });
    expect(await vaeFromImported('kl-f8-anime2.ckpt', dir)).toEqual({
      vae: null,
      note: `The image was made with the VAE kl-f8-anime2.ckpt, which is not in the VAE folder ${dir}; put it there to use it (the model's own VAE is chosen).`,
    });
  });
});
