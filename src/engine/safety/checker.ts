// Runs a converted safety checker (src/engine/convert/emit/safety-checker.ts) on decoded images.

import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { PixelImage } from '../image/pixels';
import { ortToFloat32 } from '../tensor';
import { safetyVerdicts, type SafetyVerdict } from './decision';
import { clipImageInput } from './preprocess';

const OUTPUTS = [
  'special_cos_dist',
  'cos_dist',
  'special_care_embeds_weights',
  'concept_embeds_weights',
] as const;

/** A loaded checker: `check` gives one verdict per image; `release` frees the session. */
export class SafetyChecker {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** The input side the model takes (224 for the real checker). */
    readonly imageSize: number,
  ) {}

  /** Loads `modelFile` (a converted safety_checker/model.onnx) on the CPU. */
  static async open(modelFile: string): Promise<SafetyChecker> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(modelFile, {
        graphOptimizationLevel: 'all',
        executionProviders: ['cpu'],
      });
    } catch (e) {
      throw new EngineError(
        'model-corrupt',
        `The content filter's model ${modelFile} could not be loaded; convert the safety checker again.`,
        { file: modelFile, cause: e },
      );
    }
    const input = session.inputMetadata.find((m) => m.name === 'clip_input');
    const missing = OUTPUTS.filter((o) => !session.outputNames.includes(o));
    const side = input?.isTensor ? input.shape[3] : undefined;
    if (!input || missing.length > 0 || typeof side !== 'number') {
      await session.release();
      throw new EngineError(
        'model-unsupported',
        `${modelFile} is not a converted safety checker (it needs clip_input of a fixed size and ${OUTPUTS.join(', ')}).`,
        { file: modelFile },
      );
    }
    return new SafetyChecker(session, side);
  }

  async check(images: readonly PixelImage[]): Promise<SafetyVerdict[]> {
    const input = clipImageInput(images, this.imageSize);
    const out = await this.session.run(
      { clip_input: new ort.Tensor('float32', input.data, input.dims) },
      [...OUTPUTS],
    );
    const [specialCos, conceptCos, specialThresholds, conceptThresholds] = OUTPUTS.map((o) =>
      ortToFloat32(out[o], o),
    );
    return safetyVerdicts(
      { specialCos, conceptCos, specialThresholds, conceptThresholds },
      images.length,
    );
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
