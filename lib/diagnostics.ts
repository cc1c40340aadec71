/**
 * node:diagnostics_channel channels, so APM tools can watch connections without a logger.
 * Publishing is guarded by `hasSubscribers`: unobserved, a channel costs one property read.
 */
import diagnostics from 'node:diagnostics_channel'
import type { FastifyBaseLogger } from 'fastify'
import type { TerminateReason } from './types.js'

/** `{ ctx, request }` when a connection is open (before `websocketInit`); `request` is the raw IncomingMessage. */
export const openChannel = diagnostics.channel('fastify-ws-handlers:open')
/** `{ ctx, reason }` when a connection ends (before `terminate`). */
export const closeChannel = diagnostics.channel('fastify-ws-handlers:close')
/** `{ ctx, frame }` for each frame received, before `handle`. */
export const frameInChannel = diagnostics.channel('fastify-ws-handlers:frame-in')
/** `{ request, error }` for each upgrade refused before the 101 by the plugin (origin, limits, handshake, subprotocol, init's errors). */
export const refusedChannel = diagnostics.channel('fastify-ws-handlers:refused')
/** `{ ctx, frames }` for each reply that is written. */
export const frameOutChannel = diagnostics.channel('fastify-ws-handlers:frame-out')

/**
 * Whether `log` writes info lines: pino's isLevelEnabled. Fastify's disabled logger (logger:
 * false) has none, and nothing is logged then (nor a child logger made per connection).
 */
export function logsInfo (log: FastifyBaseLogger): boolean {
  const pino = log as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }
  return pino.isLevelEnabled?.('info') === true
}

/** The close code of the ways to end that carry none, for the close log line (1006: no close frame). */
const closeCodeByReason: Readonly<Record<string, number>> = { timeout: 1000, crash: 1011, shutdown: 1001, closed: 1006 }

/** The close log line's fields: close code, terminate reason and how long the connection lived. */
export function closeLogFields (reason: TerminateReason, openedAt: number): { code: number | undefined, reason: string, durationMs: number } {
  const code = 'code' in reason ? reason.code : closeCodeByReason[reason.type]
  return { code, reason: reason.type, durationMs: Math.round(performance.now() - openedAt) }
}
