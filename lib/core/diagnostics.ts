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
/** `{ ctx, frame, bytes }` for each frame received, before `handle`; `bytes`: its payload's size as received. */
export const frameInChannel = diagnostics.channel('fastify-ws-handlers:frame-in')
/**
 * `{ request, error, routeUrl, instanceId }` for each upgrade refused before the 101 by the
 * plugin (origin, limits, handshake, subprotocol, init's errors). `instanceId` (in the events
 * below too): the app's, the prefix of its connection ids, so that several apps in a process
 * can tell their events apart.
 */
export const refusedChannel = diagnostics.channel('fastify-ws-handlers:refused')
/** `{ ctx, frames }` for each reply that is written, and `{ ctx, frames: [frame] }` for each broadcast written to a subscriber. */
export const frameOutChannel = diagnostics.channel('fastify-ws-handlers:frame-out')
/** `{ ctx, callback, durationMs, failed }` when a callback (websocketInit, handle, info) has run, an async one once it settled. */
export const callbackChannel = diagnostics.channel('fastify-ws-handlers:callback')
/** `{ operation: 'publish' | 'broadcast' | 'post', delivered, instanceId }` for each call of the app's (`delivered`: connections reached on this instance). */
export const deliverChannel = diagnostics.channel('fastify-ws-handlers:deliver')
/**
 * The Redis adapter's events, each with `instanceId`: `{ event: 'delivery', kind, lagMs }` for a
 * message from another instance (lag by the two wall clocks), `{ event: 'error', what, error? }`
 * for a lost connection or a failed command, `{ event: 'dropped', problem }` for a message it could
 * not read.
 */
export const adapterChannel = diagnostics.channel('fastify-ws-handlers:adapter')

/**
 * Whether `log` writes info lines: pino's isLevelEnabled. Fastify's disabled logger (logger:
 * false) has none, and nothing is logged then (nor a child logger made per connection).
 */
export function logsInfo (log: FastifyBaseLogger): boolean {
  const pino = log as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }
  return pino.isLevelEnabled?.('info') === true
}

/** The close code of the ways to end that carry none, for the close log line (1006: no close frame). */
const closeCodeByReason: Readonly<Record<string, number>> = { timeout: 1000, crash: 1011, closed: 1006 }

/** The close log line's fields. */
export interface CloseLogFields {
  /** The close code. */
  code: number | undefined
  /** The terminate reason's type. */
  reason: string
  durationMs: number
  /** For a close caused by an error: its code (FST_WS_INVALID_MESSAGE, WS_ERR_INVALID_UTF8, …) and message (which limit, what was wrong). */
  errorCode?: string
  error?: string
}

/** The close log line's fields: close code, terminate reason, how long the connection lived, and the cause of an error close. */
export function closeLogFields (reason: TerminateReason, openedAt: number): CloseLogFields {
  const code = 'code' in reason ? reason.code : closeCodeByReason[reason.type]
  const fields: CloseLogFields = { code, reason: reason.type, durationMs: Math.round(performance.now() - openedAt) }
  if (reason.type === 'error' || reason.type === 'crash') {
    const error = reason.error as { code?: unknown, message?: unknown } | undefined
    if (typeof error?.code === 'string') fields.errorCode = error.code
    fields.error = typeof error?.message === 'string' ? error.message : String(reason.error)
  }
  return fields
}
