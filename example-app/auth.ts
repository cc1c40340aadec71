// Who a request is, from a token in the query or the Authorization header. WebSocket routes
// call it from `init` and answer 401 before any upgrade; the MQTT route uses the same rule.
import type { FastifyRequest } from 'fastify'

const tokens = new Set((process.env.WS_TOKENS ?? 'secret').split(','))

export const unauthorized = { error: 'a valid token is required (?token=… or Authorization: Bearer …)' }

/** The user a request authenticates as, or undefined. */
export function tokenUser (request: FastifyRequest): string | undefined {
  const { token } = request.query as { token?: string }
  const given = token ?? request.headers.authorization?.replace(/^Bearer /i, '')
  return given !== undefined && tokens.has(given) ? `token:${given.slice(0, 3)}…` : undefined
}
