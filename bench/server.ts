/**
 * One benchmark server: `node --expose-gc server.js <kind> <scenario>`, started by run.ts.
 * kind: `ws` (a raw ws server), `fastify-websocket` (raw @fastify/websocket), `plugin` (this one).
 * It tells its port over IPC and answers `memory` requests with figures taken after a full gc.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import fastifyWebsocket from '@fastify/websocket'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import Fastify from 'fastify'
import { WebSocketServer, type PerMessageDeflateOptions, type WebSocket } from 'ws'
import wsHandlers, { defineHandler, text, type InFrame, type OutFrame, type Publication, type WebSocketHandler } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'

export type Kind = 'ws' | 'fastify-websocket' | 'plugin'
export type Scenario =
  | 'echo' | 'async-echo' | 'compressed' | 'compressed-hibernate'
  | 'echo-h2' // plugin only: Fastify's cleartext http2 server (prior knowledge), WebSockets over HTTP/2 streams
  | 'echo-h2-node-client' // the same server; its client keeps Node's default windows (run.ts)
  | 'echo-heartbeat' // plugin only: the default idle timeout and pings (the others run with both off)
  | 'echo-metrics' // plugin only: an OpenTelemetry metrics SDK registered (a reader that collects on demand)
  | 'echo-decode' // raw servers only: text is decoded to a string and the string sent back
  | 'redis' | 'redis-history' // plugin only, on Redis: text is broadcast to a topic / published to a topic with history (followed with positions)
  | 'fanout' | 'fanout-loop' // broadcast to a topic / a loop of ws.send over websocketServer.clients
  | 'fanout-publish' // publish to a topic: each subscriber's info replies with the frame (the run queue)
  | 'topics-1' | 'topics-10' // every connection in 1 or 10 topics
  | 'scale' // plugin only, default heartbeats: every connection in topic 'all', pongs counted
  | 'flood-limited' | 'flood-unlimited' // text starting with "f" is handled without a reply, the rest echoed; with or without rateLimit

export interface MemoryFigures { heapUsed: number, rss: number, external: number, connections: number }
export interface CpuFigures { cpuMicros: number }

const [kind, scenario] = process.argv.slice(2) as [Kind, Scenario]
const compressed = scenario === 'compressed' || scenario === 'compressed-hibernate'
// No context takeover from the client lets an idle server drop its inflater too (see bench/README.md).
const deflate: PerMessageDeflateOptions | false = compressed ? { clientNoContextTakeover: true, threshold: 0 } : false
const gc = globalThis.gc as () => void

/** The raw servers' echo: what an app writes by hand on ws or @fastify/websocket. */
function rawEcho (socket: WebSocket): void {
  if (scenario === 'echo-decode') {
    socket.on('message', (data: Buffer, isBinary) => { socket.send(isBinary ? data : data.toString(), { binary: isBinary }) })
    return
  }
  socket.on('message', scenario === 'async-echo'
    ? async (data, isBinary) => {
      await Promise.resolve()
      socket.send(data, { binary: isBinary })
    }
    : (data, isBinary) => { socket.send(data, { binary: isBinary }) })
}

function reply (frame: InFrame): OutFrame | undefined {
  if (frame.type === 'text') return { type: 'text', data: frame.data }
  if (frame.type === 'binary') return { type: 'binary', data: frame.data }
  return undefined
}

const pluginEcho = defineHandler(scenario === 'async-echo'
  ? {
      async handle (frame) {
        await Promise.resolve()
        const out = reply(frame)
        return out === undefined ? undefined : { reply: out }
      }
    }
  : {
      handle (frame) {
        const out = reply(frame)
        return out === undefined ? undefined : { reply: out, hibernate: scenario === 'compressed-hibernate' }
      }
    })

/** One 1 KiB frame, the same every time. */
const fanoutPayload = Buffer.alloc(1024, 7)
const fanoutFrame: OutFrame = { type: 'binary', data: fanoutPayload }
let fanOut = (): void => {}
/** Flood frames handled (the flood scenarios). */
let flooded = 0
/** Connections that answered a ping (the scale scenario). */
let pongs = 0
let shutdown = async (): Promise<void> => {}
function handlerFor (wsConnections: import('../lib/index.js').WebSocketConnections): WebSocketHandler<unknown, unknown> {
  switch (scenario) {
    case 'fanout':
    case 'fanout-loop':
      return { websocketInit: (_state, ctx) => { ctx.subscribe('all') } }
    case 'fanout-publish':
      return { websocketInit: (_state, ctx) => { ctx.subscribe('all') }, info: () => ({ reply: fanoutFrame }) }
    case 'topics-1':
    case 'topics-10':
      return { websocketInit: (_state, ctx) => { for (let i = 0; i < (scenario === 'topics-1' ? 1 : 10); i++) ctx.subscribe(`topic-${i}`) } }
    case 'scale':
      return {
        websocketInit: (_state, ctx) => { ctx.subscribe('all') },
        // Counts connections that answered at least once (the state remembers it).
        handle (frame, state) {
          if (frame.type !== 'pong' || state === true) return undefined
          pongs++
          return { state: true }
        }
      }
    case 'flood-limited':
    case 'flood-unlimited':
      return {
        handle (frame) {
          if (frame.type !== 'text') return undefined
          if (frame.data.startsWith('f')) {
            flooded++
            return undefined
          }
          return { reply: text(frame.data) }
        }
      }
    case 'redis-history':
      // Each text is published to a topic with history; subscribers follow it with positions.
      return {
        websocketInit: (_state, ctx) => { ctx.subscribe('bench', {}) },
        handle: (frame) => { if (frame.type === 'text') wsConnections.publish('bench', frame.data) },
        info: (event) => (event as Publication).kind === 'publication' ? { reply: text((event as Publication<string>).message) } : undefined
      }
    case 'redis':
      return {
        websocketInit: (_state, ctx) => { ctx.subscribe('bench') },
        handle: (frame) => { if (frame.type === 'text') wsConnections.broadcast('bench', text(frame.data)) }
      }
    default:
      return pluginEcho
  }
}

