// A position as the example pages carry it: "<epoch>:<offset>" in each message's `pos`, and back
// in the reconnect URL's `?since=` (chat.ts, feed.ts; the browser side is resume-script.ts).
import type { Position } from '../lib/index.js'

export const posOf = (position: Position): string => `${position.epoch}:${position.offset}`

/** `?since=` as a page sends it back; anything else is "from now" (a stale or forged one is resynced by the history). */
export function sinceOf (since: unknown): Position | undefined {
  const match = typeof since === 'string' ? /^([0-9a-f]{1,32}):(\d{1,15})$/.exec(since) : null
  return match === null ? undefined : { epoch: match[1]!, offset: Number(match[2]) }
}
