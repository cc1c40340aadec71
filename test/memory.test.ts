/**
 * After the upgrade a connection keeps neither Fastify's request nor its reply alive
 * (raw @fastify/websocket keeps both for the connection's lifetime).
 */
import t from 'tap'
import { text } from '../lib/index.js'
import { buildApp, connect, listen, sleep } from './helpers.js'

const gc = globalThis.gc as (() => void) | undefined

t.test("an open connection does not retain Fastify's request and reply", { skip: gc === undefined ? 'needs --expose-gc' : false }, async (t) => {
  const { app } = await buildApp(t)
  const refs: Array<WeakRef<object>> = []
  app.ws('/lean', {
    init: (request, reply) => {
      refs.push(new WeakRef(request), new WeakRef(reply), new WeakRef(request.raw))
      return { state: 'kept' }
    },
    handle: (_frame, state) => ({ reply: text(String(state)) })
  })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/lean`)
  ws.send('x')
  await seen.frameCount(1)
  for (let i = 0; i < 5; i++) {
    gc!()
    await sleep(10)
  }
  t.same(refs.map((ref) => ref.deref() === undefined), [true, true, true], 'request, reply and the raw request were collected')
  ws.send('still alive')
  t.same(await seen.frameCount(2), ['text:kept', 'text:kept'], 'while the connection works on')
  ws.close()
})
