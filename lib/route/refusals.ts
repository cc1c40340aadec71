/**
 * Refusals that shed load and say when to come back: the Retry-After of a 503, and the answer to
 * an upgrade that comes while app.close() drains (HTTP/1.1 in index.ts, HTTP/2 in h2.ts).
 */
import { ShuttingDownError } from '../core/errors.js'

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
