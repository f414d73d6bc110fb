import * as ort from 'onnxruntime-node';

export interface RuntimeInfo {
  onnxruntime: string;
  providers: { name: string; bundled: boolean }[];
}

/** What this onnxruntime-node build offers on this platform, before any model is loaded. */
export function getRuntimeInfo(): RuntimeInfo {
  const backends = ort.listSupportedBackends?.() ?? [{ name: 'cpu', bundled: true }];
  return {
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common ?? 'unknown',
    providers: backends.map((b) => ({ name: b.name, bundled: b.bundled })),
  };
}
