/**
 * The other processes of the drain bench (history.ts): `peer` is instance B, which counts the
 * upgrades it accepts per 100 ms; `clients` opens connections to instance A and, as soon as A
 * closes one, opens it again to B (as a reconnecting client does), and says when all are back.
 */
import Fastify from 'fastify'
import WebSocket from 'ws'
import wsHandlers from '../lib/index.js'

const role = process.argv[2]

if (role === 'peer') {
  const app = Fastify()
  await app.register(wsHandlers, { idleTimeout: 0, pingInterval: 0 })
  const opened: number[] = []
  app.ws('/', { websocketInit: () => { opened.push(performance.now()) } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  process.send!({ port: (app.server.address() as { port: number }).port })
  process.on('message', () => {
    const first = opened[0] ?? 0
    const perTenth: number[] = []
    for (const at of opened) {
      const slot = Math.floor((at - first) / 100)
      perTenth[slot] = (perTenth[slot] ?? 0) + 1
    }
    process.send!({ perTenth: Array.from(perTenth, (n) => n ?? 0) })
  })
} else {
  process.once('message', async ({ from, to, connections }: { from: string, to: string, connections: number }) => {
    let back = 0
    const reconnect = (): void => {
      const ws = new WebSocket(to)
      ws.on('open', () => { if (++back === connections) process.send!('back') })
      ws.on('error', () => {})
    }
    for (let opened = 0; opened < connections;) {
      const batch = Math.min(200, connections - opened)
      await Promise.all(Array.from({ length: batch }, async () => {
        const ws = new WebSocket(from)
        ws.on('error', () => {})
        ws.once('close', reconnect)
        await new Promise((resolve) => ws.once('open', resolve))
      }))
      opened += batch
    }
    process.send!('open')
  })
}
