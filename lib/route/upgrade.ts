/**
 * Before the 101: the step in front of the route's handler that checks the handshake, runs
 * `init`, negotiates the subprotocol and refuses with an HTTP answer; after it: the
 * @fastify/websocket handler that starts a Connection without keeping Fastify's request and
 * reply alive.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { WebSocket, WebSocketServer } from 'ws'
import { Connection } from '../actor/connection.js'
import type { RouteContext } from '../actor/context.js'
import { refusedChannel } from '../core/diagnostics.js'
import { jsonReader } from './json-reader.js'
import { answeringStream, kH2Stream, releaseCompatObjects } from './h2.js'
import { RETRY_AFTER_SECONDS } from './refusals.js'
import { originCheck, ownOrigin, type OriginCheck } from './origin.js'
import type { Destroyable, Lease } from '../registry/admission.js'
import type { Registry } from '../registry/registry.js'
import {
  InvalidHandshakeError, InvalidOptionError, InvalidResultError, OriginNotAllowedError, ProtocolNotOfferedError, ProtocolNotSupportedError,
  ProtocolRequiredError, ShuttingDownError, TooManyConnectionsError, UpgradeRequiredError
} from '../core/errors.js'
import {
  anything, assertHandler, assertRouteOptions, connectionChecks, mustBe, optionsProblem, resolveConnectionOptions,
  shapeChecker, type ResolvedConnectionOptions
} from '../core/options.js'
import type { InitCommands, RequestSnapshot, RouteWebSocketOptions, WebSocketHandler } from '../core/types.js'
import { internalsOf, parseSubprotocols } from '../wire/ws-internals.js'

/** What the plugin's registration decided for every route. */
export interface PluginDefaults {
  readonly connection: ResolvedConnectionOptions
  readonly route: RouteWebSocketOptions
  readonly registry: Registry
  readonly closeTimeout: number
}

/** What `init` decided, carried on the raw request from the step before the handler to the 101. */
interface PendingUpgrade {
  readonly state: unknown
  readonly options: ResolvedConnectionOptions
  readonly protocol: string
  /** This upgrade's place under the connection limits; the connection takes it over. */
  readonly lease: Lease
  /** The response @fastify/websocket assigned to the socket; detached after the 101 (HTTP/1.1). */
  readonly response: FastifyReply['raw']
}

const kPendingUpgrade = Symbol('fastify-ws-handlers.pending-upgrade')
type RawRequest = FastifyRequest['raw'] & { [kPendingUpgrade]?: PendingUpgrade, [kH2Stream]?: ServerHttp2Stream }
type AnyHandler = WebSocketHandler<unknown, unknown>

const noHeaders: RequestSnapshot['headers'] = Object.freeze({})

const kRunInit = Symbol('fastify-ws-handlers.run-init')
type WebSocketRouteOptions = RouteOptions & { wsHandler?: unknown, [kRunInit]?: UpgradeStep }
type UpgradeStep = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

/**
 * Turn Fastify route options into a WebSocket route, in place: the `wsHandler` that
 * @fastify/websocket calls after the 101, and the step (handshake checks and `init`) that
 * `runInitLast` puts in front of the route's handler.
 */
