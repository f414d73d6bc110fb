import { getContext, setContext } from 'svelte';
import type { Studio } from './studio.svelte';

const studioKey = Symbol('studio');

/** The root component provides the studio; every component below reads it here. */
export function provideStudio(studio: Studio): Studio {
  return setContext(studioKey, studio);
}

export function useStudio(): Studio {
  const studio = getContext<Studio | undefined>(studioKey);
  if (!studio) throw new Error('useStudio() called outside the studio');
  return studio;
}
