/**
 * What the outside can do to a connection, tried adversarially: client text that lands in a
 * close reason, reasons over 123 bytes, schemas that do not compile, prototype keys; and the
 * order of what fan-out delivers (no handler, no terminate runs inside publish or broadcast).
 */
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { close, json, text, type PubSubAdapter, type WebSocketContext } from '../lib/index.js'
import { fitCloseReason } from '../lib/core/close-codes.js'
import { kShutdown } from '../lib/actor/context.js'
import { wsClient } from '../lib/testing.js'
import { RawClient, buildApp, connect, listen, terminateRecorder, until } from './helpers.js'
import { random } from './fuzz.js'

// ---- close reasons ------------------------------------------------------------------------

t.test('fitCloseReason keeps what fits and cuts the rest on a character boundary, for any text', async (t) => {
  t.equal(fitCloseReason(''), '')
  t.equal(fitCloseReason('x'.repeat(123)), 'x'.repeat(123), '123 bytes fit')
  t.equal(fitCloseReason('x'.repeat(124)), 'x'.repeat(120) + '…')
  const next = random(1)
  const alphabet = ['a', 'é', '€', '😀', '\uD800', ' '] // 1, 2, 3 and 4 bytes, and a lone surrogate
  const wrong: string[] = []
  let cut = 0
  for (let i = 0; i < 2000; i++) {
    let input = ''
    const length = next(90)
    for (let j = 0; j < length; j++) input += alphabet[next(alphabet.length)]
    const fitted = fitCloseReason(input)
    const bytes = Buffer.from(fitted)
    const fits = Buffer.byteLength(input) <= 123
    if (!fits) cut++
    const right = fits
      ? fitted === input
      : bytes.length <= 123 && fitted.endsWith('…') && Buffer.from(input).subarray(0, bytes.length - 3).equals(bytes.subarray(0, -3))
    if (!right) wrong.push(`${JSON.stringify(input)} became ${JSON.stringify(fitted)}`)
  }
  t.ok(cut > 500, `${cut} of the random texts needed a cut`)
  t.same(wrong, [], '2,000 random texts: unchanged when they fit; else at most 123 bytes, a byte prefix of the input, ended by …')
})

t.test('a schema error whose path holds multi-byte client text closes with 1008 and a valid reason; the process goes on', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/map', { handle: () => undefined }, { json: { schema: { type: 'object', additionalProperties: { type: 'number' } } } })
  for (const key of ['é'.repeat(70), 'a' + 'é'.repeat(70), '€'.repeat(50), '😀'.repeat(40)]) {
    const client = await wsClient(app, '/map')
    client.sendJson({ [key]: 'not a number' })
    const closed = await client.closed()
    t.equal(closed.code, 1008, `key of ${key.length} characters: 1008`)
    t.ok(Buffer.byteLength(closed.reason) <= 123 && closed.reason.endsWith('…') && !closed.reason.includes('\uFFFD'), closed.reason)
    t.match(await client.terminated(), { type: 'error', code: 1008, error: { code: 'FST_WS_INVALID_MESSAGE' } })
  }
  const after = await wsClient(app, '/map')
  after.sendJson({ fine: 1 })
  after.close(1000)
  t.same(await after.terminated(), { type: 'remote', code: 1000, reason: '' }, 'the route still serves')
})

t.test('an app\'s close reason over 123 bytes keeps its code: the reason is cut, and terminate is told what was sent', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/graphql', {
    handle: (frame) => frame.type === 'text' ? { reply: close(4409, `Subscriber for ${frame.data} already exists`) } : undefined,
    terminate: recorder.terminate
  })
  const client = await wsClient(app, '/graphql')
  client.send('ü'.repeat(80))
  const closed = await client.closed()
  t.equal(closed.code, 4409)
  t.equal(closed.reason, fitCloseReason(`Subscriber for ${'ü'.repeat(80)} already exists`))
  t.ok(Buffer.byteLength(closed.reason) <= 123)
  t.same((await recorder.first).reason, { type: 'stop', code: 4409, reason: closed.reason })
})

// ---- JSON routes ----------------------------------------------------------------------------

