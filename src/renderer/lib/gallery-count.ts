/** The gallery's count as a person reads it: exact, at least, or about. */

/** An estimate shown with two significant digits (12,345 -> 12,000): it is no more precise. */
export function roundEstimate(n: number): number {
  if (n < 100) return Math.round(n);
  const unit = 10 ** (Math.floor(Math.log10(n)) - 1);
  return Math.round(n / unit) * unit;
}

/**
 * "1 image", "1,234 images" (exact), "about 12,000 images" (the host's estimate, while it is
 * above what is known for sure), "2,100+ images" (a lower bound: no estimate, or one that the
 * pages loaded since have passed).
 */
export function galleryCountLabel(total: number, exact: boolean, estimate: number | null): string {
  if (exact) return `${total.toLocaleString()} image${total === 1 ? '' : 's'}`;
  if (estimate !== null && estimate > total)
    return `about ${roundEstimate(estimate).toLocaleString()} images`;
  return `${total.toLocaleString()}+ images`;
}
