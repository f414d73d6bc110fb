/**
 * The curated catalogue: ONNX Stable Diffusion repos on the Hugging Face Hub whose main branch
 * holds a diffusers (or optimum) ONNX folder the engine loads as it is, with what a person
 * needs to choose one. Data only; the download client (src/main/downloads) fetches them pinned
 * to the commit their main points at when the download starts.
 *
 * Sizes are the ONNX files the download fetches (other frameworks' weights and the safety
 * checker are left out), read from the Hub's file listings in 2025-2026 and rounded; the
 * download itself uses the exact sizes the Hub reports. `verified` says what was checked:
 * 'listing' = the repo's file listing was seen (layout and sizes); 'unverified' = taken from a
 * listing of part of the repo only, or the licence is inferred from the upstream model. None of
 * these was downloaded and generated with here (no network to the Hub from the build machine).
 */
import { z } from 'zod';
import { SamplerName } from './generation';
import { modelFamilies } from './families';
import { type TaesdVariant, taesdFileStems, taesdVariants } from './taesd';

export const CatalogueEntry = z.object({
  /** The Hub repo id (owner/name). */
  repo: z.string(),
  /** What the studio lists it as. */
  title: z.string(),
  family: z.enum(modelFamilies),
  /** About how many bytes the download fetches. */
  approxBytes: z.number().int().positive(),
  /** SPDX-like licence id as the repo's card gives it (or the upstream model's, see note). */
  license: z.string(),
  /** Native image size. */
  width: z.number().int(),
  height: z.number().int(),
  recommended: z.object({
    sampler: SamplerName,
    steps: z.number().int().min(1),
    guidance: z.number().min(0),
  }),
  /** fp32 or fp16 weights (fp16 needs a GPU provider to be fast; CPU runs fp32 best). */
  precision: z.enum(['fp32', 'fp16']),
  verified: z.enum(['listing', 'unverified']),
  /** What a person should know: licence limits, what was not checked. */
  note: z.string(),
});
export type CatalogueEntry = z.infer<typeof CatalogueEntry>;

const GB = 1_000_000_000;

export const modelCatalogue: readonly CatalogueEntry[] = [
  {
    repo: 'onnx-community/stable-diffusion-v1-5-ONNX',
    title: 'Stable Diffusion 1.5',
    family: 'sd1',
    approxBytes: Math.round(4.3 * GB),
    license: 'creativeml-openrail-m',
    width: 512,
    height: 512,
    recommended: { sampler: 'dpmpp_2m', steps: 25, guidance: 7.5 },
    precision: 'fp32',
    verified: 'listing',
    note: 'The classic general model; its safety checker (1.2 GB) is not downloaded.',
  },
  {
    repo: 'jdp8/sd-turbo-onnx',
    title: 'SD-Turbo',
    family: 'sd-turbo',
    approxBytes: Math.round(2.6 * GB),
    license: 'sai-nc-community',
    width: 512,
    height: 512,
    recommended: { sampler: 'euler_a', steps: 2, guidance: 0 },
    precision: 'fp16',
    verified: 'unverified',
    note: "One to four steps. A community export of stabilityai/sd-turbo; the licence is the upstream model's (non-commercial community licence), the repo card states none. Size estimated from the UNet listing (1.74 GB).",
  },
  {
    repo: 'stabilityai/sdxl-turbo',
    title: 'SDXL-Turbo',
    family: 'sdxl-turbo',
    approxBytes: Math.round(13.9 * GB),
    license: 'sai-nc-community',
    width: 512,
    height: 512,
    recommended: { sampler: 'euler_a', steps: 1, guidance: 0 },
    precision: 'fp32',
    verified: 'listing',
    note: "Stability AI's own ONNX export (in the repo beside the PyTorch weights); non-commercial community licence.",
  },
  {
    repo: 'stabilityai/stable-diffusion-xl-base-1.0',
    title: 'SDXL 1.0 base',
    family: 'sdxl',
    approxBytes: Math.round(13.9 * GB),
    license: 'openrail++',
    width: 1024,
    height: 1024,
    recommended: { sampler: 'dpmpp_2m', steps: 30, guidance: 6 },
    precision: 'fp32',
    verified: 'listing',
    note: 'The ONNX export in the official repo (onnx-model, #18); the OpenVINO and PyTorch weights beside it are not downloaded.',
  },
  {
    repo: 'SimianLuo/LCM_Dreamshaper_v7',
    title: 'LCM Dreamshaper v7',
    family: 'lcm',
    approxBytes: Math.round(4.3 * GB),
    license: 'mit',
    width: 512,
    height: 512,
    recommended: { sampler: 'lcm', steps: 4, guidance: 8 },
    precision: 'fp32',
    verified: 'listing',
    note: 'A latent consistency model: four to eight steps. ONNX added to the repo by Hugging Face (add-onnx, #11).',
  },
  {
    repo: 'jdp8/optimum-sd-2-inpainting-onnx-fp32',
    title: 'Stable Diffusion 2 inpainting',
    family: 'inpaint',
    approxBytes: Math.round(5.2 * GB),
    license: 'openrail++',
    width: 512,
    height: 512,
    recommended: { sampler: 'ddim', steps: 30, guidance: 7.5 },
    precision: 'fp32',
    verified: 'unverified',
    note: 'A community optimum export of stabilityai/stable-diffusion-2-inpainting (9-channel UNet); licence from the upstream model; size estimated from the UNet listing (3.46 GB).',
  },
  {
    repo: 'ssube/stable-diffusion-x4-upscaler-onnx',
    title: 'x4 upscaler',
    family: 'x4-upscaler',
    approxBytes: Math.round(3.4 * GB),
    license: 'openrail++',
    width: 512,
    height: 512,
    recommended: { sampler: 'ddim', steps: 50, guidance: 9 },
    precision: 'fp32',
    verified: 'unverified',
    note: 'A community export of stabilityai/stable-diffusion-x4-upscaler; enlarges an image four times. Layout and licence seen in its listing; total size estimated (text encoder 1.36 GB).',
  },
];

