/**
 * Topics: a connection joins and leaves them; the app publishes to `info` and broadcasts frames
 * encoded once; subscriptions end at terminate; apps that share a bus share topics and ids.
 */
import type net from 'node:net'
import Fastify from 'fastify'
import t from 'tap'
import WebSocket from 'ws'
import wsHandlers, { InProcessBus, defineHandler, inProcessAdapter, text, topic, type WebSocketContext } from '../lib/index.js'
import { RawClient, buildApp, connect, inject, listen, terminateRecorder, until } from './helpers.js'

const room = {
  websocketInit: (_state: undefined, ctx: WebSocketContext) => { ctx.subscribe('room') },
  info: (message: unknown) => ({ reply: text(String(message)) }),
  handle: (frame: { type: string, data: unknown }, _state: undefined, ctx: WebSocketContext) => {
    if (frame.type !== 'text') return undefined
    if (frame.data === 'leave') return { reply: text(`left: ${String(ctx.unsubscribe('room'))}`) }
    return undefined
  }
}

t.test('1,000 subscribers each receive every published message, in order', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/room', room)
  app.post('/announce', async (request) => ({ accepted: app.wsConnections.publish('room', request.body) }))
  const clients = await Promise.all(Array.from({ length: 1000 }, async () => await inject(app, '/room')))
  t.equal(app.wsConnections.subscriberCount('room'), 1000)
  const first = app.wsConnections.subscribers('room').next().value!
  t.same(first.topics, ['room'], 'ctx.topics')
  t.same([...app.wsConnections.subscribers('nobody')], [])
  const messages = Array.from({ length: 20 }, (_, i) => `m${i}`)
  for (const message of messages.slice(0, 19)) app.wsConnections.publish('room', message)
  // From an HTTP route too.
  const response = await app.inject({ method: 'POST', url: '/announce', body: 'm19', headers: { 'content-type': 'text/plain' } })
  t.same(response.json(), { accepted: 1000 })
  await Promise.all(clients.map(async ({ seen }) => await seen.frameCount(20)))
  t.ok(clients.every(({ seen }) => seen.frames.join() === messages.map((m) => `text:${m}`).join()), 'every client, every message, in order')
  for (const { ws } of clients) ws.terminate()
})

t.test('unsubscribe and terminate remove subscribers: counts return to zero after 1,000 cycles', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/room', { ...room, terminate: recorder.terminate })
  const { ws, seen } = await inject(app, '/room')
  await until(() => app.wsConnections.subscriberCount('room') === 1, 'the first subscriber')
  ws.send('leave')
  t.same(await seen.frameCount(1), ['text:left: true'])
  t.equal(app.wsConnections.subscriberCount('room'), 0)
  t.same([...app.wsConnections.topics()], [])
  t.equal(app.wsConnections.publish('room', 'nobody'), 0)
  ws.terminate()
  for (let i = 0; i < 1000; i++) {
    const { ws } = await inject(app, '/room')
    ws.terminate()
  }
  await until(() => recorder.calls.length === 1001, 'every terminate')
  t.equal(app.wsConnections.subscriberCount('room'), 0)
  t.same([...app.wsConnections.topics()], [], 'no topic left behind')
  t.equal(app.wsConnections.size, 0)
  t.equal(app.wsConnections.countOfRoute('/room'), 0)
})

