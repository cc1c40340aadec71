/**
 * The test toolkit (fastify-ws-handlers/testing), used as its users would: clients without and
 * with a port that show the handshake, frames in order, the close and the server's terminate
 * reason; and the socket-free harness.
 */
import { once } from 'node:events'
import t from 'tap'
import Fastify from 'fastify'
import wsHandlers, { close, defineHandler, text, type TimeoutMessage } from '../lib/index.js'
import { UpgradeRefusedError, handlerHarness, wsClient } from '../lib/testing.js'
import { rememberedConnections } from '../lib/toolkit/terminate-watch.js'
import { buildApp, listen, until } from './helpers.js'

const greeter = defineHandler<{ name: string }, TimeoutMessage<'tick'>>({
  init (request, reply) {
    const { name } = request.query as { name?: string }
    if (name === undefined) return reply.code(400).send({ error: 'name?' })
    return { state: { name }, protocol: request.headers['sec-websocket-protocol'] === undefined ? undefined : 'chat' }
  },
  websocketInit (state, ctx) {
    ctx.startTimer(1000, 'tick')
    return { reply: text(`hi ${state.name}`) }
  },
  handle: (frame) => {
    if (frame.type !== 'text') return undefined
    if (frame.data === 'bye') return { reply: [text('bye'), close(4000, 'done')] }
    return { state: { name: frame.data }, reply: text(`now ${frame.data}`) }
  },
  info: (message, state) => ({ reply: text(`${message.message} for ${state.name}`) }) // the startTimer wrapper
})

for (const transport of ['injected (no port)', 'real port'] as const) {
  t.test(`a client, ${transport}: handshake, frames in order, close, terminate reason`, async (t) => {
    const { app } = await buildApp(t)
    app.ws('/greet', greeter, { protocols: ['chat'] })
    const base = transport === 'real port' ? await listen(app) : ''
    const open = transport === 'real port'
      ? async (path: string, options = {}) => await wsClient(`${base}${path}`, options)
      : async (path: string, options = {}) => await wsClient(app, path, options)
    const client = await open('/greet?name=ada', { protocols: ['other', 'chat'] })
    t.equal(client.handshake.status, 101)
    t.equal(client.handshake.protocol, 'chat')
    t.equal(await client.nextText(), 'hi ada')
    client.send('grace')
    t.same(await client.next(), { type: 'text', data: 'now grace' })
    client.send('bye')
    t.equal(await client.nextText(), 'bye')
    t.same(await client.closed(), { code: 4000, reason: 'done' })
    t.same(await client.terminated(), { type: 'stop', code: 4000, reason: 'done' })
    await t.rejects(client.next(), { message: 'no next frame: the connection closed with 4000 "done" (3 frames received before; the server\'s terminate reason: stop 4000 "done")' })

    const refused = await open('/greet').catch((error: unknown) => error)
    t.ok(refused instanceof UpgradeRefusedError)
    t.match(refused, { statusCode: 400, headers: { 'content-type': /json/ }, handshake: { status: 400, headers: { 'content-type': /json/ } } })
    t.same((refused as UpgradeRefusedError).json(), { error: 'name?' })
    await t.rejects(open('/greet?name=x', { protocols: ['stomp'] }), { message: /HTTP 400.*FST_WS_PROTOCOL_NOT_SUPPORTED/ })
  })
}

t.test('an injected client answers the server\'s pings, as a real one does: the default heartbeat keeps it open', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  const reasons: string[] = []
  const pongs: number[] = []
  app.ws('/beat', { handle: (frame) => { if (frame.type === 'pong') pongs.push(1) }, terminate: (reason) => { reasons.push(reason.type) } }, { pingInterval: 30, idleTimeout: 80 })
  const client = await wsClient(app, '/beat')
  await until(() => pongs.length >= 4, `four pings answered (terminates: ${reasons.join(' ')})`)
  t.same(reasons, [], 'still open after four idle timeouts\' worth of pings')
  client.close()
})

t.test('a real-port client without options and without a subprotocol', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/plain', { websocketInit: () => ({ reply: close() }) })
  const client = await wsClient(`${await listen(app)}/plain`)
  t.equal(client.handshake.protocol, '')
  t.same(await client.closed(), { code: 1000, reason: '' })
  t.same((await handlerHarness({ handle: () => ({ reply: close() }) }).handle('x')).close, { code: 1000, reason: '' })
})