export function makeWebSocketRoute (
  instance: FastifyInstance, routeOptions: RouteOptions, handler: AnyHandler,
  wsOptions: RouteWebSocketOptions, defaults: PluginDefaults
): void {
  const url = routeOptions.url
  assertHandler(handler, url)
  assertRouteOptions(wsOptions, url)
  const settings: RouteWebSocketOptions = { ...defaults.route, ...definedOnly(wsOptions) }
  // The route's logLevel applies to its connections' logs, as to its requests'.
  const log = routeOptions.logLevel === undefined ? instance.log : instance.log.child({}, { level: routeOptions.logLevel })
  const jsonOptions = settings.json === true ? {} : settings.json === false ? undefined : settings.json
  const json = jsonOptions === undefined
    ? undefined
    : { read: jsonReader(instance, url, jsonOptions), onInvalid: jsonOptions.onInvalid ?? 'close' }
  const route: RouteContext = { url, handler, log, registry: defaults.registry, closeTimeout: defaults.closeTimeout, json }
  const connectionOptions = resolveConnectionOptions(defaults.connection, wsOptions)
  let allowOrigin: OriginCheck
  try {
    allowOrigin = originCheck(settings.allowOrigins, settings.ownOrigins)
  } catch (error) {
    throw new InvalidOptionError(`wsOptions of ${url}`, `option "allowOrigins" or "ownOrigins": ${(error as Error).message}`)
  }
  const options = routeOptions as WebSocketRouteOptions
  options[kRunInit] = upgradeStep(url, handler, settings, connectionOptions, allowOrigin, defaults.registry)
  options.wsHandler = function startConnection (this: FastifyInstance, socket: WebSocket, request: FastifyRequest): void {
    const raw = request.raw as RawRequest
    const pending = raw[kPendingUpgrade]!
    raw[kPendingUpgrade] = undefined
    if (raw[kH2Stream] === undefined) {
      // @fastify/websocket's error listener (added last, just before this handler) closes over
      // request and reply; ours closes over nothing. Listeners the app added are kept.
      const errorListeners = socket.listeners('error')
      socket.removeListener('error', errorListeners[errorListeners.length - 1] as () => void)
      // The response stays assigned to the socket and pins request and reply: let them go.
      ;(pending.response as ServerResponse).detachSocket(internalsOf(socket)._socket as Socket)
    } else {
      releaseCompatObjects(raw[kH2Stream])
      raw[kH2Stream] = undefined // over HTTP/2 the stream is the socket: nothing of the request holds it
    }
    const snapshot = snapshotOf(request, pending)
    defaults.registry.handOver(pending.lease) // counted from now on by the connection's routeUrl and ip
    // eslint-disable-next-line no-new -- the connection lives through the socket's listeners
    new Connection(route, socket, { state: pending.state, options: pending.options, request: snapshot, raw })
  }
}

/**
 * An onRoute hook added after every other plugin's: `init` runs in front of the route's handler,
 * so after every hook of every plugin (a preHandler that a rate limiter appends in its own
 * onRoute hook included), never on a request that a hook then refuses.
 */
export function runInitLast (registry: Registry): (routeOptions: RouteOptions) => void {
  return function runInitLast (routeOptions) {
    const step = (routeOptions as WebSocketRouteOptions)[kRunInit]
    if (step === undefined || routeOptions.method === 'HEAD') return
    const handler = routeOptions.handler
    const startConnection = (routeOptions as WebSocketRouteOptions).wsHandler as (this: FastifyInstance, socket: WebSocket, request: FastifyRequest) => void
    routeOptions.handler = function webSocketRoute (this: FastifyInstance, request, reply) {
      if (!isUpgradeRequest(request)) return handler.call(this, request, reply) // plain GETs as they were
      return step(request, reply).then(() => {
        if (reply.sent) return reply
        const stream = (request.raw as RawRequest)[kH2Stream]
        if (stream !== undefined) return acceptOverHttp2(this, request, reply, stream, startConnection, registry)
        const answer = handler.call(this, request, reply) // @fastify/websocket upgrades here, synchronously
        releaseIfNotUpgraded(request, registry)
        return answer
      })
    }
    // Marked where a request can read it (Fastify binds the handler it keeps, so not by handler).
    routeOptions.config = { ...routeOptions.config, [kWebSocketRoute]: true }
  }
}

/** In a WebSocket route's config, so that an HTTP/2 CONNECT to another route is refused (isWebSocketRoute). */
const kWebSocketRoute = Symbol('fastify-ws-handlers.websocket-route')

/** Whether Fastify routed this request to one of the plugin's WebSocket routes. */
export function isWebSocketRoute (request: FastifyRequest): boolean {
  return (request.routeOptions.config as { [kWebSocketRoute]?: boolean } | undefined)?.[kWebSocketRoute] === true
}

/**
 * An HTTP/2 CONNECT that `init` accepted: ws's handshake on the stream (h2.ts turns its 101
 * into the stream's 200), then the connection, as @fastify/websocket's handler does for HTTP/1.1.
 */
function acceptOverHttp2 (
  app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, stream: ServerHttp2Stream,
  startConnection: (this: FastifyInstance, socket: WebSocket, request: FastifyRequest) => void, registry: Registry
): FastifyReply {
  reply.hijack()
  const raw = request.raw as RawRequest
  const giveUp = (): void => {
    const pending = raw[kPendingUpgrade]
    raw[kPendingUpgrade] = undefined
    if (pending !== undefined) registry.release(pending.lease)
  }
  if (stream.closed) { // the client went away while init ran
    giveUp()
    return reply
  }
  // Gone before the connection took the lease over: ws gave up on it (an app's async verifyClient).
  stream.once('close', giveUp)
  const wss = app.websocketServer
  wss.handleUpgrade(request.raw as IncomingMessage, answeringStream(stream) as unknown as Duplex, Buffer.alloc(0), (ws) => {
    wss.emit('connection', ws, request.raw)
    startConnection.call(app, ws, request)
  })
  return reply
}