t.test('broadcast encodes once: the same frame buffer reaches every socket; the sender is excluded', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/room', {
    websocketInit: (_state, ctx) => { ctx.subscribe('room') },
    handle: (frame, _state, ctx) => {
      if (frame.type === 'text') app.wsConnections.broadcast('room', text(frame.data), { except: ctx.id })
    }
  })
  const writes = new Map<net.Socket, unknown[]>()
  app.server.on('connection', (socket: net.Socket) => {
    const write = socket.write
    const seen: unknown[] = []
    writes.set(socket, seen)
    socket.write = function (this: net.Socket, chunk: unknown, ...rest: unknown[]) {
      seen.push(chunk)
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
    } as typeof socket.write
  })
  const base = await listen(app)
  const clients: Array<Awaited<ReturnType<typeof connect>>> = []
  for (let i = 0; i < 50; i++) clients.push(await connect(`${base}/room`))
  await until(() => app.wsConnections.subscriberCount('room') === 50, '50 subscribers')
  const before = new Map([...writes].map(([socket, seen]) => [socket, seen.length]))
  clients[0]!.ws.send('x'.repeat(1024))
  await Promise.all(clients.slice(1).map(async ({ seen }) => await seen.frameCount(1)))
  t.ok(clients.slice(1).every(({ seen }) => seen.frames[0] === `text:${'x'.repeat(1024)}`), '49 got it')
  const broadcastWrites = [...writes].map(([socket, seen]) => seen.slice(before.get(socket)!)).filter((w) => w.length === 1)
  t.equal(broadcastWrites.length, 49, 'one write (header and payload) on each of 49 sockets')
  t.ok(broadcastWrites.every((w) => w[0] === broadcastWrites[0]![0]), 'the very same buffer on every socket')
  t.equal((broadcastWrites[0]![0] as Buffer).length, 4 + 1024, 'the whole frame: a 4-byte header and the payload')
  t.equal(clients[0]!.seen.frames.length, 0, 'the sender is excluded')
  t.equal(app.wsConnections.broadcast('room', { type: 'binary', data: new Uint8Array([1, 2]) }), 50)
  await Promise.all(clients.map(async ({ seen }) => await seen.frameCount(seen === clients[0]!.seen ? 1 : 2)))
  for (const { ws } of clients) ws.close()
})

t.test('compressed and busy subscribers get the broadcast too, after what their sender had queued', async (t) => {
  const { app } = await buildApp(t, { compress: true })
  app.ws('/room', {
    websocketInit: (_state, ctx) => {
      ctx.subscribe('room')
      return { reply: text('y'.repeat(50_000)) } // compressed: ws's sender is busy for a while
    }
  })
  const base = await listen(app)
  const { seen, headers } = await connect(`${base}/room`)
  t.match(headers['sec-websocket-extensions'], /permessage-deflate/)
  app.wsConnections.broadcast('room', text('after'))
  t.same(await seen.frameCount(2), [`text:${'y'.repeat(50_000)}`, 'text:after'])
})

t.test('bad topics and frames are refused with a coded error', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/bad', { websocketInit: (_state, ctx) => { ctx.subscribe('') }, terminate: recorder.terminate })
  t.throws(() => app.wsConnections.publish('', 1), { code: 'FST_WS_INVALID_TOPIC' })
  t.throws(() => app.wsConnections.broadcast('room', { type: 'ping' }), { code: 'FST_WS_INVALID_BROADCAST' })
  await inject(app, '/bad')
  t.match((await recorder.first).reason, { type: 'crash', error: { code: 'FST_WS_INVALID_TOPIC' } })
})

t.test('a typed topic (topic<M>(name)) is its name at runtime: subscribe, publish, broadcast, count, leave', async (t) => {
  const { app } = await buildApp(t)
  const prices = topic<{ symbol: string, price: number }>('prices')
  t.same(prices, { name: 'prices' })
  t.ok(Object.isFrozen(prices))
  app.ws('/ticker', defineHandler<undefined, { symbol: string, price: number }>({
    websocketInit: (_state, ctx) => { ctx.subscribe(prices) },
    info: (update) => ({ reply: text(`${update.symbol} ${update.price}`) }),
    handle: (frame, _state, ctx) => frame.type === 'text' && frame.data === 'leave' ? { reply: text(`left: ${String(ctx.unsubscribe(prices))}`) } : undefined
  }))
  app.ws('/by-name', { websocketInit: (_state, ctx) => { ctx.subscribe('prices') }, info: (message) => ({ reply: text(JSON.stringify(message)) }) })
  const ticker = await inject(app, '/ticker')
  const byName = await inject(app, '/by-name')
  await until(() => app.wsConnections.subscriberCount(prices) === 2, 'both in the topic, whichever way they named it')
  t.equal(app.wsConnections.subscriberCount('prices'), 2)
  t.equal([...app.wsConnections.subscribers(prices)].length, 2)
  t.equal(app.wsConnections.publish(prices, { symbol: 'ACME', price: 3 }), 2)
  t.equal(app.wsConnections.broadcast(prices, text('bell')), 2)
  t.same(await ticker.seen.frameCount(2), ['text:ACME 3', 'text:bell'])
  t.same(await byName.seen.frameCount(2), ['text:{"symbol":"ACME","price":3}', 'text:bell'])
  ticker.ws.send('leave')
  t.same(await ticker.seen.frameCount(3), ['text:ACME 3', 'text:bell', 'text:left: true'])
  t.equal(app.wsConnections.subscriberCount(prices), 1)
  for (const bad of ['', 7, null, {}, { name: '' }]) {
    t.throws(() => topic(bad as string), { code: 'FST_WS_INVALID_TOPIC' }, `topic(${JSON.stringify(bad)})`)
    t.throws(() => app.wsConnections.publish(bad as string, 1), { code: 'FST_WS_INVALID_TOPIC' }, `publish to ${JSON.stringify(bad)}`)
  }
  ticker.ws.close()
  byName.ws.close()
})