t.test('a client whose peer is dropped sees its terminate reason too', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/quiet', {})
  const client = await wsClient(app, '/quiet', { headers: { 'X-Anything': 'yes' }, timeoutMs: 500 })
  client.ws.terminate()
  t.same(await client.terminated(), { type: 'closed' })
  await t.rejects(client.closed(1).then(async () => await client.nextJson(1)), /^no next frame: the connection closed with 1006 "" \(0 frames received before; the server.s terminate reason: closed\)$/)
})

t.test('nextJson parses; nextText refuses binary; a silent server fails terminated() with a message', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/json', { websocketInit: () => ({ reply: [text('{"a":1}'), { type: 'binary', data: Buffer.from([1]) }] }) })
  const client = await wsClient(app, '/json')
  t.same(await client.nextJson(), { a: 1 })
  await t.rejects(client.nextText(), { message: 'expected a text frame, got binary (1 bytes)' })
  await t.rejects(client.next(20), { message: 'no frame within 20 ms (2 received before)' })
  await t.rejects(client.terminated(20), { message: 'the server did not terminate the connection within 20 ms' })
  await t.rejects(client.closed(20), { message: 'the connection did not close within 20 ms' })
  client.sendJson({ ignored: true })
  client.close()
  t.same(await client.terminated(), { type: 'remote', code: undefined, reason: '' }, 'a close without a code')
})

t.test('the harness drives a handler without a socket: commands and state out', async (t) => {
  const h = handlerHarness(greeter, { state: { name: 'ada' } })
  const opened = await h.websocketInit()
  t.same(opened.replies, [text('hi ada')])
  t.same(h.timers.map(({ ms, message, wrapped }) => ({ ms, message, wrapped })), [{ ms: 1000, message: 'tick', wrapped: true }])
  const renamed = await h.handle('grace')
  t.same(renamed.state, { name: 'grace' })
  t.same(h.state, { name: 'grace' }, 'the harness keeps it')
  t.same(renamed.replies, [text('now grace')])
  t.same((await h.fireTimer()).replies, [text('tick for grace')])
  await t.rejects(h.fireTimer(), { message: 'no timer is pending' })
  t.same((await h.handle(Buffer.from('ignored'))).result, undefined)
  const bye = await h.handle({ type: 'text', data: 'bye' })
  t.same(bye.replies, [text('bye')])
  t.same(bye.close, { code: 4000, reason: 'done' })
  await h.terminate()
  await t.rejects(h.handle('late'), { message: 'handle after terminate' })
})

t.test('the harness checks results as the server does, and runs posts, timers, topics and terminate', async (t) => {
  const seen: unknown[] = []
  const h = handlerHarness(defineHandler<number, string>({
    websocketInit: (_state, ctx) => {
      ctx.subscribe('room')
      ctx.post('first')
      const ref = ctx.sendAfter(10, 'cancelled')
      ctx.cancelTimer(ref)
      ctx.sendAfter(20, 'later')
      return { state: 1 }
    },
    info: (message, state) => message === 'bad' ? ({ reply: 'oops' } as never) : { state: state + 1, stop: message === 'later' },
    terminate: (reason, request, state) => { seen.push(reason, request.url, state) }
  }), { request: { url: '/counted' } })
  await h.websocketInit()
  t.same(h.ctx.topics, ['room'])
  t.equal(h.ctx.subscribe('room'), false)
  t.equal(h.ctx.unsubscribe('nope'), false)
  t.same(h.posted, ['first'])
  t.same((await h.deliverPosted()).map((step) => step.state), [2])
  t.equal(h.ctx.cancelTimer(999), false)
  await t.rejects(h.info('bad'), { code: 'FST_WS_INVALID_RESULT', message: /info returned an invalid result/ })
  await t.rejects(h.fireTimer(12345), { message: 'timer 12345 is not pending' })
  const last = await h.fireTimer(h.timers[0]!.ref)
  t.same([last.state, last.close], [3, { code: 1000, reason: '' }])
  await t.rejects(h.info('late'), { message: 'info after the connection closed (info returned a close with 1000): on the server, only terminate runs now' })
  t.equal(h.ctx.post('after the close'), false, 'posts are refused once closed, as on the server')
  t.equal(h.ctx.unsubscribe('room'), true)
  t.equal(h.ctx.alive, true)
  t.equal(h.ctx.bufferedAmount, 0)
  h.ctx.log.info('silent')
  t.equal(h.ctx.log.child({}).level, 'silent')
  await h.terminate({ type: 'timeout' })
  t.same(seen, [{ type: 'timeout' }, '/counted', 3])
  t.equal(h.ctx.post('after'), false)
  await t.rejects(h.terminate(), { message: 'terminate runs once' })
})