/** An admitted upgrade that did not become a connection must not count against the limits. */
function releaseIfNotUpgraded (request: FastifyRequest, registry: Registry): void {
  const raw = request.raw as RawRequest
  const pending = raw[kPendingUpgrade]
  if (pending === undefined) return // it became a connection, which holds the lease now
  if (request.ws && !raw.socket.destroyed) {
    // ws is still at it (an app's async verifyClient) or gave up: the socket's end settles it.
    raw.socket.once('close', () => { registry.release(pending.lease) })
    return
  }
  raw[kPendingUpgrade] = undefined // app.inject() with upgrade headers: the HTTP handler answered
  registry.release(pending.lease)
}

/** The HTTP handler of a WebSocket-only route: 426, as Cowboy answers (RFC 7230 §6.7 wants both headers). */
export function upgradeRequired (_request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.header('upgrade', 'websocket').header('connection', 'upgrade').send(withoutStack(new UpgradeRequiredError()))
}

/**
 * The plugin's own refusals (a coded 4xx) are answers, not faults: Fastify logs them at info,
 * and a stack trace there says nothing. Errors from init and 5xx keep theirs.
 */
function withoutStack (error: unknown): unknown {
  const { code, statusCode } = error as { code?: unknown, statusCode?: unknown }
  if (typeof code === 'string' && code.startsWith('FST_WS_') && typeof statusCode === 'number' && statusCode < 500) {
    Object.defineProperty(error, 'stack', { value: undefined })
  }
  return error
}

/**
 * @fastify/websocket's ws server decides the subprotocol and the extensions of every upgrade,
 * ours and the app's. Ours get what `init` decided; the app's own routes keep what the server
 * did before (and, when this plugin created the server, ws's default: no compression).
 */
export function governServer (wss: WebSocketServer, ownServer: boolean): void {
  const previousProtocols = wss.options.handleProtocols
  wss.options.handleProtocols = function selectProtocol (protocols: Set<string>, request: RawRequest): string | false {
    const pending = request[kPendingUpgrade]
    if (pending !== undefined) return pending.protocol === '' ? false : pending.protocol
    // A route that is not ours: keep what the server did before (ws picks the first offer).
    return typeof previousProtocols === 'function' ? previousProtocols(protocols, request) : protocols.values().next().value!
  }
  const shouldHandle = wss.shouldHandle
  // Public and overridable (ws's docs); ws calls it before it negotiates extensions.
  wss.shouldHandle = function negotiateCompression (request: RawRequest): boolean | Promise<boolean> {
    const pending = request[kPendingUpgrade]
    if (pending === undefined ? ownServer : !pending.options.compress) delete request.headers['sec-websocket-extensions']
    return shouldHandle.call(this, request)
  }
}