t.test('connections can be iterated and counted, per route', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/a', {})
  app.ws('/b', {})
  const clients = [await inject(app, '/a'), await inject(app, '/a'), await inject(app, '/b')]
  t.equal([...app.wsConnections].length, 3)
  t.equal([...app.wsConnections.values()].length, 3)
  t.same([...app.wsConnections.ofRoute('/a')].map((ctx) => ctx.request.routeUrl), ['/a', '/a'])
  t.same([app.wsConnections.countOfRoute('/a'), app.wsConnections.countOfRoute('/b'), app.wsConnections.countOfRoute('/c')], [2, 1, 0])
  t.match(app.wsConnections.get([...app.wsConnections.ofRoute('/b')][0]!.id)!.id, new RegExp(`^${app.wsConnections.instanceId}-`))
  t.equal(app.wsConnections.post(`${app.wsConnections.instanceId}-zzz`, 'gone'), false, 'an id of this instance that is gone')
  for (const { ws } of clients) ws.terminate()
})

t.test('apps that share an in-process bus share topics and ids, as instances sharing Redis do', async (t) => {
  const bus = new InProcessBus()
  const apps = await Promise.all([1, 2].map(async () => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(wsHandlers, { adapter: inProcessAdapter({ bus }) })
    app.ws('/room', {
      ...room,
      handle: (frame, _state, ctx) => frame.type === 'text' && frame.data === 'who' ? { reply: text(ctx.id) } : undefined
    })
    return app
  }))
  const [a, b] = apps as [ReturnType<typeof Fastify>, ReturnType<typeof Fastify>]
  const onA = await inject(a, '/room')
  const onB = await inject(b, '/room')
  await until(() => a.wsConnections.subscriberCount('room') === 1 && b.wsConnections.subscriberCount('room') === 1, 'one subscriber each')
  t.equal(a.wsConnections.publish('room', 'from A'), 1, 'one local subscriber accepted it')
  b.wsConnections.broadcast('room', text('from B'))
  onB.ws.send('who')
  const [, , idOnB] = await onB.seen.frameCount(3)
  t.same(await onA.seen.frameCount(2), ['text:from A', 'text:from B'])
  t.equal(a.wsConnections.post(idOnB!.slice('text:'.length), 'posted from A'), true)
  t.same(await onB.seen.frameCount(4), ['text:from A', 'text:from B', `text:${idOnB!.slice('text:'.length)}`, 'text:posted from A'])
  t.equal(a.wsConnections.post('ffffffff-1', 'nowhere'), false, 'no instance has it')
  onA.ws.terminate()
  onB.ws.terminate()
})

t.test('a subscriber whose mailbox is full misses publications (at most once); the others get them', async (t) => {
  const { app } = await buildApp(t)
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const got: unknown[] = []
  app.ws('/slow', {
    websocketInit: async (_state, ctx) => {
      ctx.subscribe('news')
      await gate
    },
    info: (message) => { got.push(message) }
  }, { mailboxLimit: 2 })
  await inject(app, '/slow')
  await until(() => app.wsConnections.subscriberCount('news') === 1, 'subscribed')
  t.same([1, 2, 3, 4].map((n) => app.wsConnections.publish('news', n)), [1, 1, 0, 0])
  t.equal(app.wsConnections.broadcast('news', text('b')), 0, 'a broadcast waits in the mailbox too, and is missed when it is full')
  open()
  await until(() => got.length === 2, 'two infos')
  t.same(got, [1, 2])
})

