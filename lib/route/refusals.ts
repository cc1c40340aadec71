/**
 * The plugin's HTTP refusals: the 426 of a plain GET to a WebSocket-only route, refusals that
 * shed load and say when to come back (the Retry-After of a 503, and the answer to an upgrade
 * that comes while app.close() drains: HTTP/1.1 in index.ts, HTTP/2 in h2.ts), and coded 4xx
 * answers without a stack.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ShuttingDownError, TooManyConnectionsError, UpgradeRequiredError } from '../core/errors.js'

/** What a client over a connection limit, or of an instance that drains, is told to wait before trying again. */
export const RETRY_AFTER_SECONDS = 5

/**
 * The 503 of an upgrade that comes while app.close() drains, as `answerLoadShedding` gives it
 * during a `drain()`: Fastify's router answers every request with a generic 503 of its own once
 * app.close() began (no Retry-After, no code), so these are answered before it routes them.
 */
export function shuttingDownAnswer (): { headers: Record<string, string>, body: string } {
  const error = new ShuttingDownError()
  const body = JSON.stringify({ statusCode: 503, code: error.code, error: 'Service Unavailable', message: error.message })
  return { headers: { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(RETRY_AFTER_SECONDS), 'content-length': String(Buffer.byteLength(body)) }, body }
}

/** The HTTP handler of a WebSocket-only route: 426, as Cowboy answers (RFC 7230 §6.7 wants both headers). */
export function upgradeRequired (_request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.header('upgrade', 'websocket').header('connection', 'upgrade').send(withoutStack(new UpgradeRequiredError()))
}

/**
 * The plugin's own refusals (a coded 4xx) are answers, not faults: Fastify logs them at info,
 * and a stack trace there says nothing. Errors from init and 5xx keep theirs.
 */
export function withoutStack (error: unknown): unknown {
  const { code, statusCode } = error as { code?: unknown, statusCode?: unknown }
  if (typeof code === 'string' && code.startsWith('FST_WS_') && typeof statusCode === 'number' && statusCode < 500) {
    Object.defineProperty(error, 'stack', { value: undefined })
  }
  return error
}

/** Refusals that shed load (a limit reached, shutting down): answers, not faults. */
export function isLoadShedding (error: unknown): error is TooManyConnectionsErrorType | ShuttingDownErrorType {
  return error instanceof TooManyConnectionsError || error instanceof ShuttingDownError
}
export type TooManyConnectionsErrorType = InstanceType<typeof TooManyConnectionsError>
export type ShuttingDownErrorType = InstanceType<typeof ShuttingDownError>

/**
 * A 503 that sheds load is answered here, in Fastify's error format, and logged once at warn
 * without a stack: thrown, Fastify would log each at error level with its stack, and a flooding
 * client would fill the error logs. (The app's error handler is not called for it: not a fault.)
 */
export function answerLoadShedding (request: FastifyRequest, reply: FastifyReply, error: TooManyConnectionsErrorType | ShuttingDownErrorType): void {
  request.log.warn({ code: error.code, route: request.routeOptions.url, ip: request.ip }, error.message)
  reply.code(503).send({ statusCode: 503, code: error.code, error: 'Service Unavailable', message: error.message })
}