let connections = (): number => 0
let port: number

if (kind === 'ws') {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: deflate, maxPayload: 1_000_000 })
  wss.on('connection', rawEcho)
  await once(wss, 'listening')
  port = (wss.address() as AddressInfo).port
  connections = () => wss.clients.size
} else {
  const overH2 = scenario === 'echo-h2' || scenario === 'echo-h2-node-client'
  const app = (overH2 ? Fastify({ logger: false, http2: true }) : Fastify({ logger: false })) as unknown as ReturnType<typeof Fastify>
  if (kind === 'fastify-websocket') {
    await app.register(fastifyWebsocket, { options: { perMessageDeflate: deflate, maxPayload: 1_000_000 } })
    app.get('/', { websocket: true }, rawEcho)
    connections = () => app.websocketServer.clients.size
    fanOut = () => { for (const socket of app.websocketServer.clients) socket.send(fanoutPayload) }
  } else {
    // Instances A and B of one run share a channel prefix (their parent's pid).
    const overRedis = scenario === 'redis' || scenario === 'redis-history'
    const adapter = overRedis ? redisAdapter({ channelPrefix: `fws-bench-${process.ppid}-${scenario}:` }) : undefined
    const history = scenario === 'redis-history' ? { bench: { size: 10_000 } } : undefined
    const heartbeat = scenario === 'echo-heartbeat' || scenario === 'scale' ? {} : { idleTimeout: 0, pingInterval: 0 }
    // As an app that scrapes: the SDK aggregates every measurement; nothing is exported during the run.
    const metrics = scenario === 'echo-metrics' ? { meterProvider: new MeterProvider({ readers: [new PrometheusExporter({ preventServerStart: true })] }) } : undefined
    await app.register(wsHandlers, { perMessageDeflate: deflate || undefined, ...heartbeat, adapter, metrics, history })
    // 2,000 messages/s per connection: far above what the paced neighbour sends, far below a flood.
    const rateLimit = scenario === 'flood-limited' ? { messagesPerSecond: 2000 } : undefined
    app.ws('/', handlerFor(app.wsConnections), { compress: compressed, rateLimit })
    connections = () => app.wsConnections.size
    shutdown = async () => { await app.close() }
    fanOut = scenario === 'fanout' || scenario === 'scale'
      ? () => { app.wsConnections.broadcast('all', fanoutFrame) }
      : scenario === 'fanout-publish'
        ? () => { app.wsConnections.publish('all', 'go') }
        : () => { for (const socket of app.websocketServer.clients) socket.send(fanoutPayload) } // the same sockets, one send each
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as AddressInfo).port
}

async function measure (): Promise<MemoryFigures> {
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const { heapUsed, rss, external } = process.memoryUsage()
  return { heapUsed, rss, external, connections: connections() }
}

process.on('message', (message: { id: number, cmd: 'memory' | 'cpu' | 'fanout' | 'flooded' | 'pongs' | 'close' | 'exit' }) => {
  if (message.cmd === 'exit') process.exit(0) // a clean exit writes --cpu-prof profiles
  if (message.cmd === 'flooded' || message.cmd === 'pongs') {
    process.send!({ id: message.id, flooded, pongs })
    return
  }
  if (message.cmd === 'close') { // app.close(): every connection closed with 1001, terminates awaited
    const started = performance.now()
    shutdown().then(() => process.send!({ id: message.id, closeMs: performance.now() - started }), (error: unknown) => { throw error })
    return
  }
  if (message.cmd === 'fanout') {
    const startedAt = performance.timeOrigin + performance.now()
    fanOut()
    process.send!({ id: message.id, startedAt })
    return
  }
  if (message.cmd === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send!({ id: message.id, cpuMicros: user + system })
    return
  }
  measure().then((figures) => process.send!({ id: message.id, ...figures }), (error: unknown) => { throw error })
})
process.send!({ port })
