import { describeEngineError } from '../engine/describe-error';
import { StudioError } from '../shared';

/** A mistake in the command line: exit code 2 with a pointer to --help, never a stack. */
export class UsageError extends Error {}

/**
 * Runs a command-line entry and exits with its code: 2 for usage mistakes (ours and
 * util.parseArgs'), 1 with a StudioError's sentence or the engine's one-sentence description
 * for anything else.
 */
export function runCli(name: string, main: (argv: string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      if (
        err instanceof UsageError ||
        (err as { code?: string })?.code?.startsWith?.('ERR_PARSE_ARGS')
      ) {
        console.error(`${name}: ${(err as Error).message}`);
        console.error('Run with --help for the options.');
        process.exit(2);
      }
      // The host's own sentences (a LoRA not in its folder, …) are said as they are.
      const message = err instanceof StudioError ? err.message : describeEngineError(err).message;
      console.error(`${name}: ${message}`);
      process.exit(1);
    },
  );
}
