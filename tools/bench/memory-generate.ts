// The child of `npm run bench:memory -- --generate DIR`: one whole generation of a model folder,
// with the peak resident memory of each phase, so a generation's peak can be put on the part
// that holds it (session creation, text encoders, UNet call, VAE decode).
//
// Phases, in order: `load` (the engine's load: UNet and VAE decoder sessions), `text-sessions`
// (the text encoders' sessions, created here ahead of the generation so their creation is its
// own phase), then every session.run of the generation (`text_encoder`, `text_encoder_2`,
// `unet`, `vae_decoder`, each call its own phase) and whatever runs between them (`between`:
// the sampler, the pixels). At each boundary the process's peak RSS (VmHWM) is read and reset
// to the current RSS (/proc/self/clear_refs 5, proc(5)), so each phase's peak is its own.
// Linux only.
import { readFileSync, writeFileSync } from 'node:fs';
import { DiffusionEngine } from '../../src/engine';
import type { ComponentName, ComponentSession } from '../../src/engine/models';
import type { AttentionCount } from '../../src/engine/models/attention-rewrite';
import { GenerationSettings } from '../../src/shared/generation';

const GiB = 2 ** 30;
const round = (x: number, d = 2) => Number(x.toFixed(d));

/** A /proc/self/status field in bytes (VmHWM: peak resident set; VmRSS: now). */
export function statusBytes(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
    readFileSync('/proc/self/status', 'utf8'),
  );
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resets VmHWM to the current RSS, so the next peak read is the next phase's own. */
export function resetPeak(): void {
  writeFileSync('/proc/self/clear_refs', '5');
}

export interface PhasePeak {
  phase: string;
  /** Wall time of the phase. */
  ms: number;
  /** Peak RSS during the phase, and RSS at its end, GiB. */
  peakGiB: number;
  endGiB: number;
}

export interface GenerationMemory {
  model: string;
  family: string;
  size: number;
  steps: number;
  guidance: number;
  memoryBudgetMb: number | null;
  /** Whether the engine released the text encoders before the UNet ran (memory.ts). */
  textEncodersReleased: boolean;
  /** Attention of the UNet as loaded (LoadedModel.attention). */
  unetAttention: AttentionCount | null;
  phases: PhasePeak[];
  /** The highest phase peak, and the phase that holds it. */
  peakGiB: number;
  peakPhase: string;
  totalMs: number;
}

/** Times and peaks of consecutive phases (see the file comment). */
class PhaseClock {
  readonly phases: PhasePeak[] = [];
  #started = performance.now();

  constructor(private readonly log: (msg: string) => void) {
    resetPeak();
  }

  /** Ends the phase running now under `phase` and starts the next one. */
  mark(phase: string): void {
    const now = performance.now();
    const p = {
      phase,
      ms: Math.round(now - this.#started),
      peakGiB: round(statusBytes('VmHWM') / GiB),
      endGiB: round(statusBytes('VmRSS') / GiB),
    };
    this.phases.push(p);
    this.log(`${p.phase}: ${p.ms} ms, peak ${p.peakGiB} GiB, then ${p.endGiB} GiB`);
    resetPeak();
    this.#started = performance.now();
  }
}

/** Every run of `s` becomes its own phase (what ran before it ends as `between`). */
function instrument(s: ComponentSession, clock: PhaseClock): void {
  const run = s.run.bind(s);
  s.run = async (feeds, signal) => {
    clock.mark('between');
    try {
      return await run(feeds, signal);
    } finally {
      clock.mark(s.name);
    }
  };
}

export async function measureGeneration(
  o: {
    model: string;
    size: number;
    steps: number;
    guidance: number;
    threads?: number;
    /** EngineOptions.memoryBudgetMb (a small one makes the text encoders give way). */
    memoryBudgetMb?: number;
    /** EngineOptions.optimizedCacheDir: a second run creates its sessions from the cache. */
    optimizedCacheDir?: string;
  },
  log: (msg: string) => void,
): Promise<GenerationMemory> {
  const started = performance.now();
  const engine = new DiffusionEngine({
    previewEvery: 0,
    ...(o.threads ? { threads: o.threads } : {}),
    ...(o.memoryBudgetMb ? { memoryBudgetMb: o.memoryBudgetMb } : {}),
    ...(o.optimizedCacheDir ? { optimizedCacheDir: o.optimizedCacheDir } : {}),
  });
  const clock = new PhaseClock(log);
  const model = await engine.load(o.model);
  clock.mark('load');
  const names: ComponentName[] = model.family.sdxlConditioning
    ? ['text_encoder', 'text_encoder_2']
    : ['text_encoder'];
  const sessions = [];
  for (const n of names) sessions.push(await model.session(n));
  clock.mark('text-sessions');
  for (const s of [
    ...sessions,
    await model.session('unet'),
    await model.session(model.decoderName),
  ])
    instrument(s, clock);
  const settings = GenerationSettings.parse({
    model: 'bench',
    prompt: 'a lighthouse at dusk',
    seed: 1,
    sampler: 'euler',
    steps: o.steps,
    guidance: o.guidance,
    width: o.size,
    height: o.size,
  });
  await engine.generate({ modelDir: o.model, settings });
  clock.mark('between');
  await engine.release();
  const top = clock.phases.reduce((a, b) => (b.peakGiB > a.peakGiB ? b : a));
  return {
    model: o.model,
    family: model.family.family,
    size: o.size,
    steps: o.steps,
    guidance: o.guidance,
    memoryBudgetMb: o.memoryBudgetMb ?? null,
    textEncodersReleased: !sessions.every(
      (s) => model.attention[s.name as ComponentName] !== undefined,
    ),
    unetAttention: model.attention.unet ?? null,
    phases: clock.phases,
    peakGiB: top.peakGiB,
    peakPhase: top.phase,
    totalMs: Math.round(performance.now() - started),
  };
}