t.test('a JSON schema that does not compile fails ready(), not the first message', async (t) => {
  for (const declare of [
    (app: ReturnType<typeof Fastify>) => app.ws('/bad', {}, { json: { schema: { type: 'nope' } } }),
    (app: ReturnType<typeof Fastify>) => app.get('/bad', { ws: {}, wsOptions: { json: { schema: { type: 'nope' } } } }, async () => 'plain')
  ]) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(wsHandlers)
    declare(app)
    await t.rejects(async () => { await app.ready() }, { code: 'FST_WS_INVALID_OPTION', message: /json\.schema of \/bad.*does not compile/ })
  }
})

t.test('JSON messages are parsed as Fastify parses bodies: __proto__ and constructor.prototype keys are refused (1007)', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/j', { handle: (frame) => frame.type === 'json' ? { reply: json(frame.data) } : undefined }, { json: true })
  for (const poisoned of ['{"__proto__":{"polluted":true}}', '{"a":{"constructor":{"prototype":{"polluted":true}}}}']) {
    const client = await wsClient(app, '/j')
    client.send(poisoned)
    t.same(await client.closed(), { code: 1007, reason: 'Object contains forbidden prototype property' })
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'nothing polluted')
})

t.test('the app\'s onProtoPoisoning applies to messages as to bodies', async (t) => {
  const app = Fastify({ onProtoPoisoning: 'remove' })
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  app.ws('/j', { handle: (frame) => frame.type === 'json' ? { reply: json(Object.keys(frame.data as object)) } : undefined }, { json: true })
  const client = await wsClient(app, '/j')
  client.send('{"__proto__":{"polluted":true},"kept":1}')
  t.same(await client.nextJson(), ['kept'], 'the key removed, the message delivered')
  client.close()
})

// ---- ordering: fan-out runs no handler on the publisher's stack -----------------------------

const echoInfo = {
  websocketInit: (_state: undefined, ctx: WebSocketContext) => { ctx.subscribe('t') },
  info: (message: unknown) => ({ reply: text(String(message)) })
}

t.test('a publish made inside info reaches every subscriber after the one being delivered', async (t) => {
  const { app } = await buildApp(t)
  let nested = false
  app.ws('/sub', {
    ...echoInfo,
    info: (message) => {
      if (message === 'A' && !nested) {
        nested = true
        app.wsConnections.publish('t', 'B')
      }
      return { reply: text(String(message)) }
    }
  })
  const clients = await Promise.all([1, 2, 3].map(async () => await wsClient(app, '/sub')))
  await until(() => app.wsConnections.subscriberCount('t') === 3, 'three subscribers')
  t.equal(app.wsConnections.publish('t', 'A'), 3)
  for (const client of clients) t.same([await client.nextText(), await client.nextText()], ['A', 'B'], 'in publish order')
  for (const client of clients) client.close()
})

t.test('publications and broadcasts keep their order for each subscriber', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/sub', echoInfo)
  const clients = await Promise.all([1, 2, 3].map(async () => await wsClient(app, '/sub')))
  await until(() => app.wsConnections.subscriberCount('t') === 3, 'three subscribers')
  app.wsConnections.publish('t', 'p1')
  app.wsConnections.broadcast('t', text('b1'))
  app.wsConnections.publish('t', 'p2')
  app.wsConnections.broadcast('t', text('b2'))
  for (const client of clients) t.same(await Promise.all([1, 2, 3, 4].map(async () => await client.nextText())), ['p1', 'b1', 'p2', 'b2'])
  for (const client of clients) client.close()
})

t.test('a message whose info is queued when this side closes is dropped with the close, as queued messages are', async (t) => {
  const { app } = await buildApp(t)
  const infos: unknown[] = []
  const recorder = terminateRecorder()
  app.ws('/sub', { ...echoInfo, info: (message) => { infos.push(message) }, terminate: recorder.terminate })
  const client = await wsClient(app, '/sub')
  await until(() => app.wsConnections.subscriberCount('t') === 1, 'subscribed')
  t.equal(app.wsConnections.publish('t', 'late'), 1, 'accepted: its info is queued')
  // In the same tick, the close app.close() sends to each connection (registry.shutdown).
  const ctx = [...app.wsConnections][0] as unknown as Record<symbol, (code: number) => void>
  ctx[kShutdown]!(1012)
  t.same((await recorder.first).reason, { type: 'shutdown', code: 1012 })
  t.same(infos, [], 'the queued info did not run after the close')
  t.same(await client.closed(), { code: 1012, reason: '' })
})

