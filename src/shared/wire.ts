import { z } from 'zod';
import { errorCodes } from './errors';

/**
 * Messages of the WebSocket transport. The client sends calls with an id; the host answers
 * each with a result carrying the same id, and pushes events at any time.
 */
export const WireCall = z
  .object({
    type: z.literal('call'),
    id: z.number().int().nonnegative(),
    method: z.string().max(100),
    input: z.unknown().optional(),
  })
  .strict();
export type WireCall = z.infer<typeof WireCall>;

const WireEnvelope = z.union([
  z.object({ ok: z.literal(true), value: z.unknown() }),
  z.object({
    ok: z.literal(false),
    error: z.object({ code: z.enum(errorCodes), message: z.string() }),
  }),
]);

export const WireServerMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('result'), id: z.number(), response: WireEnvelope }),
  z.object({ type: z.literal('event'), event: z.string(), payload: z.unknown() }),
]);
export type WireServerMessage = z.infer<typeof WireServerMessage>;

export {
  checkpointUploadPath,
  httpCallPrefix,
  ipcCallChannel,
  ipcEventChannel,
  wsPath,
} from './channels';
export type { DesktopBridge } from './channels';
