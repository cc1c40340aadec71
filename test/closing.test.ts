/**
 * The ways a connection ends that the server decides: idle timeout, app.close(), a slow
 * reader; and what observers (diagnostics_channel, logs) see.
 */
import diagnostics from 'node:diagnostics_channel'
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { text } from '../lib/index.js'
import { RawClient, buildApp, connect, inject, listen, sleep, until, terminateRecorder } from './helpers.js'

t.test('no data for idleTimeout ms closes with 1000 and terminate gets timeout', async (t) => {
  const { app } = await buildApp(t, { idleTimeout: 100 })
  const recorder = terminateRecorder()
  app.ws('/idle', { terminate: recorder.terminate })
  const base = await listen(app)
  const { seen } = await connect(`${base}/idle`)
  t.same(await seen.closed, { code: 1000, reason: '' })
  t.same((await recorder.first).reason, { type: 'timeout' })
})

t.test('a close while reading is paused still reads the close reply: the socket does not linger', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 5000 })
  app.ws('/paused', {
    handle: (_frame, _state, ctx) => {
      ctx.sendAfter(20, 'stop')
      return { active: false }
    },
    info: () => ({ stop: true })
  })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/paused`)
  ws.send('pause, then stop')
  const started = Date.now()
  t.same(await seen.closed, { code: 1000, reason: '' })
  t.ok(Date.now() - started < 1000, `closed in ${Date.now() - started} ms, not after the 5 s close timeout`)
})

t.test('app.close() closes every connection with 1012 (Service Restart) and terminate sees shutdown first', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers)
  const order: string[] = []
  app.ws('/s', {
    terminate: async (reason) => {
      await sleep(20) // an async terminate is awaited before the server stops
      order.push(`terminate:${reason.type}`)
    }
  })
  const base = await listen(app)
  const clients = await Promise.all([1, 2, 3].map(async () => await connect(`${base}/s`)))
  await app.close()
  order.push('closed')
  t.same(order, ['terminate:shutdown', 'terminate:shutdown', 'terminate:shutdown', 'closed'])
  for (const { seen } of clients) t.same(await seen.closed, { code: 1012, reason: '' })
})

t.test('app.close() is not held forever by a callback that never settles', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers, { closeTimeout: 200 })
  app.ws('/stuck', { handle: async () => await new Promise<undefined>(() => {}) })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/stuck`)
  ws.send('hang')
  await sleep(20)
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 2000, 'closed within the close timeout')
  t.equal((await seen.closed).code, 1012)
})

t.test('a slow reader past maxBufferedBytes is closed with 1008', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  const chunk = Buffer.alloc(256 * 1024)
  app.ws('/firehose', {
    websocketInit: (_state, ctx) => { ctx.post('more') },
    info: (_message, _state, ctx) => {
      ctx.post('more')
      return { reply: { type: 'binary', data: chunk } }
    },
    terminate: recorder.terminate
  }, { maxBufferedBytes: 4 * 1024 * 1024 })
  const base = await listen(app)
  const client = await RawClient.open(base, '/firehose')
  client.socket.pause() // never reads
  const { reason } = await recorder.first
  t.match(reason, { type: 'error', code: 1008, error: { code: 'FST_WS_OUTBOUND_OVERFLOW' } })
  client.socket.destroy()
})

t.test('diagnostics channels report open, frames in and out, and close', async (t) => {
  const { app } = await buildApp(t)
  const seenEvents: string[] = []
  const on = (name: string) => (message: unknown) => {
    const { ctx, frame, frames, reason } = message as { ctx: { id: string }, frame?: { type: string }, frames?: unknown, reason?: { type: string } }
    t.type(ctx.id, 'string')
    seenEvents.push(name + (frame ? `:${frame.type}` : '') + (frames ? ':reply' : '') + (reason ? `:${reason.type}` : ''))
  }
  const subscriptions = ['open', 'frame-in', 'frame-out', 'close'].map((name) => {
    const listener = on(name)
    diagnostics.subscribe(`fastify-ws-handlers:${name}`, listener)
    return () => diagnostics.unsubscribe(`fastify-ws-handlers:${name}`, listener)
  })
  t.teardown(() => { for (const unsubscribe of subscriptions) unsubscribe() })
  app.ws('/observed', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
  const { ws, seen } = await inject(app, '/observed')
  ws.send('hi')
  await seen.frameCount(1)
  ws.close()
  await until(() => app.wsConnections.size === 0)
  t.same(seenEvents, ['open', 'frame-in:text', 'frame-out:reply', 'close:remote'])
})
