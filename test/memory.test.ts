/**
 * After the upgrade a connection keeps neither Fastify's request nor its reply alive
 * (raw @fastify/websocket keeps both for the connection's lifetime), nor objects it can share.
 */
import t from 'tap'
import { defineHandler, text, type RequestSnapshot, type WebSocketContext } from '../lib/index.js'
import { buildApp, connect, inject, listen, sleep } from './helpers.js'

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

t.test('connections without params or query share one frozen empty object for each', async (t) => {
  const { app } = await buildApp(t)
  const requests: RequestSnapshot[] = []
  const keep = { websocketInit: (_state: unknown, ctx: WebSocketContext) => { requests.push(ctx.request) } }
  app.ws('/plain', keep)
  app.ws('/room/:name', keep)
  const base = await listen(app)
  const clients = [await connect(`${base}/plain`), await connect(`${base}/plain`), await connect(`${base}/room/blue?x=1`)]
  const [a, b, room] = requests as [RequestSnapshot, RequestSnapshot, RequestSnapshot]
  t.equal(a.params, b.params, 'the same params object')
  t.equal(a.query, b.query, 'the same query object')
  t.ok(Object.isFrozen(a.params) && Object.isFrozen(a.query), 'frozen: no connection can change what the others see')
  t.same([a.params, { ...a.query as object }], [{}, {}])
  t.same([room.params, { ...room.query as object }], [{ name: 'blue' }, { x: '1' }], 'a route with params and a query keeps its own')
  for (const { ws } of clients) ws.close()
})

t.test('a topic\'s feed is let go of with its last follower: 20,000 topics followed and left in turn leave no feed behind', { skip: gc === undefined ? 'needs --expose-gc' : false }, async (t) => {
  const { app } = await buildApp(t, { history: { 'room:*': { size: 10 } } })
  app.ws('/rooms', defineHandler({
    handle: (frame, _state, ctx) => {
      const count = Number(frame.type === 'text' ? frame.data : 0)
      for (let i = 0; i < count; i++) {
        ctx.subscribe(`room:${i}`, { since: undefined })
        ctx.unsubscribe(`room:${i}`)
      }
      return { reply: text('done') }
    }
  }))
  const { ws, seen } = await inject(app, '/rooms')
  ws.send('1000') // warm up: the look-ups the registry keeps, compiled code
  await seen.frameCount(1)
  const heapAfterGc = async (): Promise<number> => {
    for (let i = 0; i < 5; i++) {
      gc!()
      await sleep(10)
    }
    return process.memoryUsage().heapUsed
  }
  const before = await heapAfterGc()
  ws.send('20000')
  await seen.frameCount(2)
  const grown = await heapAfterGc() - before
  // A feed kept per topic is ≈ 500 B (10 MB here); what stays is the topic look-up's cache (≈ 1 MB).
  t.ok(grown < 4e6, `the heap grew by ${(grown / 1e6).toFixed(2)} MB`)
})
