import { type Settings, StudioError } from '../../shared';
import type { Library } from '../library/service';
import { type HostContext, type JobMethods, jobMethodNames } from '../services';

/**
 * The durable job queue driving the engine worker.
 * SCAFFOLD: being implemented (issue #5); every method answers 'unavailable' until then.
 */
export class JobService {
  readonly methods: JobMethods;

  constructor(
    readonly context: HostContext,
    readonly library: Library,
  ) {
    const notYet = (name: string) => () => {
      throw new StudioError('unavailable', `${name} is not available yet.`);
    };
    this.methods = Object.fromEntries(
      jobMethodNames.map((n) => [n, notYet(n)]),
    ) as unknown as JobMethods;
  }

  settingsChanged(_settings: Settings): void {}

  async close(): Promise<void> {}
}
