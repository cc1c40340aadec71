/**
 * fastify-ws-handlers: Cowboy-style WebSocket handlers for Fastify.
 *
 * Registration validates the options, decorates `app.ws()` and `app.wsConnections`, turns
 * routes with a `ws` option into WebSocket routes, registers @fastify/websocket when the app
 * has not, and drains every connection (1012, in batches) on app.close().
 */
import type { Duplex } from 'node:stream'
import fastifyWebsocket from '@fastify/websocket'
import type { FastifyInstance, FastifyPluginAsync, RouteGenericInterface, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, RouteOptionOrderError } from './core/errors.js'
import { HistoryConfig } from './registry/history.js'
import { DEFAULTS, DEFAULT_CLOSE_TIMEOUT, assertPluginOptions, fastifyRouteOptionKeys, resolveConnectionOptions } from './core/options.js'
import { Registry } from './registry/registry.js'
import type {
  RouteWebSocketOptions, WebSocketConnections, WebSocketHandler, WebSocketHandlersOptions
} from './core/types.js'
import { governServer, isWebSocketRoute, makeWebSocketRoute, runInitLast, type PluginDefaults } from './route/upgrade.js'
import { isHttp2Server, kH2Stream, serveExtendedConnect, type H2Request } from './route/h2.js'
import { shuttingDownAnswer, upgradeRequired } from './route/refusals.js'
import { checkWs } from './wire/ws-check.js'
import { settledWithin } from './core/timeout.js'
import { inProcessAdapter } from './registry/in-process.js'
import { meterFor, recordMetrics } from './registry/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Declare a WebSocket route: `app.ws('/echo', handler, { idleTimeout: 30_000 })`. The options
     * may also carry Fastify's route options (`schema` for the upgrade request, `config`,
     * `onRequest` and other hooks, `constraints`, `logLevel`). Plain GETs get 426.
     */
    ws<State = undefined, Info = unknown, Message = never, Route extends RouteGenericInterface = RouteGenericInterface>(
      url: string, handler: WebSocketHandler<State, Info, Message, Route>,
      options?: RouteWebSocketOptions & Omit<RouteShorthandOptions, 'ws' | 'wsOptions' | 'websocket'>
    ): FastifyInstance
    /** Open connections: look one up by id, post to it. */
    wsConnections: WebSocketConnections
  }
  interface RouteShorthandOptions {
    /** Makes this GET route a WebSocket route too; `handler` still answers plain GETs. */
    ws?: WebSocketHandler<unknown, unknown>
    /** Options of the WebSocket route (with `ws`). */
    wsOptions?: RouteWebSocketOptions
  }
}