/**
 * A single file the studio itself uses (not a model to generate with), fetched through the
 * download queue from a Hub repo and put at `target` (relative to the data folder) instead of
 * being imported.
 */
export const CatalogueFile = z.object({
  kind: z.enum(['safety-checker', 'preview-decoder']),
  repo: z.string(),
  /** The file's path in the repo. */
  file: z.string(),
  revision: z.string(),
  title: z.string(),
  approxBytes: z.number().int().positive(),
  license: z.string(),
  /** Where it goes, relative to the data folder, '/'-separated. */
  target: z.string(),
  note: z.string(),
});
export type CatalogueFile = z.infer<typeof CatalogueFile>;

/**
 * The content filter's checker (issue 18): diffusers' StableDiffusionSafetyChecker weights,
 * 1.22 GB (CLIP ViT-L/14's vision tower, its projection and the concept embeddings), put where
 * the filter looks when Settings names no file.
 */
export const safetyCheckerFile: CatalogueFile = {
  kind: 'safety-checker',
  repo: 'CompVis/stable-diffusion-safety-checker',
  file: 'model.safetensors',
  revision: 'main',
  title: "Stable Diffusion's safety checker",
  approxBytes: Math.round(1.22 * GB),
  license: 'unknown',
  target: 'models/safety_checker/model.safetensors',
  note: 'Converted on first use for the content filter; the repo card names no licence.',
};

/**
 * A TAESD decoder file on the Hub (madebyollin's repos, MIT): one file the model manager
 * fetches into `<data folder>/models/taesd/` under the name the studio looks for there
 * (src/main/models/taesd.ts), for the live previews and the fast decode of its family's models.
 */
export const PreviewDecoderEntry = z.object({
  variant: z.enum(taesdVariants),
  /** The Hub repo id (owner/name) and the file in it. */
  repo: z.string(),
  file: z.string(),
  title: z.string(),
  /** About how many bytes the file has. */
  approxBytes: z.number().int().positive(),
  license: z.string(),
  verified: z.enum(['listing', 'unverified']),
  note: z.string(),
});
export type PreviewDecoderEntry = z.infer<typeof PreviewDecoderEntry>;

export const previewDecoderCatalogue: readonly PreviewDecoderEntry[] = [
  {
    variant: 'taesd',
    repo: 'madebyollin/taesd',
    file: 'taesd_decoder.safetensors',
    title: 'TAESD decoder (SD 1.x / 2.x)',
    approxBytes: 4_900_000,
    license: 'mit',
    verified: 'unverified',
    note: "The decoder half of the tiny autoencoder, beside the repo's diffusers AutoencoderTiny; size from the published taesd_decoder.pth.",
  },
  {
    variant: 'taesdxl',
    repo: 'madebyollin/taesdxl',
    file: 'taesdxl_decoder.safetensors',
    title: 'TAESDXL decoder (SDXL)',
    approxBytes: 4_900_000,
    license: 'mit',
    verified: 'unverified',
    note: "The same graph as TAESD's, trained on SDXL's latents; size from the published taesdxl_decoder.pth.",
  },
];

/** The Hub address of a preview decoder's file (pinned to the repo's main branch). */
export const previewDecoderUrl = (e: Pick<PreviewDecoderEntry, 'repo' | 'file'>): string =>
  `https://huggingface.co/${e.repo}/resolve/main/${e.file}`;

/** The TAESD decoders as files the download queue puts where the studio looks for them. */
export const previewDecoderFiles: readonly CatalogueFile[] = previewDecoderCatalogue.map((e) => ({
  kind: 'preview-decoder',
  repo: e.repo,
  file: e.file,
  revision: 'main',
  title: e.title,
  approxBytes: e.approxBytes,
  license: e.license,
  target: `models/taesd/${taesdFileStems[e.variant]}.safetensors`,
  note: e.note,
}));

/** The catalogue file of a TAESD decoder variant. */
export function previewDecoderFile(variant: TaesdVariant): CatalogueFile {
  return previewDecoderFiles[previewDecoderCatalogue.findIndex((e) => e.variant === variant)]!;
}

/** The single files downloads put in place (DownloadHost.placeFile). */
export const catalogueFiles: readonly CatalogueFile[] = [safetyCheckerFile, ...previewDecoderFiles];
