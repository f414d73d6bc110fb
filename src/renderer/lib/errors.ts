import { StudioError } from '../../shared';

/**
 * Turns any failure into words for a person. The host already writes its messages for people;
 * the code decides the lead-in so that "what happened" comes before "why".
 */
export function describeError(err: unknown): string {
  if (err instanceof StudioError) {
    switch (err.code) {
      case 'disk-full':
        return `The disk is full: ${err.message} Free some space and try again.`;
      case 'model':
        return `The model could not be used: ${err.message}`;
      case 'unavailable':
        return `Not available right now: ${err.message}`;
      case 'unauthorized':
      case 'forbidden':
        return `The studio host refused the request: ${err.message} Reopen the address printed by the server.`;
      case 'internal':
        return `Something went wrong in the studio host: ${err.message}`;
      default:
        return err.message;
    }
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isUnavailable(err: unknown): boolean {
  return err instanceof StudioError && err.code === 'unavailable';
}
