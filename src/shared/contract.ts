import { z } from 'zod';
import type { Envelope } from './errors';
import { StudioError } from './errors';
import { Settings, SettingsPatch } from './settings';
import { AppInfo, EngineStatus } from './status';

/**
 * The one contract between the studio and its host. Each method takes at most one argument,
 * validated by `input` where it enters the host, and resolves to `output`. Both transports
 * (Electron IPC and loopback HTTP/WebSocket) and both ends (main's binding, the renderer's
 * client) are derived from this object; nothing here is declared twice.
 */
export const studioMethods = {
  getAppInfo: { input: z.undefined(), output: AppInfo },
  getEngineStatus: { input: z.undefined(), output: EngineStatus },
  getSettings: { input: z.undefined(), output: Settings },
  updateSettings: { input: SettingsPatch, output: Settings },
} as const satisfies Record<string, { input: z.ZodType; output: z.ZodType }>;

/** Events pushed from the host; names are what `on()` takes. */
export const studioEvents = {
  engineStatus: EngineStatus,
  settingsChanged: Settings,
} as const satisfies Record<string, z.ZodType>;

export type StudioMethods = typeof studioMethods;
export type MethodName = keyof StudioMethods;
export type EventName = keyof typeof studioEvents;
export type MethodInput<M extends MethodName> = z.input<StudioMethods[M]['input']>;
export type MethodOutput<M extends MethodName> = z.output<StudioMethods[M]['output']>;
export type EventPayload<E extends EventName> = z.output<(typeof studioEvents)[E]>;

type CallArgs<M extends MethodName> =
  undefined extends MethodInput<M> ? [] : [input: MethodInput<M>];

/** What the renderer sees: promise-returning methods plus a typed event subscription. */
export type StudioApi = {
  [M in MethodName]: (...args: CallArgs<M>) => Promise<MethodOutput<M>>;
} & {
  /** Subscribe to a host event; returns the function that unsubscribes. */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
};

/** What the host implements: each method receives its already-validated input. */
export type StudioService = {
  [M in MethodName]: (
    input: z.output<StudioMethods[M]['input']>,
  ) => Promise<MethodOutput<M>> | MethodOutput<M>;
};

export const methodNames = Object.keys(studioMethods) as MethodName[];
export const eventNames = Object.keys(studioEvents) as EventName[];

export function isMethodName(name: unknown): name is MethodName {
  return typeof name === 'string' && Object.hasOwn(studioMethods, name);
}

export function isEventName(name: unknown): name is EventName {
  return typeof name === 'string' && Object.hasOwn(studioEvents, name);
}

/** The minimum a transport provides; the typed client is built on top of it. */
export interface Transport {
  call(method: MethodName, input: unknown): Promise<Envelope>;
  subscribe(listener: (event: EventName, payload: unknown) => void): () => void;
}

/** Builds the typed `StudioApi` over any transport. */
export function createStudioClient(transport: Transport): StudioApi {
  const listeners = new Map<EventName, Set<(payload: never) => void>>();
  let unsubscribe: (() => void) | null = null;

  const client: Record<string, unknown> = {};
  for (const method of methodNames) {
    client[method] = async (input?: unknown) => {
      const envelope = await transport.call(method, input);
      if (!envelope.ok) throw new StudioError(envelope.error.code, envelope.error.message);
      return envelope.value;
    };
  }
  client.on = (event: EventName, listener: (payload: never) => void) => {
    if (!isEventName(event))
      throw new StudioError('invalid-argument', `Unknown event "${String(event)}".`);
    let set = listeners.get(event);
    if (!set) listeners.set(event, (set = new Set()));
    set.add(listener);
    unsubscribe ??= transport.subscribe((name, payload) => {
      for (const fn of listeners.get(name) ?? []) fn(payload as never);
    });
    return () => {
      set.delete(listener);
    };
  };
  return client as StudioApi;
}
