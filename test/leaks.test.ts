/**
 * Nothing outlives its connection: after many connections that each started timers, had an
 * idle timer and were closed in every way, the process holds exactly the handles it held before.
 * This file runs in its own process, so the counts are exact.
 */
import t from 'tap'
import { defineHandler, text, type TimeoutMessage } from '../lib/index.js'
import { buildApp, connect, listen, sleep, until } from './helpers.js'

const resources = (): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const name of process.getActiveResourcesInfo().sort()) counts[name] = (counts[name] ?? 0) + 1
  return counts
}

t.test('no timer, socket or listener outlives its connection', async (t) => {
  const { app } = await buildApp(t, { idleTimeout: 30_000 })
  let terminated = 0
  app.ws('/churn', defineHandler<undefined, string | TimeoutMessage<string>>({
    websocketInit: (_state, ctx) => {
      ctx.sendAfter(60_000, 'never')
      ctx.startTimer(60_000, 'never')
      return { reply: text('ready') }
    },
    handle: (frame) => frame.type === 'text' && frame.data === 'stop' ? { stop: true } : { reply: text('ok') },
    terminate: () => { terminated++ }
  }))
  const base = await listen(app)
  await sleep(50)
  const before = resources()
  const listenersBefore = app.server.listenerCount('upgrade')

  const rounds = 200
  for (let i = 0; i < rounds; i++) {
    const { ws, seen } = await connect(`${base}/churn`)
    await seen.frameCount(1)
    if (i % 3 === 0) ws.close() // the client closes
    else if (i % 3 === 1) ws.send('stop') // the handler stops
    else ws.terminate() // the socket drops
    await seen.closed
  }
  await until(() => terminated === rounds, 'every terminate')
  // Sockets close a moment after terminate: wait for the count, with a deadline and a label.
  await until(() => JSON.stringify(resources()) === JSON.stringify(before), `the handles of before: ${JSON.stringify(before)}`)

  t.equal(terminated, rounds, 'terminate ran once per connection')
  t.equal(app.wsConnections.size, 0, 'the registry is empty')
  t.same(resources(), before, 'the same timers and sockets as before')
  t.equal(app.server.listenerCount('upgrade'), listenersBefore)
  t.equal(app.websocketServer.clients.size, 0)
})
