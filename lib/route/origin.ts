/**
 * Cross-Site WebSocket Hijacking defence: browsers send `Origin` with every upgrade and the
 * same-origin policy does not apply, so a page on another site could open a WebSocket with the
 * user's cookies. By default only the app's own origin (scheme, host and port of the request, as
 * Fastify sees them: `trustProxy` honours X-Forwarded-Proto/-Host) may upgrade; `allowOrigins`
 * adds exact origins, `https://*.example.com` patterns, a function, or '*' for public endpoints.
 * Requests without `Origin` are not from browsers (browsers always send it) and pass.
 */
import type { FastifyRequest } from 'fastify'
import type { AllowOrigins } from '../core/types.js'

/** Decides for one route; built once at declaration. */
export type OriginCheck = (origin: string, request: FastifyRequest) => boolean | Promise<boolean>

interface Pattern { scheme: string, suffix: string, port: string }

/**
 * A check for `allowOrigins` and `ownOrigins`; throws (a sentence) on an entry that cannot be
 * matched safely. With `ownOrigins`, the app's own origin is one of them, not what the request's
 * Host says (a DNS-rebinding page controls that).
 */
export function originCheck (allow: AllowOrigins | undefined, ownOrigins?: readonly string[]): OriginCheck {
  if (allow === '*') return () => true
  const own = ownOrigins === undefined ? undefined : new Set(ownOrigins.map((entry) => normalise(entry) ?? badEntry(entry)))
  const isOwn = (origin: string, request: FastifyRequest): boolean => own === undefined ? origin === ownOrigin(request) : own.has(origin)
  if (typeof allow === 'function') {
    return async (origin, request) => isOwn(normalise(origin) ?? '', request) || (await allow(origin, request)) === true
  }
  const exact = new Set<string>()
  const patterns: Pattern[] = []
  for (const entry of allow ?? []) {
    if (entry === 'null') exact.add('null')
    else if (entry.includes('*')) patterns.push(parsePattern(entry))
    else exact.add(normalise(entry) ?? badEntry(entry))
  }
  return (origin, request) => {
    if (origin === 'null') return exact.has('null') // sandboxed frames, file: pages: only when named
    const normalised = normalise(origin)
    if (normalised === undefined) return false
    if (isOwn(normalised, request) || exact.has(normalised)) return true
    return patterns.some((pattern) => matches(pattern, normalised))
  }
}

/** The app's own origin for this request, as the browser would write it. */
export function ownOrigin (request: FastifyRequest): string | undefined {
  return normalise(`${request.protocol}://${request.host}`)
}

/**
 * `scheme://host[:port]`, lower case, default port dropped; undefined unless the text is exactly
 * an origin (no path, query, fragment or userinfo: browsers send nothing else).
 */
function normalise (origin: string): string | undefined {
  let url: URL
  try {
    url = new URL(origin)
  } catch {
    return undefined
  }
  const written = origin.toLowerCase()
  const withDefaultPort = `${url.protocol}//${url.hostname}:${DEFAULT_PORTS[url.protocol.slice(0, -1)] ?? ''}`
  return written === url.origin || written === withDefaultPort ? url.origin : undefined
}

/**
 * `https://*.example.com[:port]`: one or more labels before `.example.com`, nothing else. So it
 * does not match `https://example.com`, `https://example.com.evil.io` or `https://evilexample.com`.
 */
function parsePattern (pattern: string): Pattern {
  const match = /^(https?|wss?):\/\/\*\.((?:[a-z0-9-]+\.)*[a-z0-9-]+)(?::(\d{1,5}))?$/i.exec(pattern)
  if (match === null) return badEntry(pattern)
  return { scheme: match[1]!.toLowerCase(), suffix: '.' + match[2]!.toLowerCase(), port: match[3] ?? '' }
}

function matches ({ scheme, suffix, port }: Pattern, origin: string): boolean {
  const url = new URL(origin)
  if (url.protocol !== `${scheme}:` || url.port !== normalisePort(scheme, port)) return false
  const host = url.hostname
  if (!host.endsWith(suffix)) return false
  const labels = host.slice(0, -suffix.length)
  return /^(?:[a-z0-9-]+\.)*[a-z0-9-]+$/.test(labels)
}

const DEFAULT_PORTS: Readonly<Record<string, string>> = { http: '80', https: '443', ws: '80', wss: '443' }

function normalisePort (scheme: string, port: string): string {
  return port === DEFAULT_PORTS[scheme] ? '' : port
}

function badEntry (entry: string): never {
  throw new Error(`"${entry}" is not an origin (scheme://host[:port]), "null", a pattern like "https://*.example.com", or "*"`)
}
