import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { StudioHost } from '../api';
import { defaultDataDir } from '../paths';
import { appVersion } from '../version';
import { isLoopbackHost, startServer } from './server';

const usage = `Usage: npm run serve -- [--port N] [--host ADDRESS] [--data-dir DIR]

Serves Latent Studio on http://127.0.0.1:7860 (loopback only). Open the printed URL: it
carries a token that is new on every launch. --host binds another address (say 0.0.0.0 for a
GPU box on your network); anyone who can reach it and has the token can use the studio.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '7860' },
      host: { type: 'string', default: '127.0.0.1' },
      'data-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`--port must be 0-65535, not "${values.port}".`);
  const hostname = values.host!;
  if (!isLoopbackHost(hostname)) {
    console.warn(
      `Warning: serving on ${hostname}, which is not a loopback address. Anyone who can reach this machine and has the token can use the studio and its files.`,
    );
  }
  const dataDir = path.resolve(
    values['data-dir'] ?? process.env.LATENT_STUDIO_DATA_DIR ?? defaultDataDir(),
  );
  const here = path.dirname(fileURLToPath(import.meta.url));
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: appVersion,
    // The built-in models live in resources/models; tests may point elsewhere.
    resourcesDir: path.resolve(
      process.env.LATENT_STUDIO_RESOURCES_DIR ?? path.join(here, '..', '..', 'resources'),
    ),
    workerPath: path.join(here, 'engine-worker.mjs'),
  });
  const rendererDir = path.join(here, '..', 'renderer');
  const server = await startServer({
    host,
    port,
    hostname,
    rendererDir,
    log: (line) => console.error(line),
  });
  console.log(`Latent Studio ${appVersion} is serving the studio at ${server.studioUrl}`);
  console.log(`Data folder: ${dataDir}`);

  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    await server.close();
    await host.close();
    process.exit(0);
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string })?.code;
  if (code === 'EADDRINUSE')
    console.error('Latent Studio: that port is already in use; pick another with --port.');
  else console.error(`Latent Studio: ${message}`);
  process.exit(1);
});