t.test('info that unsubscribes and subscribes again runs once per publication', async (t) => {
  const { app } = await buildApp(t)
  let calls = 0
  app.ws('/sub', {
    ...echoInfo,
    info: (message, _state, ctx) => {
      calls++
      if (calls < 10) { // a cap, so that the failure this guards against is a count, not a hang
        ctx.unsubscribe('t')
        ctx.subscribe('t')
      }
      return { reply: text(String(message)) }
    }
  })
  // Two subscribers: the topic's set of subscribers never empties, so a re-subscribed one goes to its end.
  const clients = await Promise.all([1, 2].map(async () => await wsClient(app, '/sub')))
  await until(() => app.wsConnections.subscriberCount('t') === 2, 'subscribed')
  app.wsConnections.publish('t', 'once')
  for (const client of clients) t.equal(await client.nextText(), 'once')
  app.wsConnections.publish('t', 'twice')
  for (const client of clients) t.equal(await client.nextText(), 'twice')
  t.equal(calls, 4, 'info ran once for each subscriber and publication')
  for (const client of clients) client.close()
})

t.test('a slow reader closed by a broadcast runs its terminate after the broadcast: a "left" broadcast follows for everyone', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const limit = 64 * 1024
  app.ws('/room', {
    ...echoInfo,
    info: () => ({ reply: Array.from({ length: 8 }, () => ({ type: 'binary' as const, data: Buffer.alloc(1024 * 1024) })) }),
    terminate: () => { app.wsConnections.broadcast('t', text('left')) }
  }, { maxBufferedBytes: limit })
  const base = await listen(app)
  const slow = await RawClient.open(base, '/room') // first in the topic: the loop meets it first
  slow.socket.pause()
  await until(() => app.wsConnections.subscriberCount('t') === 1, 'the slow reader subscribed')
  const slowCtx = [...app.wsConnections.values()][0]!
  slowCtx.post('fill') // 8 MB that a reader which never reads leaves in the buffers
  await until(() => slowCtx.bufferedAmount > limit, 'the slow reader to be behind')
  const others = await Promise.all([1, 2, 3].map(async () => await connect(`${base}/room`)))
  await until(() => app.wsConnections.subscriberCount('t') === 4, 'four subscribers')
  app.wsConnections.broadcast('t', text('msg'))
  for (const { seen } of others) t.same(await seen.frameCount(2), ['text:msg', 'text:left'], 'the broadcast, then the terminate\'s')
  for (const { ws } of others) ws.close()
  slow.socket.destroy()
})

t.test('a JSON route\'s error frame waits with the frames held by active: false, so replies keep the client\'s order', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/j', {
    handle: async (frame, _state, ctx) => {
      if (frame.type !== 'json') return undefined
      const { n } = frame.data as { n: number }
      if (n !== 1) return { reply: json({ n }) }
      await null
      ctx.sendAfter(0, 'resume') // a later event turns reading back on
      return { reply: json({ n }), active: false }
    },
    info: () => ({ active: true })
  }, { json: { onInvalid: 'error-frame' } })
  const base = await listen(app)
  const client = await RawClient.open(base, '/j')
  // One TCP write: the second and third messages wait while the first is handled, then are held.
  client.send(Buffer.concat([RawClient.frame(0x1, '{"n":1}'), RawClient.frame(0x1, '{"n":2}'), RawClient.frame(0x1, 'nope')]))
  await until(() => client.frames.length === 3, 'three replies')
  t.same(client.frames.map((frame) => JSON.parse(frame.payload.toString())), [
    { n: 1 }, { n: 2 }, { type: 'error', code: 1007, message: 'invalid JSON' }
  ])
  client.socket.destroy()
})

t.test('a prompt reader that pipelines requests is not taken for a slow one: this tick\'s replies do not count as backlog', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/rpc', { handle: () => ({ reply: text('r'.repeat(1024)) }), terminate: recorder.terminate }, { maxBufferedBytes: 8 * 1024 })
  const base = await listen(app)
  const client = await RawClient.open(base, '/rpc')
  client.send(Buffer.concat(Array.from({ length: 20 }, () => RawClient.frame(0x1, 'req'))))
  await until(() => client.frames.length >= 20, 'twenty replies')
  t.equal(client.frames.length, 20)
  t.ok(client.frames.every((frame) => frame.opcode === 0x1), 'no close frame')
  client.send(RawClient.frame(0x8, Buffer.from([0x03, 0xe8])))
  t.same((await recorder.first).reason, { type: 'remote', code: 1000, reason: '' })
})

