// `npm run bench:server [-- --clients N --seconds N --interval MS --threads N]`: how the headless server
// answers while it works. The real host (SQLite in a temp folder, the engine worker, the
// built-in model in resources/models/latent-shapes) serves over a real loopback socket; a second
// thread connects N WebSocket clients (default 200) that all receive every event (progress and
// previews included), and one of them makes a cheap call (getAppInfo) every --interval ms.
// Two phases in one run, so the ratio is taken on the same machine at the same moment:
// - idle: one client, no generation;
// - loaded: N clients while a generation runs the whole time.
// Reported per phase: the call's round trip p50/p99/max and the server's event-loop delay
// (perf_hooks.monitorEventLoopDelay, beyond its 10 ms period) p50/p99/max, in ms; events each client received; and the
// server's peak RSS. One JSON document on stdout (also bench-results/server-<date>.json),
// progress on stderr.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';
import { StudioHost } from '../../src/main/api';
import { startServer, wsProtocol } from '../../src/main/server/server';
import { bundleEntry } from '../../tests/integration/bundle';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (line: string) => process.stderr.write(`bench:server: ${line}\n`);

interface ClientJob {
  url: string;
  token: string;
  clients: number;
  seconds: number;
  intervalMs: number;
}

interface ClientReport {
  calls: number[];
  eventsPerClient: number;
  connected: number;
  closedEarly: number;
}

/**
 * The histogram records the time between its timer's ticks, which includes the timer's own
 * period; the lag is what comes on top of it.
 */
const delayResolutionMs = 10;
const lag = (nanoseconds: number) => ms(Math.max(0, nanoseconds / 1e6 - delayResolutionMs));

const quantile = (sorted: number[], q: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
const ms = (v: number) => Math.round(v * 100) / 100;

// ---------------------------------------------------------------------------------------------
// The clients' thread: its own event loop, so the clients do not sit on the server's.

async function runClients(job: ClientJob): Promise<ClientReport> {
  const wsUrl = `${job.url.replace('http', 'ws')}/api/ws`;
  const sockets: WebSocket[] = [];
  let events = 0;
  let closedEarly = 0;
  for (let i = 0; i < job.clients; i++) {
    const ws = new WebSocket(wsUrl, [wsProtocol, `token.${job.token}`]);
    ws.on('message', (data) => {
      // Every client parses what it gets, as the studio does.
      const message = JSON.parse(data.toString()) as { type: string };
      if (message.type === 'event') events++;
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.on('close', () => closedEarly++);
    sockets.push(ws);
  }
  const caller = sockets[0];
  const pending = new Map<number, (t: number) => void>();
  caller.on('message', (data) => {
    const m = JSON.parse(data.toString()) as { type: string; id?: number };
    if (m.type === 'result' && m.id !== undefined) pending.get(m.id)?.(performance.now());
  });
  const calls: number[] = [];
  const end = performance.now() + job.seconds * 1000;
  for (let id = 1; performance.now() < end; id++) {
    const sent = performance.now();
    const answered = await new Promise<number>((resolve) => {
      pending.set(id, resolve);
      caller.send(JSON.stringify({ type: 'call', id, method: 'getAppInfo' }));
    });
    pending.delete(id);
    calls.push(answered - sent);
    await new Promise((r) => setTimeout(r, job.intervalMs));
  }
  const connected = sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
  for (const s of sockets) s.terminate();
  return { calls, eventsPerClient: events / job.clients, connected, closedEarly };
}

if (!isMainThread) {
  runClients(workerData as ClientJob).then(
    (report) => parentPort!.postMessage(report),
    (err: unknown) => parentPort!.postMessage({ error: String(err) }),
  );
}

// ---------------------------------------------------------------------------------------------
// The server's thread.

function clientsThread(job: ClientJob): Promise<ClientReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job });
    worker.once('message', (m: ClientReport | { error: string }) =>
      'error' in m ? reject(new Error(m.error)) : resolve(m),
    );
    worker.once('error', reject);
  });
}

async function phase(name: string, job: ClientJob): Promise<Record<string, number | string>> {
  log(`${name}: ${job.clients} client(s) for ${job.seconds} s`);
  const delay = monitorEventLoopDelay({ resolution: delayResolutionMs });
  delay.enable();
  const report = await clientsThread(job);
  delay.disable();
  const calls = [...report.calls].sort((a, b) => a - b);
  return {
    phase: name,
    clients: job.clients,
    calls: calls.length,
    callP50Ms: ms(quantile(calls, 0.5)),
    callP99Ms: ms(quantile(calls, 0.99)),
    callMaxMs: ms(calls[calls.length - 1]),
    loopDelayP50Ms: lag(delay.percentile(50)),
    loopDelayP99Ms: lag(delay.percentile(99)),
    loopDelayMaxMs: lag(delay.max),
    eventsPerClient: Math.round(report.eventsPerClient),
    stillConnected: report.connected,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '20' },
      interval: { type: 'string', default: '20' },
      threads: { type: 'string' },
    },
    strict: true,
  });
  const clients = Number(values.clients);
  const seconds = Number(values.seconds);
  const intervalMs = Number(values.interval);
  if (![clients, seconds, intervalMs].every((n) => Number.isFinite(n) && n > 0))
    throw new Error('--clients, --seconds and --interval must be positive numbers.');

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-bench-server-'));
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: 'bench',
    resourcesDir: path.join(repoRoot, 'resources'),
    workerPath: await bundleEntry('src/engine/worker.ts', 'bench-engine-worker'),
    log: () => {},
  });
  const server = await startServer({ host, port: 0 });
  try {
    await host.library.ready;
    const model = host.library.listModels().find((m) => m.builtIn && m.status === 'ok');
    if (!model) throw new Error('the built-in model (resources/models/latent-shapes) is missing.');
    // The engine's intra-op threads: the studio's setting (physical cores) unless given.
    if (values.threads) host.service.updateSettings({ threads: Number(values.threads) });
    const job = { url: server.url, token: server.token, seconds, intervalMs };

    const idle = await phase('idle', { ...job, clients: 1 });

    // A generation that outlasts the phase: many steps, many images; cancelled afterwards.
    await host.service.enqueue({
      settings: {
        model: model.id,
        prompt: 'a red circle on a blue background',
        seed: 1,
        sampler: 'euler',
        steps: 200,
        width: 64,
        height: 64,
        batchCount: 100,
      } as never,
    });
    const started = Date.now();
    while (host.jobs.state().jobs.every((j) => j.state !== 'running')) {
      if (Date.now() - started > 60_000) throw new Error('the generation did not start.');
      await new Promise((r) => setTimeout(r, 50));
    }
    const loaded = await phase('loaded', { ...job, clients });
    const stillRunning = host.jobs.state().jobs.some((j) => j.state === 'running');
    await host.service.cancelAll(undefined as never);

    const result = {
      benchmark: 'server',
      date: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? 'unknown',
        loadAverage1m: Math.round(os.loadavg()[0] * 100) / 100,
        memoryGiB: Math.round(os.totalmem() / 2 ** 30),
        node: process.version,
      },
      intervalMs,
      engineThreads: host.settings.get().threads,
      generationRanThroughout: stillRunning,
      phases: [idle, loaded],
      serverPeakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    };
    const text = JSON.stringify(result, null, 2);
    console.log(text);
    const outDir = path.join(repoRoot, 'bench-results');
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, `server-${result.date.replace(/[:.]/g, '-')}.json`), text);
  } finally {
    await server.close();
    await host.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

if (isMainThread) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      log(err instanceof Error ? err.message : String(err));
      process.exit(1);
    },
  );
}
