/**
 * Before the 101: the route-level preHandler that runs `init`, negotiates the subprotocol and
 * refuses with an HTTP answer; after it: the @fastify/websocket handler that starts a Connection
 * without keeping Fastify's request and reply alive.
 */
import type {
  FastifyInstance, FastifyReply, FastifyRequest, RouteOptions, preHandlerAsyncHookHandler
} from 'fastify'
import type WebSocket from 'ws'
import { Connection, type ConnectionRegistry, type RouteContext } from './connection.js'
import {
  InvalidResultError, OriginNotAllowedError, ProtocolNotOfferedError, ProtocolNotSupportedError,
  ProtocolRequiredError, UpgradeRequiredError
} from './errors.js'
import {
  anything, assertHandler, assertRouteOptions, connectionChecks, mustBe, optionsProblem, resolveConnectionOptions,
  shapeChecker, type ResolvedConnectionOptions
} from './options.js'
import type { InitCommands, RequestSnapshot, RouteWebSocketOptions, WebSocketHandler } from './types.js'
import { assertWsInternals, internalsOf } from './ws-internals.js'

/** What the plugin's registration decided for every route. */
export interface PluginDefaults {
  readonly connection: ResolvedConnectionOptions
  readonly route: RouteWebSocketOptions
  readonly registry: ConnectionRegistry
}

/** What `init` decided, carried on the raw request from the preHandler to the 101. */
interface PendingUpgrade {
  readonly state: unknown
  readonly options: ResolvedConnectionOptions
  readonly protocol: string
  /** The response @fastify/websocket assigned to the socket; detached after the 101. */
  readonly response: FastifyReply['raw']
}

const kPendingUpgrade = Symbol('fastify-ws-handlers.pending-upgrade')
type RawRequest = FastifyRequest['raw'] & { [kPendingUpgrade]?: PendingUpgrade }
type AnyHandler = WebSocketHandler<unknown, unknown>

const noHeaders: RequestSnapshot['headers'] = Object.freeze({})

/**
 * Turn Fastify route options into a WebSocket route, in place: the preHandler that runs `init`
 * and the `wsHandler` that @fastify/websocket calls after the 101.
 */
export function makeWebSocketRoute (
  instance: FastifyInstance, routeOptions: RouteOptions, handler: AnyHandler,
  wsOptions: RouteWebSocketOptions, defaults: PluginDefaults
): void {
  const url = routeOptions.url
  assertHandler(handler, url)
  assertRouteOptions(wsOptions, url)
  const settings: RouteWebSocketOptions = { ...defaults.route, ...definedOnly(wsOptions) }
  const route: RouteContext = { url, handler, log: instance.log, registry: defaults.registry }
  const connectionOptions = resolveConnectionOptions(defaults.connection, wsOptions)
  const preHandler = routeOptions.preHandler
  routeOptions.preHandler = [
    ...(preHandler === undefined ? [] : Array.isArray(preHandler) ? preHandler : [preHandler]),
    upgradeHook(handler, settings, connectionOptions)
  ]
  ;(routeOptions as RouteOptions & { wsHandler: unknown }).wsHandler = function startConnection (
    this: FastifyInstance, socket: WebSocket, request: FastifyRequest
  ): void {
    assertWsInternals(socket) // once per process: throws (and @fastify/websocket closes the socket) if ws changed
    const raw = request.raw as RawRequest
    const pending = raw[kPendingUpgrade]!
    raw[kPendingUpgrade] = undefined
    // @fastify/websocket's error listener (added last, after the 'connection' event) closes over
    // request and reply; ours closes over nothing. Listeners the app added are kept.
    const errorListeners = socket.listeners('error')
    socket.removeListener('error', errorListeners[errorListeners.length - 1] as () => void)
    // app.close() is ours to do (1001 + terminate); @fastify/websocket's would send a bare close.
    // ws's 'close' listener (added first) only keeps that set up to date: a closure per connection.
    const wss = this.websocketServer
    if (wss.clients?.delete(socket) === true) socket.removeListener('close', socket.listeners('close')[0] as () => void)
    // The response stays assigned to the socket and pins request and reply: let them go.
    pending.response.detachSocket(internalsOf(socket)._socket)
    const snapshot = snapshotOf(request, pending, url)
    // eslint-disable-next-line no-new -- the connection lives through the socket's listeners
    new Connection(route, socket, { state: pending.state, options: pending.options, request: snapshot })
  }
}

