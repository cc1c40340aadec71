/**
 * One benchmark server: `node --expose-gc server.js <kind> <scenario>`, started by run.ts.
 * kind: `ws` (a raw ws server), `fastify-websocket` (raw @fastify/websocket), `plugin` (this one).
 * It tells its port over IPC and answers `memory` requests with figures taken after a full gc.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import fastifyWebsocket from '@fastify/websocket'
import Fastify from 'fastify'
import { WebSocketServer, type PerMessageDeflateOptions, type WebSocket } from 'ws'
import wsHandlers, { defineHandler, type InFrame, type OutFrame } from '../lib/index.js'

export type Kind = 'ws' | 'fastify-websocket' | 'plugin'
export type Scenario = 'echo' | 'async-echo' | 'compressed' | 'compressed-hibernate'

export interface MemoryFigures { heapUsed: number, rss: number, external: number, connections: number }
export interface CpuFigures { cpuMicros: number }

const [kind, scenario] = process.argv.slice(2) as [Kind, Scenario]
const compressed = scenario === 'compressed' || scenario === 'compressed-hibernate'
// No context takeover from the client lets an idle server drop its inflater too (see bench/README.md).
const deflate: PerMessageDeflateOptions | false = compressed ? { clientNoContextTakeover: true, threshold: 0 } : false
const gc = globalThis.gc as () => void

/** The raw servers' echo: what an app writes by hand on ws or @fastify/websocket. */
function rawEcho (socket: WebSocket): void {
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

let connections = (): number => 0
let port: number

if (kind === 'ws') {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: deflate, maxPayload: 1_000_000 })
  wss.on('connection', rawEcho)
  await once(wss, 'listening')
  port = (wss.address() as AddressInfo).port
  connections = () => wss.clients.size
} else {
  const app = Fastify({ logger: false })
  if (kind === 'fastify-websocket') {
    await app.register(fastifyWebsocket, { options: { perMessageDeflate: deflate, maxPayload: 1_000_000 } })
    app.get('/', { websocket: true }, rawEcho)
    connections = () => app.websocketServer.clients.size
  } else {
    await app.register(wsHandlers, { perMessageDeflate: deflate || undefined, idleTimeout: 0 })
    app.ws('/', pluginEcho, { compress: compressed })
    connections = () => app.wsConnections.size
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

process.on('message', (message: { id: number, cmd: 'memory' | 'cpu' | 'exit' }) => {
  if (message.cmd === 'exit') process.exit(0) // a clean exit writes --cpu-prof profiles
  if (message.cmd === 'cpu') {
    const { user, system } = process.cpuUsage()
    process.send!({ id: message.id, cpuMicros: user + system })
    return
  }
  measure().then((figures) => process.send!({ id: message.id, ...figures }), (error: unknown) => { throw error })
})
process.send!({ port })
