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
import { RETRY_AFTER_SECONDS, answerLoadShedding, isLoadShedding, withoutStack } from './refusals.js'
import { handshakeProblem, initResultProblem, isUpgradeRequest, offeredProtocols, snapshotOf } from './handshake.js'
import { originCheck, ownOrigin, type OriginCheck } from './origin.js'
import type { Destroyable, Lease } from '../registry/admission.js'
import type { Registry } from '../registry/registry.js'
import {
  InvalidHandshakeError, InvalidOptionError, InvalidResultError, OriginNotAllowedError, ProtocolNotOfferedError, ProtocolNotSupportedError,
  ProtocolRequiredError, ShuttingDownError
} from '../core/errors.js'
import { assertHandler, assertRouteOptions, definedOnly, resolveConnectionOptions, type ResolvedConnectionOptions } from '../core/options.js'
import type { InitCommands, RouteWebSocketOptions, WebSocketHandler } from '../core/types.js'
import { internalsOf } from '../wire/ws-internals.js'

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