function upgradeStep (
  url: string, handler: AnyHandler, settings: RouteWebSocketOptions, connectionOptions: ResolvedConnectionOptions,
  allowOrigin: OriginCheck, registry: Registry
): UpgradeStep {
  return async function runInit (request, reply) {
    try {
      await checkAndInit(request, reply)
    } catch (error) {
      if (refusedChannel.hasSubscribers) refusedChannel.publish({ request, error, routeUrl: url, instanceId: registry.instanceId })
      if (isLoadShedding(error)) {
        answerLoadShedding(request, reply, error)
        return
      }
      throw withoutStack(error)
    }
  }

  async function checkAndInit (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { protocols = [], protocolRequired = false } = settings
    // ws would refuse these after init with a bare 400: refuse them first, with a code.
    const problem = handshakeProblem(request.headers)
    if (problem !== undefined) throw new InvalidHandshakeError(problem)
    // Cross-site WebSocket hijacking: browsers always send Origin (version 8 clients: Sec-WebSocket-Origin).
    const origin = request.headers.origin ?? request.headers['sec-websocket-origin']
    if (typeof origin === 'string' && !(await allowOrigin(origin, request))) {
      const own = settings.ownOrigins?.join(', ') ?? ownOrigin(request) ?? `${request.protocol}://${request.host}`
      throw new OriginNotAllowedError(origin, own, origin)
    }
    const offered = offeredProtocols(request.headers['sec-websocket-protocol'])
    let protocol = ''
    if (protocols.length > 0) {
      if (offered.length === 0) {
        if (protocolRequired) throw new ProtocolRequiredError(protocols.join(', '))
      } else {
        protocol = protocols.find((p) => offered.includes(p)) ?? ''
        if (protocol === '') throw new ProtocolNotSupportedError(offered.join(', '), protocols.join(', '))
      }
    }

    // Counted from here (refused over a limit before init runs); released if the upgrade fails.
    const lease = admit(request, reply)
    try {
      await runUserInit(request, reply, offered, protocol, lease)
    } catch (error) {
      registry.release(lease)
      throw error
    }
  }

  function admit (request: FastifyRequest, reply: FastifyReply): Lease {
    try {
      // Over HTTP/2 the stream is what app.close() may have to end, not the session's socket;
      // an injected request's socket (light-my-request's) cannot be destroyed: the request can.
      const raw = request.raw as RawRequest
      const socket = raw.socket as Partial<Destroyable> | undefined
      const ending: Destroyable = raw[kH2Stream] ?? (typeof socket?.destroy === 'function' ? socket as Destroyable : raw)
      return registry.admit(url, request.ip ?? '', settings.maxConnections, ending)
    } catch (error) {
      reply.header('retry-after', RETRY_AFTER_SECONDS)
      throw error
    }
  }

  async function runUserInit (request: FastifyRequest, reply: FastifyReply, offered: string[], negotiated: string, lease: Lease): Promise<void> {
    let protocol = negotiated
    let state: unknown
    let options = connectionOptions
    if (handler.init !== undefined) {
      const result = await handler.init(request, reply)
      if (reply.sent) {
        registry.release(lease) // init refused with its own HTTP response
        return
      }
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
    if (registry.draining) throw new ShuttingDownError() // a drain or app.close() began while init ran
    const raw = request.raw as RawRequest
    raw[kPendingUpgrade] = { state, options, protocol, lease, response: reply.raw }
  }
}

/** Refusals that shed load (a limit reached, shutting down): answers, not faults. */
function isLoadShedding (error: unknown): error is TooManyConnectionsErrorType | ShuttingDownErrorType {
  return error instanceof TooManyConnectionsError || error instanceof ShuttingDownError
}
type TooManyConnectionsErrorType = InstanceType<typeof TooManyConnectionsError>
type ShuttingDownErrorType = InstanceType<typeof ShuttingDownError>

/**
 * A 503 that sheds load is answered here, in Fastify's error format, and logged once at warn
 * without a stack: thrown, Fastify would log each at error level with its stack, and a flooding
 * client would fill the error logs. (The app's error handler is not called for it: not a fault.)
 */
function answerLoadShedding (request: FastifyRequest, reply: FastifyReply, error: TooManyConnectionsErrorType | ShuttingDownErrorType): void {
  request.log.warn({ code: error.code, route: request.routeOptions.url, ip: request.ip }, error.message)
  reply.code(503).send({ statusCode: 503, code: error.code, error: 'Service Unavailable', message: error.message })
}

const keyPattern = /^[+/0-9A-Za-z]{22}==$/ // ws's own rule

/** What ws would refuse in this handshake (websocket-server.js, handleUpgrade), or undefined. */
function handshakeProblem (headers: FastifyRequest['headers']): string | undefined {
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

/** `Sec-WebSocket-Protocol` tokens, in the client's order (already checked by ws's rule). */
function offeredProtocols (header: string | string[] | undefined): string[] {
  return header === undefined ? [] : [...parseSubprotocols(String(header))]
}

/** Nothing to keep: one frozen empty object for every connection whose params or query are empty. */
const noParams: Readonly<Record<string, string>> = Object.freeze({})
const noQuery: Readonly<Record<string, string>> = Object.freeze(Object.create(null) as Record<string, string>)

function isEmpty (value: unknown): boolean {
  return value !== null && typeof value === 'object' && Object.keys(value).length === 0
}

function snapshotOf (request: FastifyRequest, pending: PendingUpgrade): RequestSnapshot {
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

function definedOnly<T extends object> (options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>
}
