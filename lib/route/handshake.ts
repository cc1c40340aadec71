/**
 * The handshake as the upgrade step reads it: what ws would refuse in it, whether it is an
 * upgrade at all, the subprotocols offered, what `init` may return, and the request snapshot a
 * connection keeps for its lifetime.
 */
import type { FastifyRequest } from 'fastify'
import { anything, connectionChecks, mustBe, optionsProblem, shapeChecker } from '../core/options.js'
import type { RequestSnapshot } from '../core/types.js'
import type { Lease } from '../registry/admission.js'
import { parseSubprotocols } from '../wire/ws-internals.js'

const noHeaders: RequestSnapshot['headers'] = Object.freeze({})
const keyPattern = /^[+/0-9A-Za-z]{22}==$/ // ws's own rule

/** What ws would refuse in this handshake (websocket-server.js, handleUpgrade), or undefined. */
export function handshakeProblem (headers: FastifyRequest['headers']): string | undefined {
  const key = headers['sec-websocket-key']
  if (typeof key !== 'string' || !keyPattern.test(key)) return 'missing or invalid Sec-WebSocket-Key header'
  const version = Number(headers['sec-websocket-version'])
  if (version !== 13 && version !== 8) return 'missing or invalid Sec-WebSocket-Version header (13 or 8)'
  const protocol = headers['sec-websocket-protocol']
  if (protocol !== undefined) {
    try {
      parseSubprotocols(String(protocol))
    } catch (error) {
      return `invalid Sec-WebSocket-Protocol header: ${(error as Error).message}`
    }
  }
  return undefined
}

/**
 * Cowboy's rule, read from the headers rather than from @fastify/websocket's `request.ws`, so
 * that `app.inject()` with upgrade headers meets the same refusals as a real upgrade.
 */
export function isUpgradeRequest (request: FastifyRequest): boolean {
  const { connection, upgrade } = request.headers
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' &&
    typeof connection === 'string' && /(?:^|,)\s*upgrade\s*(?:,|$)/i.test(connection)
}

export const initResultProblem = shapeChecker({
  state: anything,
  protocol: mustBe('protocol', 'a string', (value) => typeof value === 'string'),
  options: (options) => optionsProblem(options, connectionChecks)
})

/** `Sec-WebSocket-Protocol` tokens, in the client's order (already checked by ws's rule). */
export function offeredProtocols (header: string | string[] | undefined): string[] {
  return header === undefined ? [] : [...parseSubprotocols(String(header))]
}

/** Nothing to keep: one frozen empty object for every connection whose params or query are empty. */
const noParams: Readonly<Record<string, string>> = Object.freeze({})
const noQuery: Readonly<Record<string, string>> = Object.freeze(Object.create(null) as Record<string, string>)

function isEmpty (value: unknown): boolean {
  return value !== null && typeof value === 'object' && Object.keys(value).length === 0
}

/** What an upgrade decided that its request snapshot shows. */
interface Decided { readonly options: { readonly keepHeaders: readonly string[] }, readonly lease: Lease, readonly protocol: string }

/** The request as callbacks and `terminate` see it, for the connection's lifetime: small and frozen. */
export function snapshotOf (request: FastifyRequest, pending: Decided): RequestSnapshot {
  const keep = pending.options.keepHeaders
  let headers = noHeaders
  if (keep.length > 0) {
    const picked: Record<string, string | string[] | undefined> = {}
    for (const name of keep) {
      const lower = name.toLowerCase() // as Node names them
      picked[lower] = request.headers[lower]
    }
    headers = Object.freeze(picked)
  }
  return Object.freeze({
    id: request.id,
    method: request.method,
    url: request.url,
    routeUrl: pending.lease.route, // what the limits counted; the route's URL pattern
    params: isEmpty(request.params) ? noParams : request.params,
    query: isEmpty(request.query) ? noQuery : request.query,
    headers,
    ip: pending.lease.ip, // what the limits counted (request.ip; '' under injectWS, which has no socket)
    protocol: pending.protocol
  })
}
