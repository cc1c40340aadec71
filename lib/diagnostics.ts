/**
 * node:diagnostics_channel channels, so APM tools can watch connections without a logger.
 * Publishing is guarded by `hasSubscribers`: unobserved, a channel costs one property read.
 */
import diagnostics from 'node:diagnostics_channel'

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