t.test('a handler that keeps posting to itself neither blocks the process nor other connections', async (t) => {
  const { app } = await buildApp(t)
  let spins = 0
  app.ws('/spin', {
    websocketInit: (_state, ctx) => { ctx.post('spin') },
    info: (_message, _state, ctx) => {
      spins++
      ctx.post('spin')
    }
  })
  app.ws('/echo', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
  const spinner = await wsClient(app, '/spin')
  await until(() => spins > 1000, 'the spinner to spin')
  const echo = await wsClient(app, '/echo')
  echo.send('still here')
  t.equal(await echo.nextText(), 'still here', 'another connection is served meanwhile')
  spinner.close(1000)
  t.same(await spinner.terminated(), { type: 'remote', code: 1000, reason: '' }, 'and the spinner itself still reads its socket')
  echo.close()
})

// ---- contracts --------------------------------------------------------------------------------

t.test('ctx.topics is a snapshot: unsubscribing from each in a loop leaves none', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/topics', {
    websocketInit: (_state, ctx) => {
      for (const topic of ['a', 'b', 'c']) ctx.subscribe(topic)
    },
    handle: (_frame, _state, ctx) => {
      const before = ctx.topics
      for (const topic of ctx.topics) ctx.unsubscribe(topic)
      return { reply: json({ before, after: ctx.topics, frozen: Object.isFrozen(before) }) }
    }
  })
  const client = await wsClient(app, '/topics')
  client.send('leave all')
  t.same(await client.nextJson(), { before: ['a', 'b', 'c'], after: [], frozen: true })
  t.same([...app.wsConnections.topics()], [])
  client.close()
})

t.test('broadcast checks its frame as strictly as reply does', async (t) => {
  const { app } = await buildApp(t)
  for (const frame of [{ type: 'text', data: Buffer.from('x') }, { type: 'binary', data: 'x' }, { type: 'text', data: 5 }, null]) {
    t.throws(() => app.wsConnections.broadcast('t', frame as never), { code: 'FST_WS_INVALID_BROADCAST' })
  }
  t.equal(app.wsConnections.broadcast('t', { type: 'binary', data: new Uint8Array([1]) }), 0, 'a Uint8Array is binary data')
})

// ---- adapters ---------------------------------------------------------------------------------

t.test('an adapter that throws on unsubscribe is logged and the connection still ends; one that throws on close is logged', async (t) => {
  const faulty: PubSubAdapter = {
    start () {},
    subscribe () {},
    unsubscribe () { throw new Error('adapter down') },
    publish () {},
    broadcast () {},
    post: () => false,
    close () { throw new Error('cannot close') }
  }
  const { app, errors } = await buildApp(t, { adapter: faulty })
  const recorder = terminateRecorder()
  app.ws('/sub', { ...echoInfo, terminate: recorder.terminate })
  const client = await wsClient(app, '/sub')
  await until(() => app.wsConnections.subscriberCount('t') === 1, 'subscribed')
  client.close(1000)
  t.same((await recorder.first).reason, { type: 'remote', code: 1000, reason: '' })
  t.equal(app.wsConnections.subscriberCount('t'), 0, 'unsubscribed here all the same')
  await app.close()
  t.match(errors, [
    { msg: 'WebSocket adapter failed to unsubscribe', topic: 't', err: { message: 'adapter down' } },
    { msg: 'WebSocket adapter failed to close', err: { message: 'cannot close' } }
  ])
})

t.test('an adapter whose close never settles holds app.close() for closeTimeout at most', async (t) => {
  let asked: number | undefined
  const stuck: PubSubAdapter = {
    start () {},
    subscribe () {},
    unsubscribe () {},
    publish () {},
    broadcast () {},
    post: () => false,
    close: async (timeoutMs) => {
      asked = timeoutMs
      await new Promise(() => {})
    }
  }
  const { app } = await buildApp(t, { adapter: stuck, closeTimeout: 50 })
  await app.ready()
  await app.close()
  t.equal(asked, 50, 'the adapter is told the bound')
})
