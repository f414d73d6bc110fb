/**
 * ComfyUI's editor `workflow` (LiteGraph serialisation) as an API-format graph, for the images
 * that carry only it. A node's widget values are a list in the order its widgets are shown, so
 * each node type read here names its widgets; a seed widget is followed by its "control after
 * generate" value, which has no input of its own (empty names below skip a value). Inputs that
 * are links become `[fromNode, fromSlot]`; links through Reroute nodes are followed; a widget
 * turned into an input fed by a PrimitiveNode keeps its own value, which ComfyUI keeps in step.
 */
import { isRecord, own } from './foreign';

/** Widget names in `widgets_values` order (ComfyUI nodes.py and comfy_extras/nodes_custom_sampler.py). */
const WIDGETS: Readonly<Record<string, readonly string[]>> = {
  KSampler: ['seed', '', 'steps', 'cfg', 'sampler_name', 'scheduler', 'denoise'],
  KSamplerAdvanced: [
    'add_noise',
    'noise_seed',
    '',
    'steps',
    'cfg',
    'sampler_name',
    'scheduler',
    'start_at_step',
    'end_at_step',
    'return_with_leftover_noise',
  ],
  SamplerCustom: ['add_noise', 'noise_seed', '', 'cfg'],
  RandomNoise: ['noise_seed', ''],
  CFGGuider: ['cfg'],
  DualCFGGuider: ['cfg_conds', 'cfg_cond2_negative'],
  KSamplerSelect: ['sampler_name'],
  BasicScheduler: ['scheduler', 'steps', 'denoise'],
  KarrasScheduler: ['steps', 'sigma_max', 'sigma_min', 'rho'],
  ExponentialScheduler: ['steps', 'sigma_max', 'sigma_min'],
  PolyexponentialScheduler: ['steps', 'sigma_max', 'sigma_min', 'rho'],
  SDTurboScheduler: ['steps', 'denoise'],
  AlignYourStepsScheduler: ['model_type', 'steps', 'denoise'],
  SplitSigmas: ['step'],
  SplitSigmasDenoise: ['denoise'],
  EmptyLatentImage: ['width', 'height', 'batch_size'],
  EmptySD3LatentImage: ['width', 'height', 'batch_size'],
  CLIPTextEncode: ['text'],
  CheckpointLoaderSimple: ['ckpt_name'],
};

const MAX_NODES = 10_000;
const MAX_HOPS = 32;

interface WorkflowNode {
  type: string;
  inputs: unknown[];
  widgets: unknown[];
}

/** The API-format graph a workflow describes, or undefined when it is not a workflow. */
export function apiGraphFromWorkflow(workflow: unknown): Record<string, unknown> | undefined {
  if (!isRecord(workflow)) return undefined;
  const nodeList = own(workflow, 'nodes');
  const linkList = own(workflow, 'links');
  if (!Array.isArray(nodeList) || !Array.isArray(linkList)) return undefined;

  const nodes = new Map<string, WorkflowNode>();
  for (const n of nodeList.slice(0, MAX_NODES)) {
    if (!isRecord(n)) continue;
    const id = own(n, 'id');
    const type = own(n, 'type');
    if ((typeof id !== 'number' && typeof id !== 'string') || typeof type !== 'string') continue;
    const inputs = own(n, 'inputs');
    const widgets = own(n, 'widgets_values');
    nodes.set(String(id), {
      type,
      inputs: Array.isArray(inputs) ? inputs : [],
      widgets: Array.isArray(widgets) ? widgets : [],
    });
  }
  // link id -> [from node, from slot]
  const links = new Map<string, [string, number]>();
  for (const l of linkList.slice(0, MAX_NODES * 4)) {
    if (!Array.isArray(l) || l.length < 5) continue;
    const [id, from, slot] = l as unknown[];
    if ((typeof id === 'number' || typeof id === 'string') && typeof slot === 'number')
      links.set(String(id), [String(from), slot]);
  }
  /** The real source of a link, past Reroute nodes; undefined for PrimitiveNodes and dead ends. */
  const source = (linkId: unknown): [string, number] | undefined => {
    let link = linkId === null || linkId === undefined ? undefined : links.get(String(linkId));
    for (let hop = 0; link && hop < MAX_HOPS; hop++) {
      const from = nodes.get(link[0]);
      if (!from || from.type === 'PrimitiveNode') return undefined;
      if (from.type !== 'Reroute') return link;
      const input = from.inputs[0];
      link = isRecord(input) ? links.get(String(own(input, 'link'))) : undefined;
    }
    return undefined;
  };

  // Entries, then Object.fromEntries: ids and names like "__proto__" stay plain keys.
  const graph: Array<[string, unknown]> = [];
  for (const [id, node] of nodes) {
    if (node.type === 'Reroute' || node.type === 'PrimitiveNode') continue;
    const inputs: Array<[string, unknown]> = [];
    const widgetNames = Object.prototype.hasOwnProperty.call(WIDGETS, node.type)
      ? WIDGETS[node.type]!
      : [];
    widgetNames.forEach((name, i) => {
      if (name !== '' && i < node.widgets.length) inputs.push([name, node.widgets[i]]);
    });
    for (const input of node.inputs) {
      if (!isRecord(input)) continue;
      const name = own(input, 'name');
      const from = source(own(input, 'link'));
      if (typeof name === 'string' && from) inputs.push([name, from]);
    }
    graph.push([id, { class_type: node.type, inputs: Object.fromEntries(inputs) }]);
  }
  return Object.fromEntries(graph);
}
