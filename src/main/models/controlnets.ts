/**
 * ControlNet units as the infotext records them: AUTOMATIC1111's sd-webui-controlnet writes one
 * `ControlNet N: "Module: ..., Model: name [hash], Weight: ..., ..."` field per enabled unit; we
 * write the same keys so that A1111 and tools reading its PNGs see the unit.
 */
import type { ControlNetUnit } from '../../shared/generation';

/** The value of the `ControlNet N` field for `unit`, whose model file is `name` with `sha256`. */
export function controlNetInfotext(unit: ControlNetUnit, name: string, sha256: string): string {
  const canny = unit.preprocessor === 'canny';
  const fields: [string, string | number][] = [
    ['Module', unit.preprocessor],
    // sd-webui-controlnet names a model by its first 8 hex digits of sha256.
    ['Model', `${name} [${sha256.slice(0, 8)}]`],
    ['Weight', unit.weight],
    // We resize the control image to the output size without cropping: its "Just Resize".
    ['Resize Mode', 'Just Resize'],
    ...(canny
      ? ([
          ['Threshold A', unit.lowThreshold],
          ['Threshold B', unit.highThreshold],
        ] as [string, number][])
      : []),
    ['Guidance Start', unit.start],
    ['Guidance End', unit.end],
    ['Control Mode', unit.guess ? 'ControlNet is more important' : 'Balanced'],
  ];
  return fields.map(([k, v]) => `${k}: ${v}`).join(', ');
}
