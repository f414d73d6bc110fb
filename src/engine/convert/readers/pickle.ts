/**
 * A restricted reader for the pickle inside a torch checkpoint (`data.pkl` of torch.save's zip
 * format). It understands only the opcodes (Python's pickletools, protocols 0-5) and the
 * globals that checkpoints use, and it never runs code: a global is resolved only from the
 * allow-list below into inert data, and any other global is refused by name before anything
 * else happens. This is the same idea as `torch.load(weights_only=True)`, written from the
 * pickle format's description rather than by calling into Python.
 */
import type { CheckpointDType } from '../types';

/** A storage reference (torch's persistent id `('storage', StorageType, key, location, numel)`). */
export interface StorageRef {
  readonly kind: 'storage';
  readonly dtype: CheckpointDType;
  /** The zip entry's name under `data/`. */
  readonly key: string;
}

/** What `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` describes. */
export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  /** In elements. */
  readonly storageOffset: number;
  readonly shape: number[];
  readonly stride: number[];
}

/** A harmless object we keep nothing of (a Lightning callback, a numpy scalar...). */
export interface Opaque {
  readonly kind: 'opaque';
  readonly name: string;
}

export class PickleRefused extends Error {}

interface GlobalRef {
  readonly kind: 'global';
  readonly qualified: string;
}

const STORAGE_DTYPES: Readonly<Record<string, CheckpointDType>> = {
  'torch.FloatStorage': 'F32',
  'torch.HalfStorage': 'F16',
  'torch.BFloat16Storage': 'BF16',
  'torch.DoubleStorage': 'F64',
  'torch.LongStorage': 'I64',
  'torch.IntStorage': 'I32',
  'torch.ShortStorage': 'I16',
  'torch.CharStorage': 'I8',
  'torch.ByteStorage': 'U8',
  'torch.BoolStorage': 'BOOL',
};

/** Globals that build data we use. */
const DATA_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES),
]);

/**
 * Globals that training frameworks leave beside the weights (Lightning's checkpoint callback
 * state, numpy scalars for the step counter, torch's version string). They become inert
 * Opaque values; none of their code runs.
 */
const INERT_GLOBALS = new Set([
  'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint',
  'numpy.core.multiarray.scalar',
  'numpy.dtype',
  '_codecs.encode',
  'torch.torch_version.TorchVersion',
  'builtins.set',
  'torch.device',
]);

function toInt(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new PickleRefused('expected an integer in a tensor description');
}

function callGlobal(fn: GlobalRef, args: unknown): unknown {
  const a = Array.isArray(args) ? args : [];
  switch (fn.qualified) {
    case 'collections.OrderedDict':
      return new Map();
    case 'torch._utils._rebuild_tensor_v2': {
      const storage = a[0] as StorageRef | undefined;
      if (storage?.kind !== 'storage') throw new PickleRefused('a tensor without a storage');
      const shape = (a[2] as unknown[]).map(toInt);
      const stride = (a[3] as unknown[]).map(toInt);
      return { kind: 'tensor', storage, storageOffset: toInt(a[1]), shape, stride } as TensorRef;
    }
    case 'torch._utils._rebuild_parameter':
      return a[0];
    default:
      return { kind: 'opaque', name: fn.qualified } as Opaque;
  }
}

/**
 * Reads `data` as a pickle and returns the object it describes: dicts become Maps, tuples and
 * lists arrays, tensors TensorRefs. Throws PickleRefused naming any global outside the
 * allow-list, or an opcode checkpoints do not use.
 */