const plugin: FastifyPluginAsync<WebSocketHandlersOptions> = async function wsHandlers (fastify, opts) {
  assertPluginOptions(opts)
  await checkWs() // the ws that @fastify/websocket resolves still does what this plugin relies on
  const {
    closeTimeout = DEFAULT_CLOSE_TIMEOUT, perMessageDeflate, adapter = inProcessAdapter(),
    maxConnections, maxConnectionsPerIp, ipv6Subnet, metrics, history, drain, ...routeDefaults // app-wide, not route defaults
  } = opts
  if (history !== undefined && adapter.history === undefined) {
    throw new InvalidOptionError('plugin options', 'option "history": this adapter keeps no history (inProcessAdapter() and redisAdapter() do)')
  }
  const registry = new Registry(adapter, fastify.log, { maxConnections, maxConnectionsPerIp, ipv6Subnet },
    history === undefined ? undefined : new HistoryConfig(history), drain, closeTimeout)
  // What is started is undone in one place, in reverse order: at app.close(), or at once when a
  // later step of the registration fails (a meterProvider that throws must not leave Redis open).
  const started: Array<{ what: string, undo: () => unknown }> = []
  async function undoStarted (): Promise<void> {
    for (const { what, undo } of started.reverse()) {
      try {
        await undo()
      } catch (error) {
        fastify.log.error({ err: error }, `WebSocket ${what} failed to close`)
      }
    }
    started.length = 0
  }
  try {
    await adapter.start(registry.local, fastify.log)
    // Bounded whatever the adapter does: a broker that stops answering must not hold app.close().
    started.push({ what: 'adapter', undo: async () => await settledWithin(Promise.resolve().then(() => adapter.close(closeTimeout)), closeTimeout) })
    const meter = meterFor(metrics)
    if (meter !== undefined) started.push({ what: 'metrics', undo: recordMetrics(meter, registry) })
  } catch (error) {
    await undoStarted()
    throw error
  }
  fastify.addHook('onClose', undoStarted)
  const defaults: PluginDefaults = {
    connection: resolveConnectionOptions(DEFAULTS, opts),
    route: routeDefaults,
    registry,
    closeTimeout
  }
  const websocketRegisteredByApp = fastify.hasDecorator('websocketServer')

  fastify.decorate('wsConnections', registry)
  fastify.decorate('ws', function ws<State, Info, Message> (
    this: FastifyInstance, url: string, handler: WebSocketHandler<State, Info, Message>, options: Record<string, unknown> = {}
  ) {
    const fastifyOptions: Record<string, unknown> = {}
    // Fastify's own route options go to the route; the rest is checked as WebSocket options (typos
    // included). What is not an object goes to that check as it is, to be refused.
    let wsOptions: unknown = options
    if (options !== null && typeof options === 'object' && !Array.isArray(options)) {
      const rest: Record<string, unknown> = {}
      for (const [key, value] of Object.entries(options)) (fastifyRouteOptionKeys.has(key) ? fastifyOptions : rest)[key] = value
      wsOptions = rest
    }
    // The route context wants the URL with its prefix, as onRoute hooks see it; route() adds it itself.
    const routeOptions = { ...fastifyOptions, method: 'GET', url: this.prefix + url, handler: upgradeRequired } as RouteOptions
    makeWebSocketRoute(this, routeOptions, handler as WebSocketHandler<unknown, unknown>, wsOptions as RouteWebSocketOptions, defaults)
    return this.route({ ...routeOptions, url })
  })

  // Added before @fastify/websocket is registered, so that this hook sees routes first.
  fastify.addHook('onRoute', function declareWebSocketRoute (routeOptions) {
    const { ws, wsOptions = {} } = routeOptions
    if (!('ws' in routeOptions) || routeOptions.method === 'HEAD') return
    if (websocketRegisteredByApp) throw new RouteOptionOrderError(routeOptions.url)
    makeWebSocketRoute(this, routeOptions, ws!, wsOptions, defaults)
  })

  // WebSockets over HTTP/2 (RFC 8441) when the app runs Fastify's http2 server.
  const h2 = isHttp2Server(fastify.server) ? serveExtendedConnect(fastify, fastify.server, () => registry.draining) : undefined
  if (h2 !== undefined) {
    fastify.addHook('onRequest', function refuseConnectToOtherRoutes (request, reply, done) {
      if ((request.raw as unknown as H2Request)[kH2Stream] === undefined || isWebSocketRoute(request)) {
        done()
        return
      }
      reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `${request.url} is not a WebSocket route` })
    })
  }

  fastify.addHook('preClose', async function closeConnections () {
    // From now on Fastify's router answers every request with a 503 of its own: upgrades get the
    // drain's (Retry-After, FST_WS_SHUTTING_DOWN) here instead of being routed, and their socket,
    // which is not the HTTP server's to end (it would hold server.close() forever), is ended.
    fastify.server.removeAllListeners('upgrade')
    fastify.server.on('upgrade', refuseUpgradeWhileClosing)
    await registry.shutdown()
    // Node's server.close() waits for every HTTP/2 session, which clients keep open: close the
    // ones that carried WebSockets, now that their WebSockets are closed.
    h2?.closeSessions(closeTimeout)
  })

  if (!websocketRegisteredByApp) {
    // Server-wide settings stay ws's defaults, so that the app's own @fastify/websocket routes
    // behave as without this plugin; ours get their limits per connection. Deflate is on so
    // that routes with `compress` can negotiate it; governServer keeps it off everywhere else.
    await fastify.register(fastifyWebsocket, { options: { perMessageDeflate: perMessageDeflate ?? {} } })
  }
  governServer(fastify.websocketServer, !websocketRegisteredByApp)
  // After @fastify/websocket's own onRoute hook: init goes in front of its handler.
  fastify.addHook('onRoute', runInitLast(registry))
}

/**
 * A server event: nothing may throw out of it, nor out of the socket, whose error listener
 * Node removed before 'upgrade' (a client gone already: its error is dropped with it).
 */
function refuseUpgradeWhileClosing (_request: unknown, socket: Duplex): void {
  socket.on('error', () => {})
  const { headers, body } = shuttingDownAnswer()
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  // Ended, then destroyed once the 503 is written (any Duplex: injectWS's in-memory socket has no destroySoon()).
  socket.once('finish', () => { socket.destroy() })
  socket.end(`HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n${head}\r\n${body}`)
}

/** The plugin. Register it once, before declaring WebSocket routes. */
export const fastifyWsHandlers = fp(plugin, { fastify: '5.x', name: 'fastify-ws-handlers' })
export default fastifyWsHandlers

/** Identity helper: the state and info types flow through every callback. */
export function defineHandler<
  State = undefined, Info = unknown, Message = never, Route extends RouteGenericInterface = RouteGenericInterface
> (
  handler: WebSocketHandler<State, Info, Message, Route>
): WebSocketHandler<State, Info, Message, Route> {
  return handler
}

export { text, json, binary, ping, pong, close } from './core/frames.js'
export { topic } from './core/topics.js'
export { upgradeRequired } from './route/refusals.js'
export { inProcessAdapter, InProcessBus } from './registry/in-process.js'
export { CloseCode } from './core/close-codes.js'
export { formatPosition, parsePosition } from './client.js'
export * from './core/errors.js'
export * as diagnostics from './core/diagnostics.js'
export type * from './core/types.js'
