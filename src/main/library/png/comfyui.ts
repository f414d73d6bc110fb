/**
 * Settings from ComfyUI graphs. ComfyUI stores two: `prompt`, the API-format graph it ran
 * (`{ "<id>": { "class_type": "...", "inputs": { name: literal | [id, outputIndex] } } }`), and
 * `workflow`, the editor's LiteGraph serialisation (nodes with `widgets_values` in widget order,
 * links as `[id, fromNode, fromSlot, toNode, toSlot, type]`), which apiGraphFromWorkflow turns
 * into the first shape for the node types read here.
 *
 * Sampling is read from KSampler / KSamplerAdvanced, whose inputs hold everything, and from
 * SamplerCustom / SamplerCustomAdvanced (comfy_extras/nodes_custom_sampler.py), which take the
 * pieces as links: noise (RandomNoise, DisableNoise), guider (CFGGuider, BasicGuider,
 * DualCFGGuider), sampler (KSamplerSelect, SamplerEulerAncestral) and sigmas (BasicScheduler,
 * KarrasScheduler, ExponentialScheduler, SDTurboScheduler and the other schedulers, through
 * SplitSigmas, SplitSigmasDenoise and FlipSigmas). Untrusted input: walks are bounded, values of
 * the wrong type are skipped, nothing throws.
 */
import {
  type ForeignResult,
  type PartialSettings,
  isRecord,
  newRaw,
  num,
  own,
  put,
  putSampler,
  samplerFromComfy,
  setRaw,
} from './foreign';

const KSAMPLERS = new Set(['KSampler', 'KSamplerAdvanced']);
const CUSTOM_SAMPLERS = new Set(['SamplerCustom', 'SamplerCustomAdvanced']);
const EMPTY_LATENTS = new Set(['EmptyLatentImage', 'EmptySD3LatentImage']);
const MAX_NODES = 10_000;
const MAX_HOPS = 32;

type ComfyNode = { class_type: string; inputs: Record<string, unknown> };
type Nodes = Map<string, ComfyNode>;

function comfyNodes(graph: unknown): Nodes {
  const nodes: Nodes = new Map();
  if (!isRecord(graph)) return nodes;
  for (const [id, node] of Object.entries(graph)) {
    if (nodes.size >= MAX_NODES) break;
    if (!isRecord(node)) continue;
    const cls = own(node, 'class_type');
    const inputs = own(node, 'inputs');
    if (typeof cls === 'string' && isRecord(inputs)) nodes.set(id, { class_type: cls, inputs });
  }
  return nodes;
}

/** The node a link input ([id, outputIndex]) points at. */
function linked(nodes: Nodes, v: unknown): ComfyNode | undefined {
  if (!Array.isArray(v) || v.length !== 2) return undefined;
  const id = v[0];
  if (typeof id !== 'string' && typeof id !== 'number') return undefined;
  return nodes.get(String(id));
}

/** A string input, following links through primitive/string nodes. */
function stringInput(nodes: Nodes, node: ComfyNode, names: string[]): string | undefined {
  let current: ComfyNode | undefined = node;
  let keys = names;
  for (let hop = 0; current && hop < MAX_HOPS; hop++) {
    let next: ComfyNode | undefined;
    for (const k of keys) {
      const v = own(current.inputs, k);
      if (typeof v === 'string') return v;
      next ??= linked(nodes, v);
    }
    current = next;
    keys = ['text', 'string', 'value', 'text_g', 'prompt'];
  }
  return undefined;
}

/** The prompt text of a conditioning link, following conditioning pass-through nodes. */
function conditioningText(nodes: Nodes, link: unknown): string | undefined {
  let node = linked(nodes, link);
  for (let hop = 0; node && hop < MAX_HOPS; hop++) {
    if (
      node.class_type.startsWith('CLIPTextEncode') ||
      typeof own(node.inputs, 'text') === 'string'
    ) {
      const text = stringInput(nodes, node, ['text', 'text_g', 'prompt']);
      if (text !== undefined) return text;
    }
    node = linked(nodes, own(node.inputs, 'conditioning') ?? own(node.inputs, 'conditioning_1'));
  }
  return undefined;
}

function latentSize(
  nodes: Nodes,
  link: unknown,
): { width?: unknown; height?: unknown } | undefined {
  let node = linked(nodes, link);
  for (let hop = 0; node && hop < MAX_HOPS; hop++) {
    if (EMPTY_LATENTS.has(node.class_type))
      return { width: own(node.inputs, 'width'), height: own(node.inputs, 'height') };
    node = linked(nodes, own(node.inputs, 'samples') ?? own(node.inputs, 'latent_image'));
  }
  return undefined;
}