export function readPickle(data: Uint8Array): unknown {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const text = new TextDecoder('utf-8');
  const latin1 = new TextDecoder('latin1');
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let p = 0;

  const need = (n: number): void => {
    if (p + n > data.length) throw new PickleRefused('the pickle ends early');
  };
  const u8 = (): number => {
    need(1);
    return data[p++]!;
  };
  const u16 = (): number => {
    need(2);
    const v = view.getUint16(p, true);
    p += 2;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = view.getUint32(p, true);
    p += 4;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = view.getInt32(p, true);
    p += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = Number(view.getBigUint64(p, true));
    p += 8;
    return v;
  };
  const bytes = (n: number): Uint8Array => {
    need(n);
    const b = data.subarray(p, p + n);
    p += n;
    return b;
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) throw new PickleRefused('the pickle ends early');
    const s = latin1.decode(data.subarray(p, end));
    p = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw new PickleRefused('the pickle pops an empty stack');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleRefused('the pickle reads an empty stack');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const previous = marks.pop();
    if (!previous) throw new PickleRefused('the pickle has no mark to pop');
    stack = previous;
    return items;
  };
  const resolveGlobal = (module: string, name: string): GlobalRef => {
    const qualified = `${module}.${name}`;
    if (!DATA_GLOBALS.has(qualified) && !INERT_GLOBALS.has(qualified)) {
      throw new PickleRefused(`it refers to ${qualified}, which a checkpoint has no reason to use`);
    }
    return { kind: 'global', qualified };
  };
  const setItems = (target: unknown, items: unknown[]): void => {
    if (!(target instanceof Map)) throw new PickleRefused('the pickle sets items on a non-dict');
    for (let i = 0; i + 1 < items.length; i += 2) target.set(items[i], items[i + 1]);
  };
  const persistent = (pid: unknown): StorageRef => {
    const t = pid as unknown[];
    if (!Array.isArray(t) || t[0] !== 'storage') {
      throw new PickleRefused('it holds a persistent object that is not a tensor storage');
    }
    const type = t[1] as GlobalRef;
    const dtype = type?.kind === 'global' ? STORAGE_DTYPES[type.qualified] : undefined;
    if (!dtype) throw new PickleRefused('it holds a storage of an unknown type');
    return { kind: 'storage', dtype, key: String(t[2]) };
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x49: {
        // INT (protocol 0)
        const s = line();
        stack.push(s === '01' ? true : s === '00' ? false : Number.parseInt(s, 10));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(text.decode(bytes(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text.decode(bytes(u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text.decode(bytes(u64())));
        break;
      case 0x54: // BINSTRING
        stack.push(latin1.decode(bytes(u32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()));
        break;
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64()));
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const index = op === 0x68 ? u8() : u32();
        if (!memo.has(index)) throw new PickleRefused('the pickle reads an unset memo slot');
        stack.push(memo.get(index));
        break;
      }
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const module = line();
        stack.push(resolveGlobal(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          throw new PickleRefused('the pickle names a global with something other than text');
        }
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x74: {
        // TUPLE (popMark first: it replaces `stack`)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x6c: {
        // LIST
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x64: {
        // DICT
        const items = popMark();
        const d = new Map();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) throw new PickleRefused('the pickle appends to a non-list');
        list.push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) throw new PickleRefused('the pickle appends to a non-list');
        list.push(...items);
        break;
      }
      case 0x90: {
        // ADDITEMS (sets are kept as arrays)
        const items = popMark();
        const set = top();
        if (Array.isArray(set)) set.push(...items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop() as GlobalRef;
        if (fn?.kind !== 'global')
          throw new PickleRefused('the pickle calls something that is not an allowed global');
        stack.push(callGlobal(fn, args));
        break;
      }
      case 0x81: {
        // NEWOBJ: only inert classes
        pop();
        const cls = pop() as GlobalRef;
        if (cls?.kind !== 'global' || DATA_GLOBALS.has(cls.qualified)) {
          throw new PickleRefused('the pickle builds an object that a checkpoint does not hold');
        }
        stack.push({ kind: 'opaque', name: cls.qualified } as Opaque);
        break;
      }
      case 0x62: // BUILD: the state of inert objects (and of OrderedDicts' attributes) is dropped
        pop();
        break;
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      default:
        throw new PickleRefused(
          `it uses pickle opcode 0x${op.toString(16).padStart(2, '0')}, which checkpoints do not use`,
        );
    }
  }
}