t.test('ws clients see broadcasts as ordinary frames', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/room', room)
  const base = await listen(app)
  const ws = new WebSocket(`${base}/room`)
  await new Promise((resolve) => ws.once('open', resolve))
  await until(() => app.wsConnections.subscriberCount('room') === 1, 'subscribed')
  // Every header form and its edges: 7-bit (≤ 125), 16-bit (126 … 65,535), 64-bit (≥ 65,536).
  const sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]
  const received: Buffer[] = []
  ws.on('message', (message: Buffer) => received.push(message))
  for (const [i, size] of sizes.entries()) app.wsConnections.broadcast('room', { type: 'binary', data: Buffer.alloc(size, i + 1) })
  app.wsConnections.broadcast('room', text('é'.repeat(63))) // 126 bytes of UTF-8 in 63 characters
  await until(() => received.length === sizes.length + 1, 'every broadcast')
  for (const [i, size] of sizes.entries()) t.ok(received[i]!.equals(Buffer.alloc(size, i + 1)), `${size} bytes intact`)
  t.equal(received[sizes.length]!.toString(), 'é'.repeat(63))
  ws.close()
})

t.test('the encoded broadcast frame is what ws itself would send, at every header edge', async (t) => {
  const { encodeFrame } = await import('../lib/wire/writes.js')
  const { Sender } = await import('ws') as unknown as { Sender: { frame(data: Buffer, options: object): Buffer[] } }
  for (const size of [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]) {
    for (const binary of [true, false]) {
      const data = Buffer.alloc(size, 0x61)
      const ours = encodeFrame({ binary, data })
      const theirs = Buffer.concat(Sender.frame(data, { fin: true, opcode: binary ? 2 : 1, mask: false, readOnly: true, rsv1: false }))
      t.ok(ours.equals(theirs), `${size} bytes, ${binary ? 'binary' : 'text'}: the same bytes as ws's Sender.frame`)
    }
  }
})

t.test('a subscriber that stops reading is closed with 1008 by broadcast, as by its own replies', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/room', { ...room, terminate: recorder.terminate }, { maxBufferedBytes: 1024 * 1024 })
  const base = await listen(app)
  const client = await RawClient.open(base, '/room')
  client.socket.pause() // never reads
  await until(() => app.wsConnections.subscriberCount('room') === 1, 'subscribed')
  const chunk = { type: 'binary', data: Buffer.alloc(256 * 1024) } as const
  while (recorder.calls.length === 0) {
    app.wsConnections.broadcast('room', chunk)
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.match(recorder.calls[0]!.reason, { type: 'error', code: 1008, error: { code: 'FST_WS_OUTBOUND_OVERFLOW' } })
  client.socket.destroy()
})

t.test('subscribing twice, leaving a topic one is not in, and subscribing after terminate are refused', async (t) => {
  const { app } = await buildApp(t)
  let kept!: WebSocketContext
  const answers: boolean[] = []
  app.ws('/edge', {
    websocketInit: (_state, ctx) => {
      kept = ctx
      answers.push(ctx.topics.length === 0, ctx.subscribe('a'), ctx.subscribe('a'), ctx.unsubscribe('b'), ctx.subscribe('b') && ctx.topics.join() === 'a,b')
      return { stop: true } // closing: a broadcast now skips it
    },
    terminate: () => { answers.push(app.wsConnections.broadcast('a', text('late')) === 0) }
  })
  await inject(app, '/edge')
  await until(() => answers.length === 6, 'terminate')
  t.same(answers, [true, true, false, false, true, true])
  t.equal(kept.subscribe('a'), false, 'after terminate')
  t.same(kept.topics, [])
})

t.test('a post by id to another instance of the bus, for a connection it no longer has, is refused', async (t) => {
  const bus = new InProcessBus()
  const [a, b] = await Promise.all([1, 2].map(async () => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(wsHandlers, { adapter: inProcessAdapter({ bus }) })
    return app
  }))
  t.equal(a!.wsConnections.post(`${b!.wsConnections.instanceId}-zzz`, 'gone'), false)
})

t.test('a subscriber that is closing (its terminate waits for a callback) gets no broadcast', async (t) => {
  const { app } = await buildApp(t)
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const recorder = terminateRecorder()
  app.ws('/closing', {
    websocketInit: async (_state, ctx) => {
      ctx.subscribe('a')
      await gate
    },
    terminate: recorder.terminate
  })
  const { ws, seen } = await inject(app, '/closing')
  await until(() => app.wsConnections.subscriberCount('a') === 1, 'subscribed')
  ws.close(1000)
  await seen.closed // the server has the peer's close: the connection is closing
  t.equal(app.wsConnections.broadcast('a', text('too late')), 0)
  open()
  t.match((await recorder.first).reason, { type: 'remote', code: 1000 })
})