/** What one sampling node asks for, whichever node class spells it and however. */
interface Sampling {
  seed?: unknown;
  steps?: unknown;
  cfg?: unknown;
  samplerName?: unknown;
  scheduler?: unknown;
  denoise?: unknown;
  positive?: unknown;
  negative?: unknown;
  /** Source fields worth showing (node classes, split points, sigma ranges). */
  raw: Array<[string, unknown]>;
}

function readKSampler(ks: ComfyNode): Sampling {
  const inp = ks.inputs;
  return {
    seed:
      own(inp, ks.class_type === 'KSamplerAdvanced' ? 'noise_seed' : 'seed') ?? own(inp, 'seed'),
    steps: own(inp, 'steps'),
    cfg: own(inp, 'cfg'),
    samplerName: own(inp, 'sampler_name'),
    scheduler: own(inp, 'scheduler'),
    denoise: own(inp, 'denoise'),
    positive: own(inp, 'positive'),
    negative: own(inp, 'negative'),
    raw: [],
  };
}

/** Sampler nodes that stand for one ComfyUI sampler name. */
const SAMPLER_NODE_NAMES: Readonly<Record<string, string>> = {
  SamplerEulerAncestral: 'euler_ancestral',
  SamplerLMS: 'lms',
  SamplerDPMPP_2M_SDE: 'dpmpp_2m_sde',
  SamplerDPMPP_SDE: 'dpmpp_sde',
  SamplerDPMPP_3M_SDE: 'dpmpp_3m_sde',
  SamplerDPMPP_2S_Ancestral: 'dpmpp_2s_ancestral',
};

function readSamplerLink(nodes: Nodes, link: unknown, into: Sampling): void {
  const node = linked(nodes, link);
  if (!node) return;
  into.raw.push(['sampler node', node.class_type]);
  into.samplerName =
    node.class_type === 'KSamplerSelect'
      ? own(node.inputs, 'sampler_name')
      : Object.prototype.hasOwnProperty.call(SAMPLER_NODE_NAMES, node.class_type)
        ? SAMPLER_NODE_NAMES[node.class_type]
        : undefined;
}

/** Sigma nodes other than BasicScheduler, by the ComfyUI scheduler name of their schedule. */
const SIGMA_NODE_SCHEDULES: Readonly<Record<string, string>> = {
  KarrasScheduler: 'karras',
  ExponentialScheduler: 'exponential',
  PolyexponentialScheduler: 'polyexponential',
  VPScheduler: 'vp',
  SDTurboScheduler: 'sd_turbo',
  AlignYourStepsScheduler: 'align_your_steps',
  BetaSamplingScheduler: 'beta',
  LaplaceScheduler: 'laplace',
  GITSScheduler: 'gits',
};

/**
 * The schedule behind a SIGMAS link. SplitSigmas / SplitSigmasDenoise / FlipSigmas pass a part
 * or a reversal of their input through: the schedule and its step count are the input's, and
 * the split is kept in raw (a sampler given only part of a schedule runs fewer steps).
 */
function readSigmasLink(nodes: Nodes, link: unknown, into: Sampling): void {
  let current = link;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const node = linked(nodes, current);
    if (!node) return;
    const inp = node.inputs;
    if (node.class_type === 'SplitSigmas' || node.class_type === 'SplitSigmasDenoise') {
      const half = Array.isArray(current) && current[1] === 1 ? 'low' : 'high';
      into.raw.push(['sigmas split', `${node.class_type} ${half}`]);
      into.raw.push(['split at', own(inp, node.class_type === 'SplitSigmas' ? 'step' : 'denoise')]);
      current = own(inp, 'sigmas');
      continue;
    }
    if (node.class_type === 'FlipSigmas') {
      into.raw.push(['sigmas flipped', 'true']);
      current = own(inp, 'sigmas');
      continue;
    }
    into.raw.push(['sigmas node', node.class_type]);
    into.steps = own(inp, 'steps');
    if (node.class_type === 'BasicScheduler') {
      into.scheduler = own(inp, 'scheduler');
      into.denoise = own(inp, 'denoise');
    } else if (Object.prototype.hasOwnProperty.call(SIGMA_NODE_SCHEDULES, node.class_type)) {
      into.scheduler = SIGMA_NODE_SCHEDULES[node.class_type];
      into.denoise = own(inp, 'denoise');
      into.raw.push(['sigma_max', own(inp, 'sigma_max')], ['sigma_min', own(inp, 'sigma_min')]);
    }
    return;
  }
}

