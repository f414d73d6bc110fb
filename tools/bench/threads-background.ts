// `npm run bench:threads -- --background [--runs N --work N]`: what a generation costs a person
// working in another program, per background policy (src/engine/models/priority.ts). The
// "foreground task" is a fixed amount of single-threaded CPU work in another process (a loop of
// --work million iterations), timed alone and beside a generation loop (the mid UNet, CFG batch
// of 2, run over and over) under each policy; the generation's ms per step is timed meanwhile.
// Policies and alone runs are interleaved round by round, so all see the same machine.
// The nice rows lower this process's engine threads and raise them back, which needs root (or
// CAP_SYS_NICE) on Linux; the bench says so instead of measuring a ratchet.
import { spawn } from 'node:child_process';
import os from 'node:os';
import type * as ort from 'onnxruntime-node';
import { BACKGROUND_NICENESS, engineThreads } from '../../src/engine/models/priority';

export interface BackgroundBenchInput {
  sessions: { on: ort.InferenceSession; off: ort.InferenceSession };
  feeds: Record<string, ort.Tensor>;
  runs: number;
  /** Million iterations of the foreground task. */
  work: number;
}

/** One policy: which session, what niceness, and an optional pause after each step. */
interface Policy {
  name: string;
  what: string;
  session: 'on' | 'off';
  niceness: number;
  /** Sleep this many times the step's own time after each step (0: none). */
  pause: number;
}

const policies: Policy[] = [
  {
    name: 'full',
    what: 'spinning on, normal priority (a session loaded while quiet)',
    session: 'on',
    niceness: 0,
    pause: 0,
  },
  { name: 'no-spin', what: 'spinning off, normal priority', session: 'off', niceness: 0, pause: 0 },
  {
    name: 'nice',
    what: `spinning on (already loaded), nice ${BACKGROUND_NICENESS}`,
    session: 'on',
    niceness: BACKGROUND_NICENESS,
    pause: 0,
  },
  {
    name: 'gentle',
    what: `spinning off, nice ${BACKGROUND_NICENESS}`,
    session: 'off',
    niceness: BACKGROUND_NICENESS,
    pause: 0,
  },
  {
    name: 'pause',
    what: 'spinning off, normal priority, a pause as long as each step',
    session: 'off',
    niceness: 0,
    pause: 1,
  },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The foreground task in its own process, at normal priority; resolves with its own time. */
function foreground(work: number): Promise<number> {
  const code = `const t=performance.now();let x=0;for(let i=0;i<${work}e6;i++)x+=Math.sqrt(i^x);process.stdout.write(String(performance.now()-t)+(x<0?'':''))`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  // A child starts with the nice value of the thread that forked it: put it back to normal.
  if (child.pid !== undefined) os.setPriority(child.pid, 0);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.on('exit', (code) =>
      code === 0 ? resolve(Number(out)) : reject(new Error(`foreground task exited ${code}`)),
    ),
  );
}

/** Runs `session` step after step until `done` settles; returns the ms of each step. */
async function generateUntil(
  session: ort.InferenceSession,
  feeds: Record<string, ort.Tensor>,
  pause: number,
  done: Promise<unknown>,
): Promise<{ run: number; cycle: number }[]> {
  let finished = false;
  void done.finally(() => (finished = true));
  const steps: { run: number; cycle: number }[] = [];
  while (!finished) {
    const t0 = performance.now();
    await session.run(feeds);
    const run = performance.now() - t0;
    if (pause > 0) await new Promise((r) => setTimeout(r, run * pause));
    steps.push({ run, cycle: performance.now() - t0 });
  }
  return steps;
}

export async function backgroundBench(input: BackgroundBenchInput): Promise<object> {
  const { sessions, feeds, runs, work } = input;
  const probe = engineThreads.apply(BACKGROUND_NICENESS);
  const back = engineThreads.apply(0);
  const canNice = !probe.refused && !back.refused;
  const used = canNice ? policies : policies.filter((p) => p.niceness === 0);
  const alone: number[] = [];
  const engineAlone: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const fg: Record<string, number[]> = {};
  const step: Record<string, number[]> = {};
  for (const s of Object.values(sessions)) await s.run(feeds); // warm-up
  for (let r = 0; r < runs; r++) {
    alone.push(await foreground(work));
    for (const k of ['on', 'off'] as const) {
      const t0 = performance.now();
      await sessions[k].run(feeds);
      engineAlone[k].push(performance.now() - t0);
    }
    // Rotate the order each round, so no policy always follows another.
    const order = used.map((_, i) => used[(i + r) % used.length]!);
    for (const p of order) {
      engineThreads.apply(p.niceness);
      try {
        const task = foreground(work);
        const steps = await generateUntil(sessions[p.session], feeds, p.pause, task);
        (fg[p.name] ??= []).push(await task);
        // The step in flight when the task ended ran partly alone: left out.
        const beside = steps.length > 1 ? steps.slice(0, -1) : steps;
        (step[p.name] ??= []).push(median(beside.map((s) => s.cycle)));
      } finally {
        engineThreads.apply(0);
      }
    }
  }
  const aloneMs = median(alone);
  return {
    foregroundWorkMillions: work,
    foregroundAloneMs: Math.round(aloneMs),
    foregroundAloneRunsMs: alone.map(Math.round),
    stepAloneMs: {
      spinningOn: Math.round(median(engineAlone.on)),
      spinningOff: Math.round(median(engineAlone.off)),
    },
    niceRows: canNice ? 'measured' : `left out: ${probe.refused ?? back.refused}`,
    policies: used.map((p) => ({
      policy: p.name,
      what: p.what,
      foregroundMs: Math.round(median(fg[p.name]!)),
      foregroundSlowdown: Number((median(fg[p.name]!) / aloneMs).toFixed(2)),
      foregroundRunsMs: fg[p.name]!.map(Math.round),
      // A step's wall time beside the task, its pause included.
      stepMs: Math.round(median(step[p.name]!)),
      stepRunsMs: step[p.name]!.map(Math.round),
    })),
  };
}