t.test('the harness refuses what the server refuses: an empty topic, a bad timer delay', async (t) => {
  const h = handlerHarness(defineHandler({}))
  t.throws(() => h.ctx.subscribe(''), { code: 'FST_WS_INVALID_TOPIC' })
  t.throws(() => h.ctx.sendAfter(-1, 'x'), { code: 'FST_WS_INVALID_TIMER' })
  t.throws(() => h.ctx.startTimer(Number.NaN, 'x'), { code: 'FST_WS_INVALID_TIMER' })
  t.same(h.timers, [])
})

t.test('next() after the server closed fails at once, with the close code and the terminate reason', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/crash', { handle: () => { throw new Error('boom') } })
  app.ws('/bye', { websocketInit: () => ({ reply: [text('one'), close(4000, 'done')] }) })
  const crashing = await wsClient(app, '/crash', { timeoutMs: 5000 })
  crashing.send('x')
  await t.rejects(crashing.next(), { message: /^no next frame: the connection closed with 1011 "" \(0 frames received before; the server's terminate reason: crash \(Error: boom\)\)$/ })
  const bye = await wsClient(app, '/bye', { timeoutMs: 5000 })
  t.equal(await bye.nextText(), 'one', 'what came before the close is still read')
  await t.rejects(bye.nextText(), { message: /closed with 4000 "done" \(1 frames received before; the server's terminate reason: stop 4000 "done"\)/ })
  await t.rejects(bye.next(), { message: /^no next frame: the connection closed with 4000/, }, 'and again, at once')
})

for (const transport of ['injected (no port)', 'real port'] as const) {
  t.test(`a handshake whose init never settles fails after timeoutMs, ${transport}`, async (t) => {
    const { app } = await buildApp(t, { closeTimeout: 50 })
    app.ws('/hang', { init: async () => { await new Promise(() => {}) } })
    const base = transport === 'real port' ? await listen(app) : ''
    const connecting = transport === 'real port' ? wsClient(`${base}/hang`, { timeoutMs: 50 }) : wsClient(app, '/hang', { timeoutMs: 50 })
    await t.rejects(connecting, { message: /^the upgrade of .*\/hang got no answer within 50 ms \(an init that never settles\?\)$/ })
  })
}

t.test('the toolkit holds no connection it did not open, and none after they close', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/x', {})
  const base = await listen(app)
  const { WebSocket } = await import('ws')
  const plain = new WebSocket(`${base}/x`) // not the toolkit's
  await new Promise((resolve) => plain.once('open', resolve))
  t.equal(rememberedConnections(), 0, 'a connection of another client is not remembered')
  const client = await wsClient(`${base}/x`)
  client.close()
  await client.terminated()
  t.equal(rememberedConnections(), 0, 'nor one of the toolkit\'s, once claimed')
  plain.close()
})

t.test('with an injected client open, app.close() leaves no timer behind (the process can exit)', async (t) => {
  const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
  const before = timers()
  const { app } = await buildApp(t)
  app.ws('/x', { handle: () => ({ reply: text('hi') }) })
  const client = await wsClient(app, '/x')
  client.send('x')
  await client.next()
  await app.close()
  t.same(await client.closed(), { code: 1012, reason: '' })
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(timers() <= before, `${timers()} timers, ${before} before`)
})

t.test('onInit sees the ws client before any frame, on both transports; @fastify/websocket\'s injectWS works too', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/hi', { websocketInit: (_state, ctx) => ({ reply: text(`hi ${ctx.request.ip === '' ? 'no ip' : ctx.request.ip}`) }) })
  const base = await listen(app)
  for (const open of [
    async (onInit: (ws: import('ws').WebSocket) => void) => await wsClient(app, '/hi', { onInit }),
    async (onInit: (ws: import('ws').WebSocket) => void) => await wsClient(`${base}/hi`, { onInit })
  ]) {
    const first: string[] = []
    const client = await open((ws) => { ws.once('message', (data: Buffer) => first.push(data.toString())) })
    t.equal(await client.nextText(), 'hi 127.0.0.1')
    t.same(first, ['hi 127.0.0.1'], 'onInit\'s listener saw the frame sent with the 101')
    client.close()
  }
  let message!: Promise<unknown[]>
  const injected = await app.injectWS('/hi', {}, { onInit (ws) { message = once(ws, 'message') } })
  t.equal(String((await message)[0]), 'hi no ip', 'injectWS has no socket address: the snapshot says so')
  injected.terminate()
})