function readGuiderLink(nodes: Nodes, link: unknown, into: Sampling): void {
  const node = linked(nodes, link);
  if (!node) return;
  const inp = node.inputs;
  into.raw.push(['guider', node.class_type]);
  if (node.class_type === 'CFGGuider') {
    into.cfg = own(inp, 'cfg');
    into.positive = own(inp, 'positive');
    into.negative = own(inp, 'negative');
  } else if (node.class_type === 'BasicGuider') {
    // Conditioning alone, no negative: the same as classifier-free guidance at scale 1.
    into.cfg = 1;
    into.positive = own(inp, 'conditioning');
  } else if (node.class_type === 'DualCFGGuider') {
    into.cfg = own(inp, 'cfg_conds');
    into.positive = own(inp, 'cond1');
    into.negative = own(inp, 'negative');
    into.raw.push(['cfg_cond2_negative', own(inp, 'cfg_cond2_negative')]);
    into.raw.push(['cond2', conditioningText(nodes, own(inp, 'cond2'))]);
  }
}

function readCustomSampler(nodes: Nodes, node: ComfyNode): Sampling {
  const inp = node.inputs;
  const out: Sampling = { raw: [] };
  if (node.class_type === 'SamplerCustom') {
    // add_noise false: the latent is used as it is, so no seed made the image.
    if (own(inp, 'add_noise') !== false) out.seed = own(inp, 'noise_seed');
    out.cfg = own(inp, 'cfg');
    out.positive = own(inp, 'positive');
    out.negative = own(inp, 'negative');
  } else {
    const noise = linked(nodes, own(inp, 'noise'));
    if (noise) out.raw.push(['noise', noise.class_type]);
    if (noise?.class_type === 'RandomNoise') out.seed = own(noise.inputs, 'noise_seed');
    readGuiderLink(nodes, own(inp, 'guider'), out);
  }
  readSamplerLink(nodes, own(inp, 'sampler'), out);
  readSigmasLink(nodes, own(inp, 'sigmas'), out);
  return out;
}

export function settingsFromComfy(promptJson: unknown): ForeignResult | null {
  const nodes = comfyNodes(promptJson);
  const samplers = [...nodes.entries()].filter(
    ([, n]) => KSAMPLERS.has(n.class_type) || CUSTOM_SAMPLERS.has(n.class_type),
  );
  if (samplers.length === 0) return null;
  // The first pass: the sampler that starts from an empty latent, else the lowest node id.
  samplers.sort(([a], [b]) => (Number(a) || 0) - (Number(b) || 0) || (a < b ? -1 : a > b ? 1 : 0));
  const fromEmpty = samplers.find(
    ([, n]) => latentSize(nodes, own(n.inputs, 'latent_image')) !== undefined,
  );
  const [id, node] = fromEmpty ?? samplers[0]!;
  const s = KSAMPLERS.has(node.class_type) ? readKSampler(node) : readCustomSampler(nodes, node);
  const settings: PartialSettings = {};
  const raw = newRaw();
  setRaw(raw, 'node', id);
  setRaw(raw, 'class_type', node.class_type);
  setRaw(raw, 'sampler count', samplers.length);
  for (const [k, v] of [
    ['seed', s.seed],
    ['steps', s.steps],
    ['cfg', s.cfg],
    ['sampler_name', s.samplerName],
    ['scheduler', s.scheduler],
    ['denoise', s.denoise],
    ...s.raw,
  ] as Array<[string, unknown]>)
    setRaw(raw, k, v);
  put(settings, 'seed', num(s.seed));
  put(settings, 'steps', num(s.steps));
  put(settings, 'guidance', num(s.cfg));
  putSampler(settings, samplerFromComfy(s.samplerName, s.scheduler));
  put(settings, 'strength', num(s.denoise));
  put(settings, 'prompt', conditioningText(nodes, s.positive));
  put(settings, 'negativePrompt', conditioningText(nodes, s.negative));
  let size = latentSize(nodes, own(node.inputs, 'latent_image'));
  if (!size) {
    const empty = [...nodes.values()].find((n) => EMPTY_LATENTS.has(n.class_type));
    if (empty) size = { width: own(empty.inputs, 'width'), height: own(empty.inputs, 'height') };
  }
  if (size) {
    put(settings, 'width', num(size.width));
    put(settings, 'height', num(size.height));
  }
  for (const n of nodes.values()) {
    if (n.class_type === 'CheckpointLoaderSimple' || n.class_type === 'CheckpointLoader') {
      setRaw(raw, 'ckpt_name', own(n.inputs, 'ckpt_name'));
      break;
    }
  }
  return { settings, raw };
}
