import { StudioError } from '../../shared';

/** The fields a person can get wrong, named as the studio shows them. */
const fieldNames: Record<string, string> = {
  prompt: 'The prompt',
  negativePrompt: 'The negative prompt',
  seed: 'The seed',
  steps: 'Steps',
  guidance: 'Guidance',
  width: 'The width',
  height: 'The height',
  batchSize: 'The batch size',
  batchCount: 'The batch count',
  strength: 'Strength',
  path: 'The path',
  name: 'The name',
  tags: 'The tags',
  text: 'The search text',
  hiresSteps: 'Second-pass steps',
  hiresStrength: 'Second-pass strength',
  factor: 'The scale',
  tile: 'The tile size',
  noiseLevel: 'The noise level',
};

/**
 * The host's refusal of a field ('Invalid argument "settings.prompt": must be at most 20000
 * characters.') in a person's words ('The prompt must be at most 20000 characters.').
 */
function describeInvalid(message: string): string {
  const m = /^Invalid argument "([^"]+)": (.*)$/s.exec(message);
  if (!m) return message;
  const field = m[1].split('.').at(-1) ?? m[1];
  const name = fieldNames[field];
  return name ? `${name} ${m[2]}` : `The value of "${field}" ${m[2]}`;
}

/**
 * Turns any failure into words for a person. The host already writes its messages for people;
 * the code decides the lead-in so that "what happened" comes before "why". With `context` (what
 * the person tried: "Could not add the model") that is the lead-in, and the code's own is left
 * out so that it is not said twice.
 */
export function describeError(err: unknown, context?: string): string {
  const text = describeBare(err, !context);
  return context ? `${context}: ${text}` : text;
}

function describeBare(err: unknown, leadIn: boolean): string {
  if (err instanceof StudioError) {
    if (err.code === 'invalid-argument') return describeInvalid(err.message);
    if (!leadIn && (err.code === 'model' || err.code === 'internal' || err.code === 'unavailable'))
      return err.message;
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
