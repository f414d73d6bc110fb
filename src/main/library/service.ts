import { StudioError } from '../../shared';
import { type HostContext, type LibraryMethods, libraryMethodNames } from '../services';

/**
 * The library: SQLite history, image store, models registry, gallery queries.
 * SCAFFOLD: being implemented (issue #5); every method answers 'unavailable' until then.
 */
export class Library {
  readonly methods: LibraryMethods;

  constructor(readonly context: HostContext) {
    const notYet = (name: string) => () => {
      throw new StudioError('unavailable', `${name} is not available yet.`);
    };
    this.methods = Object.fromEntries(
      libraryMethodNames.map((n) => [n, notYet(n)]),
    ) as unknown as LibraryMethods;
  }

  close(): void {}
}
