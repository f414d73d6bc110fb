// A ControlNet unit's infotext both ways, and which model families a ControlNet fits (issue 19).
import { describe, expect, it } from 'vitest';
import {
  controlNetFamilyProblem,
  controlNetInfotext,
  parseControlNetInfotext,
} from '../../src/main/models/controlnets';
import { ControlNetUnit } from '../../src/shared/generation';
import { ControlPreviewRequest } from '../../src/shared/controlnets';

describe('ControlNet N infotext', () => {
  it('reads back what we write', () => {
    const unit = ControlNetUnit.parse({
      model: 'control_canny.safetensors',
      image: 'abc',
      preprocessor: 'canny',
      lowThreshold: 50,
      highThreshold: 150,
      weight: 0.75,
      start: 0.2,
      end: 0.8,
      guess: true,
    });
    const text = controlNetInfotext(unit, 'control_canny', 'f3b55805aa');
    expect(parseControlNetInfotext(text)).toEqual({
      model: 'control_canny',
      hash: 'f3b55805',
      unit: {
        preprocessor: 'canny',
        lowThreshold: 50,
        highThreshold: 150,
        weight: 0.75,
        start: 0.2,
        end: 0.8,
        guess: true,
      },
      unsupportedModule: null,
    });
  });

  it("reads sd-webui-controlnet's own fields and leaves out what is out of range", () => {
    const read = parseControlNetInfotext(
      'Module: openpose_full, Model: control_v11p_sd15_openpose [cab727d4], Weight: 3, Resize Mode: Crop and Resize, Processor Res: 512, Guidance Start: 0.9, Guidance End: 0.1, Pixel Perfect: True, Control Mode: Balanced',
    );
    expect(read).toEqual({
      model: 'control_v11p_sd15_openpose',
      hash: 'cab727d4',
      // Weight 3 is over 2, and start after end: neither taken.
      unit: { guess: false },
      unsupportedModule: 'openpose_full',
    });
    expect(parseControlNetInfotext('Module: none, Model: None, Weight: 1')).toEqual({
      model: null,
      hash: null,
      unit: { preprocessor: 'none', weight: 1 },
      unsupportedModule: null,
    });
  });
});

describe('controlNetFamilyProblem', () => {
  const cn = (family: 'sd1' | 'sd2' | 'sdxl') => ({ name: 'cn', family });
  it('lets a ControlNet guide its own family and says why not another', () => {
    expect(controlNetFamilyProblem(cn('sd1'), { name: 'm', family: 'sd1' })).toBeNull();
    expect(controlNetFamilyProblem(cn('sd1'), { name: 'm', family: 'inpaint' })).toBeNull();
    expect(controlNetFamilyProblem(cn('sd2'), { name: 'm', family: 'sd2-v' })).toBeNull();
    expect(controlNetFamilyProblem(cn('sdxl'), { name: 'm', family: 'sdxl-turbo' })).toBeNull();
    expect(controlNetFamilyProblem(cn('sd1'), { name: 'm', family: null })).toBeNull();
    expect(controlNetFamilyProblem(cn('sd1'), { name: 'xl', family: 'sdxl' })).toBe(
      'The ControlNet cn is for SD 1.x models, but xl is SDXL: choose a ControlNet made for it.',
    );
    expect(controlNetFamilyProblem(cn('sdxl'), { name: 'v1', family: 'sd1' })).toMatch(
      /is for SDXL models, but v1 is SD 1\.x/,
    );
  });
});

describe('ControlPreviewRequest', () => {
  it('takes an id and a size up to 2048, and refuses the rest with its reason', () => {
    const ok = { image: 'abc', preprocessor: 'canny', width: 512, height: 768 };
    expect(ControlPreviewRequest.parse(ok)).toMatchObject({
      lowThreshold: 100,
      highThreshold: 200,
    });
    expect(ControlPreviewRequest.safeParse({ ...ok, width: 4096 }).success).toBe(false);
    expect(ControlPreviewRequest.safeParse({ ...ok, image: '../x.png' }).success).toBe(false);
    expect(ControlPreviewRequest.safeParse({ ...ok, preprocessor: 'depth' }).success).toBe(false);
    const order = ControlPreviewRequest.safeParse({ ...ok, lowThreshold: 9, highThreshold: 8 });
    expect(order.error?.issues[0]?.message).toBe('the low threshold must not exceed the high one');
  });
});
