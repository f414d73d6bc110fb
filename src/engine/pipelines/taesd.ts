/**
 * TAESD in the pipelines (issue 17 item 5): the tiny autoencoder's decoder (madebyollin/taesd,
 * converted by convert/convert-taesd.ts) turns a step's predicted image into the live preview,
 * and, for a generation with `fastDecode`, the final latents into the image.
 *
 * What a preview shows: the sampler's denoised estimate x0 of the step (StepEvent.denoised), as
 * the latent-RGB preview already did and as A1111 (live_preview_content "Prompt": the denoised
 * sample, modules/sd_samplers_common.py) and ComfyUI (latent_preview.py: the callback's x0) feed
 * their TAESD previewers: the noisy sample would show mostly noise until the last steps.
 *
 * What a preview may cost: ONNX Runtime for Node runs a session on the calling thread (the
 * promise only defers the call), so a TAESD decode in the engine worker adds its whole time to
 * sampling. A preview is therefore decoded with TAESD only while the TAESD time spent so far
 * stays within `share` of the sampling time (default 10%); the steps in between get the
 * latent-RGB preview, so the picture keeps moving even where a TAESD decode costs several steps
 * (a small UNet on a CPU). The first preview is always decoded.
 */
import { EngineError } from '../errors';
import { type PixelImage, tensorToImage } from '../image';
import type { ComponentSession } from '../models';
import { floatsToOrt, ortToFloat32 } from '../tensor';
import { type StageTimings, timedRun } from './stats';

/** The default share of sampling time TAESD previews may take (EngineOptions.taesdPreviewShare). */
export const defaultTaesdPreviewShare = 0.1;

const latentChannels = 4;

/**
 * A TAESD decoder session for one run: decodes latents as the UNet makes them (TAESD's scale is
 * 1, the family's VAE scaling factor is not undone) to images, and keeps the preview budget.
 * Not thread-safe; one per run.
 */
export class TaesdDecoder {
  /** Milliseconds spent decoding previews in this run. */
  previewMs = 0;
  /** Previews decoded, and final images decoded, in this run. */
  previews = 0;
  finalDecodes = 0;
  #lastPreviewMs = 0;
  #pending: Promise<void> | null = null;
  #broken = false;

  constructor(
    readonly session: ComponentSession,
    readonly share: number = defaultTaesdPreviewShare,
  ) {}

  /**
   * The final image `index` of `latents` ([B,4,h,w], the UNet's scaled latents), decoded by
   * TAESD instead of the VAE (fastDecode).
   */
  async decode(
    latents: Float32Array,
    index: number,
    h: number,
    w: number,
    timings: StageTimings,
    signal?: AbortSignal,
  ): Promise<PixelImage> {
    const per = latentChannels * h * w;
    if (latents.length < (index + 1) * per)
      throw new EngineError(
        'internal',
        `TAESD was given ${latents.length} latent values for image ${index} of ${latentChannels}x${h}x${w}.`,
      );
    const image = await this.#run(
      latents.slice(index * per, (index + 1) * per),
      h,
      w,
      timings,
      signal,
    );
    this.finalDecodes += 1;
    return image;
  }

  /** One latent image [4,h,w] through the session, as pixels. */
  async #run(
    latent: Float32Array,
    h: number,
    w: number,
    timings: StageTimings,
    signal: AbortSignal | undefined,
  ): Promise<PixelImage> {
    const spec = this.session.input('latent_sample') ?? this.session.signature.inputs[0];
    const feed = floatsToOrt(latent, [1, latentChannels, h, w], spec, { model: this.session.file });
    const out = await timedRun(timings, this.session, { [spec.name]: feed }, signal);
    const name = out.sample ? 'sample' : this.session.signature.outputs[0].name;
    const pixels = out[name];
    return tensorToImage(ortToFloat32(pixels, name), pixels.dims as number[], 0);
  }

  /**
   * Whether a preview wanted now is decoded by TAESD: none in flight, the decoder has not
   * failed, and one more decode (as long as the last) keeps the TAESD time within `share` of
   * the sampling time so far (`elapsedMs`, which includes the previews themselves).
   */
  admits(elapsedMs: number): boolean {
    if (this.#broken || this.#pending) return false;
    if (this.previews === 0) return true;
    const sampling = Math.max(0, elapsedMs - this.previewMs);
    return this.previewMs + this.#lastPreviewMs <= this.share * sampling;
  }

  /**
   * Decodes image 0 of the step's denoised latents [B,4,h,w] and hands the picture to `emit`
   * (a failure leaves TAESD off for the rest of the run and emits `fallback()` instead; a
   * cancellation emits nothing). Await `settled()` before the run goes on to decode.
   */
  preview(
    denoised: Float32Array,
    h: number,
    w: number,
    timings: StageTimings,
    signal: AbortSignal | undefined,
    emit: (image: PixelImage) => void,
    fallback: () => PixelImage,
  ): void {
    const slice = denoised.slice(0, latentChannels * h * w);
    const started = performance.now();
    this.#pending = this.#run(slice, h, w, timings, signal).then(
      (image) => {
        this.#lastPreviewMs = performance.now() - started;
        this.previewMs += this.#lastPreviewMs;
        this.previews += 1;
        this.#pending = null;
        emit(image);
      },
      () => {
        this.#pending = null;
        if (signal?.aborted) return;
        // A broken preview must not end the generation: latent-RGB from here on.
        this.#broken = true;
        emit(fallback());
      },
    );
  }

  /** Resolves once no preview is being decoded. */
  async settled(): Promise<void> {
    await this.#pending;
  }
}
