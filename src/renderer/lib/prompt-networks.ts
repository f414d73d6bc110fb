/**
 * LoRA tags and embedding names in the prompt field: where they are (for the highlight), what
 * they cost in tokens, which are missing from the folders, and the edits the picker and the
 * weight slider make. Pure functions over text; the state lives in networks.svelte.ts.
 *
 * Costs as A1111 counts them: a `<lora:…>` tag is removed before tokenizing (0 tokens); an
 * embedding stands for its vectors, one token each, whatever its name would tokenize to.
 */
import {
  type NetworkList,
  type NetworkTag,
  findEmbeddingWords,
  findLoraFile,
  formatLoraTag,
  parseNetworkTags,
} from '../../shared';
import type { PromptSegment } from './prompt';

export interface PromptMark {
  start: number;
  end: number;
  kind: 'lora' | 'embedding' | 'unsupported';
  name: string;
  /** Not in the folder (LoRAs; an unknown tag kind is never "found"). */
  missing: boolean;
  /** Tokens it costs in the 75-token chunks. */
  cost: number;
  /** What hovering it says. */
  title: string;
}

/** The tags and embedding words of `text`, in order. Without a list, nothing is marked missing. */
export function promptMarks(text: string, list: NetworkList | null): PromptMark[] {
  const marks: PromptMark[] = [];
  for (const t of parseNetworkTags(text).tags) {
    if (t.kind !== 'lora') {
      marks.push({
        start: t.start,
        end: t.end,
        kind: 'unsupported',
        name: t.name,
        missing: true,
        cost: 0,
        title: `${t.kind} tags are not applied by Latent Studio`,
      });
      continue;
    }
    const found = list ? findLoraFile(list.loras, t.name) : undefined;
    const missing = list !== null && !found;
    marks.push({
      start: t.start,
      end: t.end,
      kind: 'lora',
      name: t.name,
      missing,
      cost: 0,
      title: t.error
        ? `This tag cannot be read: ${t.error}`
        : missing
          ? `LoRA "${t.name}" is not in the LoRA folder`
          : `LoRA ${t.name}: weight ${t.teWeight}${t.unetWeight !== t.teWeight ? ` (UNet ${t.unetWeight})` : ''}, 0 tokens`,
    });
  }
  const embeddings = list?.embeddings ?? [];
  for (const m of findEmbeddingWords(
    text,
    embeddings.map((e) => e.name),
  )) {
    const e = embeddings.find((x) => x.name === m.name)!;
    const cost = e.vectors ?? 1;
    marks.push({
      start: m.start,
      end: m.end,
      kind: 'embedding',
      name: e.name,
      missing: false,
      cost,
      title: `Embedding ${e.name}: ${cost} token${cost === 1 ? '' : 's'}`,
    });
  }
  return marks.sort((a, b) => a.start - b.start);
}

/** The text to count tokens of: tags and embedding words taken out (their cost is added apart). */
export function textForCounting(text: string, marks: readonly PromptMark[]): string {
  let out = '';
  let last = 0;
  for (const m of marks) {
    out += text.slice(last, m.start);
    last = m.end;
  }
  return out + text.slice(last);
}

/**
 * Chunk counts with the embeddings' vectors added: each goes in the last chunk, or starts a new
 * one when it does not fit (A1111 does not split an embedding across chunks). An estimate where
 * an embedding sits before the prompt's last chunk; the total is exact.
 */
export function withEmbeddingCost(chunks: readonly number[], costs: readonly number[]): number[] {
  const out = chunks.length ? [...chunks] : [0];
  for (const cost of costs) {
    let rest = cost;
    while (rest > 0) {
      const room = 75 - out[out.length - 1];
      if (room <= 0 || (room < rest && rest <= 75)) {
        out.push(0);
        continue;
      }
      const put = Math.min(room, rest);
      out[out.length - 1] += put;
      rest -= put;
    }
  }
  return out;
}

export interface MarkedSegment extends PromptSegment {
  mark: PromptMark | null;
}

/** The emphasis segments cut where marks begin and end, each piece knowing its mark. */
export function markSegments(
  segments: readonly PromptSegment[],
  marks: readonly PromptMark[],
): MarkedSegment[] {
  const out: MarkedSegment[] = [];
  let offset = 0;
  for (const s of segments) {
    const start = offset;
    const end = offset + s.text.length;
    offset = end;
    const cuts = new Set([start, end]);
    for (const m of marks) {
      if (m.start > start && m.start < end) cuts.add(m.start);
      if (m.end > start && m.end < end) cuts.add(m.end);
    }
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const a = points[i];
      const b = points[i + 1];
      const mark = marks.find((m) => m.start <= a && b <= m.end) ?? null;
      out.push({ ...s, text: s.text.slice(a - start, b - start), mark });
    }
  }
  return out;
}

/** The LoRA tag the caret is in or touches, if any. */
export function loraTagAt(text: string, caret: number): NetworkTag | undefined {
  return parseNetworkTags(text).tags.find(
    (t) => t.kind === 'lora' && !t.error && t.start <= caret && caret <= t.end,
  );
}

/** `text` with `insert` put at [start, end), spaced from its neighbours; and the caret after it. */
export function insertAt(
  text: string,
  start: number,
  end: number,
  insert: string,
): { text: string; caret: number } {
  const before = text.slice(0, start);
  const after = text.slice(end);
  const lead = before === '' || /[\s(]$/.test(before) ? '' : ' ';
  const trail = after === '' || /^[\s,)]/.test(after) ? '' : ' ';
  const piece = `${lead}${insert}${trail}`;
  return { text: before + piece + after, caret: before.length + lead.length + insert.length };
}

/** The tag rewritten with one weight for both text encoder and UNet (the slider's value). */
export function retagWeight(
  text: string,
  tag: NetworkTag,
  weight: number,
): { text: string; tag: string } {
  const next = formatLoraTag(tag.name, weight);
  return { text: text.slice(0, tag.start) + next + text.slice(tag.end), tag: next };
}

/**
 * What a reused or imported generation names that is not in the folders: LoRAs of the prompts'
 * tags, and embeddings the image's metadata lists (names found nowhere in the folder).
 */
export function missingNetworks(
  prompts: { prompt: string; negativePrompt: string },
  list: NetworkList,
  embeddingNames: readonly string[],
): { loras: string[]; embeddings: string[] } {
  const tags = [
    ...parseNetworkTags(prompts.prompt).tags,
    ...parseNetworkTags(prompts.negativePrompt).tags,
  ];
  const loras = [
    ...new Set(
      tags
        .filter((t) => t.kind === 'lora' && !t.error && !findLoraFile(list.loras, t.name))
        .map((t) => t.name),
    ),
  ];
  const have = new Set(list.embeddings.map((e) => e.name.toLowerCase()));
  const embeddings = [...new Set(embeddingNames)].filter((n) => !have.has(n.toLowerCase()));
  return { loras, embeddings };
}
