import { describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared';
import { describeError } from '../../src/renderer/lib/errors';

// What a person reads when something fails: their words, the lead-in said once.
describe('describeError', () => {
  it("names the field a person filled in, not the request's path", () => {
    const err = new StudioError(
      'invalid-argument',
      'Invalid argument "settings.prompt": must be at most 20000 characters.',
    );
    expect(describeError(err)).toBe('The prompt must be at most 20000 characters.');
    expect(
      describeError(
        new StudioError('invalid-argument', 'Invalid argument "settings.upscale.tile": too big.'),
      ),
    ).toBe('The tile size too big.');
    expect(
      describeError(new StudioError('invalid-argument', 'Invalid argument "x.zeta": is wrong.')),
    ).toBe('The value of "zeta" is wrong.');
  });

  it('says the lead-in once when the studio gives its own', () => {
    const err = new StudioError('model', 'The folder has no model_index.json.');
    expect(describeError(err)).toBe(
      'The model could not be used: The folder has no model_index.json.',
    );
    expect(describeError(err, 'Could not add the model')).toBe(
      'Could not add the model: The folder has no model_index.json.',
    );
  });

  it('keeps the advice of codes that have some, with or without a lead-in', () => {
    const err = new StudioError('disk-full', 'No space left for the image.');
    expect(describeError(err, 'Could not save')).toBe(
      'Could not save: The disk is full: No space left for the image. Free some space and try again.',
    );
  });
});
