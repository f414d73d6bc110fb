// The GPU benchmark's probes: can CUDA run here, and how much memory does the run take.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const round = (x: number, d = 1) => Number(x.toFixed(d));

/** Where onnxruntime-node keeps its native libraries on this platform. */
export function ortBinDir(): string {
  const main = createRequire(import.meta.url).resolve('onnxruntime-node');
  return path.join(path.dirname(main), '..', 'bin', 'napi-v6', process.platform, process.arch);
}

/**
 * Why CUDA cannot run here, or null: linux/x64, the CUDA add-on beside onnxruntime-node's binding
 * (its install script downloads it from NuGet; ONNXRUNTIME_NODE_INSTALL=skip leaves it out), and
 * an NVIDIA driver.
 */
export function cudaUnavailable(): string | null {
  if (`${process.platform}/${process.arch}` !== 'linux/x64')
    return `onnxruntime-node ships CUDA for linux/x64 only, not ${process.platform}/${process.arch}`;
  const lib = path.join(ortBinDir(), 'libonnxruntime_providers_cuda.so');
  if (!existsSync(lib))
    return `onnxruntime-node's CUDA add-on is not installed (${lib} is missing: npm install downloads it unless ONNXRUNTIME_NODE_INSTALL=skip)`;
  if (!existsSync('/proc/driver/nvidia/version')) return 'no NVIDIA driver is loaded';
  return null;
}

/** Samples nvidia-smi every 100 ms: this process's and the device's memory in use (MiB). */
export class GpuMemory {
  private child: ReturnType<typeof spawn> | null = null;
  peakProcess = 0;
  peakDevice = 0;
  seenProcess = false;
  start(): void {
    try {
      const child = spawn(
        'sh',
        [
          '-c',
          'while :; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | sed "s/^/app,/"; nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | sed "s/^/dev,/"; sleep 0.1; done',
        ],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      );
      child.stdout!.setEncoding('utf8');
      let rest = '';
      child.stdout!.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          const [kind, a, b] = line.split(',').map((s) => s.trim());
          if (kind === 'dev' && a) this.peakDevice = Math.max(this.peakDevice, Number(a) || 0);
          if (kind === 'app' && Number(a) === process.pid && b) {
            this.seenProcess = true;
            this.peakProcess = Math.max(this.peakProcess, Number(b) || 0);
          }
        }
      });
      child.on('error', () => (this.child = null));
      this.child = child;
    } catch {
      this.child = null;
    }
  }
  reset(): void {
    this.peakProcess = 0;
    this.peakDevice = 0;
  }
  read(): { processMiB: number | null; deviceMiB: number | null } {
    if (!this.child) return { processMiB: null, deviceMiB: null };
    return {
      processMiB: this.seenProcess ? this.peakProcess : null,
      deviceMiB: this.peakDevice || null,
    };
  }
  stop(): void {
    this.child?.kill();
  }
}

/** Peak resident set between start() and read() (10 ms samples). */
export function rssSampler(): { read: () => number; stop: () => void } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  return {
    read: () => round(Math.max(peak, process.memoryUsage().rss) / 2 ** 20),
    stop: () => clearInterval(timer),
  };
}

export function gpuName(): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader']);
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.on('error', () => resolve(null));
    child.on('close', () => resolve(out.trim() || null));
  });
}
