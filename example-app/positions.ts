// A position as the example pages carry it: "<epoch>:<offset>" in each message's `pos`, and back
// in the reconnect URL's `?since=` (chat.ts, feed.ts; the browser side is resume-script.ts), with
// the plugin's own helpers.
import { formatPosition, parsePosition, type Position } from '../lib/index.js'

export const posOf = (position: Position): string => formatPosition(position)

/** `?since=` as a page sends it back; anything else is "from now" (a stale or forged one is resynced by the history). */
export const sinceOf = (since: unknown): Position | undefined => parsePosition(since)