/** The HTTP handler of a WebSocket-only route: 426, as Cowboy answers. */
export function upgradeRequired (_request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.header('upgrade', 'websocket').send(new UpgradeRequiredError())
}

/** @fastify/websocket's `handleProtocols`: the protocol our preHandler chose, else the previous rule. */
export function protocolSelector (
  previous: ((protocols: Set<string>, request: RawRequest) => string | false) | null | undefined
): (protocols: Set<string>, request: RawRequest) => string | false {
  return function selectProtocol (protocols, request) {
    const pending = request[kPendingUpgrade]
    if (pending !== undefined) return pending.protocol === '' ? false : pending.protocol
    // A route that is not ours: keep what the server did before (ws picks the first offer).
    return typeof previous === 'function' ? previous(protocols, request) : protocols.values().next().value!
  }
}

function upgradeHook (
  handler: AnyHandler, settings: RouteWebSocketOptions, connectionOptions: ResolvedConnectionOptions
): preHandlerAsyncHookHandler {
  const { protocols = [], protocolRequired = false, allowOrigins } = settings
  return async function runInit (request, reply) {
    if (!isUpgradeRequest(request)) return // a plain HTTP GET on the same path goes on to the HTTP handler

    const origin = request.headers.origin
    if (allowOrigins !== undefined && origin !== undefined && !allowOrigins.includes(origin)) {
      throw new OriginNotAllowedError(origin)
    }
    const offered = parseProtocols(request.headers['sec-websocket-protocol'])
    let protocol = ''
    if (protocols.length > 0) {
      if (offered.length === 0) {
        if (protocolRequired) throw new ProtocolRequiredError(protocols.join(', '))
      } else {
        protocol = protocols.find((p) => offered.includes(p)) ?? ''
        if (protocol === '') throw new ProtocolNotSupportedError(offered.join(', '), protocols.join(', '))
      }
    }

    let state: unknown
    let options = connectionOptions
    if (handler.init !== undefined) {
      const result = await handler.init(request, reply)
      if (reply.sent) return reply // init refused with its own HTTP response
      if (result !== undefined) {
        const problem = initResultProblem(result)
        if (problem !== undefined) throw new InvalidResultError('init', problem)
        const commands = result as InitCommands<unknown>
        if (commands.protocol !== undefined) {
          if (!offered.includes(commands.protocol)) throw new ProtocolNotOfferedError(commands.protocol)
          protocol = commands.protocol
        }
        if (commands.options !== undefined) options = resolveConnectionOptions(options, commands.options)
        state = commands.state
      }
    }
    const raw = request.raw as RawRequest
    raw[kPendingUpgrade] = { state, options, protocol, response: reply.raw }
    // Compression is negotiated by ws from this header: without it, this connection is not compressed.
    if (!options.compress) delete raw.headers['sec-websocket-extensions']
  }
}

/**
 * Cowboy's rule, read from the headers rather than from @fastify/websocket's `request.ws`, so
 * that `app.inject()` with upgrade headers meets the same refusals as a real upgrade.
 */
function isUpgradeRequest (request: FastifyRequest): boolean {
  const { connection, upgrade } = request.headers
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' &&
    typeof connection === 'string' && /(?:^|,)\s*upgrade\s*(?:,|$)/i.test(connection)
}

const initResultProblem = shapeChecker({
  state: anything,
  protocol: mustBe('protocol', 'a string', (value) => typeof value === 'string'),
  options: (options) => optionsProblem(options, connectionChecks)
})

/** `Sec-WebSocket-Protocol` tokens, in the client's order (the header may repeat). */
function parseProtocols (header: string | string[] | undefined): string[] {
  if (header === undefined) return []
  return String(header).split(',').map((token) => token.trim()).filter((token) => token.length > 0)
}

function snapshotOf (request: FastifyRequest, pending: PendingUpgrade, routeUrl: string): RequestSnapshot {
  const keep = pending.options.keepHeaders
  let headers = noHeaders
  if (keep.length > 0) {
    const picked: Record<string, string | string[] | undefined> = {}
    for (const name of keep) picked[name] = request.headers[name.toLowerCase()]
    headers = Object.freeze(picked)
  }
  return Object.freeze({
    id: request.id,
    method: request.method,
    url: request.url,
    routeUrl,
    params: request.params,
    query: request.query,
    headers,
    ip: request.ip ?? '', // injectWS has no socket, hence no ip
    protocol: pending.protocol
  })
}

function definedOnly<T extends object> (options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>
}
