import { z } from 'zod';

export const AppInfo = z.object({
  name: z.string(),
  version: z.string(),
  /** 'desktop' inside Electron, 'headless' when served over loopback HTTP. */
  shell: z.enum(['desktop', 'headless']),
  platform: z.string(),
  arch: z.string(),
  versions: z.record(z.string(), z.string()),
  dataDir: z.string(),
});
export type AppInfo = z.infer<typeof AppInfo>;

export const ProviderInfo = z.object({
  name: z.string(),
  /** Shipped inside onnxruntime-node for this platform. */
  bundled: z.boolean(),
});
export type ProviderInfo = z.infer<typeof ProviderInfo>;

export const EngineStatus = z.object({
  state: z.enum(['starting', 'idle', 'loading', 'generating', 'error']),
  onnxruntime: z.string(),
  providers: z.array(ProviderInfo),
  /** The provider sessions actually run on, once a model is loaded. */
  activeProvider: z.string().nullable(),
  /** Why the preferred provider was not used, if it was not. */
  fallbackReason: z.string().nullable(),
  message: z.string().nullable(),
});
export type EngineStatus = z.infer<typeof EngineStatus>;
