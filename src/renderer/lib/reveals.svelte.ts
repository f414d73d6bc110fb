import { SvelteSet } from 'svelte/reactivity';
import type { ContentFilterState } from '../../shared';

/** Anything shown that the content filter may have flagged (a gallery item, an image ref). */
export interface Checked {
  imageId: string;
  contentFilter?: ContentFilterState | undefined;
}

/**
 * Which flagged images the person chose to see (issue 18): a flagged image is shown blurred
 * everywhere (gallery, details, canvas, results, compare) until revealed. Per image and per
 * session: the set lives in memory only, so every start blurs them again.
 */
export class Reveals {
  readonly #shown = new SvelteSet<string>();

  /** True while `image` is flagged and not revealed: show it blurred. */
  hidden(image: Checked | null | undefined): boolean {
    return image?.contentFilter === 'flagged' && !this.#shown.has(image.imageId);
  }

  reveal(imageId: string): void {
    this.#shown.add(imageId);
  }

  /** Blurs a revealed image again. */
  hide(imageId: string): void {
    this.#shown.delete(imageId);
  }
}
