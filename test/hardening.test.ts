/**
 * Defects found by trying the plugin hard, each with the test that failed before its fix:
 * shutdown with upgrades in flight, the app's own @fastify/websocket routes left alone, a
 * bounded mailbox for every producer, frames held by `active: false`, `init` after every hook,
 * ws's handshake rules, one legitimate large reply, and `{ state: undefined }`.
 */
import { once } from 'node:events'
import net from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import t from 'tap'
import WebSocket from 'ws'
import wsHandlers, { defineHandler, text } from '../lib/index.js'
import { RawClient, buildApp, connect, inject, listen, terminateRecorder, until, upgradeHeaders, within } from './helpers.js'

/** An upgrade request on a raw socket; resolves with everything the server wrote, once it ended the socket. */
async function rawUpgrade (base: string, path: string): Promise<string> {
  const { port } = new URL(base)
  const socket = net.connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  await within(once(socket, 'close'), 'the server to end the refused upgrade\'s socket')
  return Buffer.concat(chunks).toString()
}

t.test('an upgrade that arrives while app.close() waits for terminates gets 503 and its socket is ended', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers)
  let release!: () => void
  const terminating = new Promise<void>((resolve) => { release = resolve })
  let terminates = 0
  app.ws('/slow-terminate', {
    terminate: async () => {
      terminates++
      await terminating // app.close() waits for this
    }
  })
  const base = await listen(app)
  const { seen } = await connect(`${base}/slow-terminate`)
  const closing = app.close()
  t.equal((await seen.closed).code, 1012)
  await until(() => terminates === 1, 'terminate to start')
  const answer = await rawUpgrade(base, '/slow-terminate')
  t.match(answer, /^HTTP\/1\.1 503/, 'refused while shutting down')
  release()
  await within(closing, 'app.close() to resolve')
})

t.test('an upgrade whose init was running when app.close() began is refused with 503', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers)
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let inits = 0
  app.ws('/slow-init', {
    init: async () => {
      inits++
      await gate
    }
  })
  let preClosed = false
  app.addHook('preClose', async () => { preClosed = true }) // runs after the plugin's
  const base = await listen(app)
  const answer = rawUpgrade(base, '/slow-init')
  await until(() => inits === 1, 'init to start')
  const closing = app.close()
  await until(() => preClosed, 'app.close() to reach preClose')
  release()
  t.match(await answer, /^HTTP\/1\.1 503[^]*FST_WS_SHUTTING_DOWN/)
  await within(closing, 'app.close() to resolve')
})

t.test('the app\'s own @fastify/websocket routes keep ws\'s defaults and every socket is in websocketServer.clients', async (t) => {
  const { app } = await buildApp(t, { compress: true })
  app.get('/plain', { websocket: true }, (socket) => {
    socket.on('message', (data: Buffer) => socket.send(data))
  })
  app.ws('/ours', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
  const base = await listen(app)
  const plain = await connect(`${base}/plain`) // ws clients offer permessage-deflate
  t.equal(plain.headers['sec-websocket-extensions'], undefined, 'no compression on the plain route (ws\'s default)')
  const big = Buffer.alloc(2 * 1024 * 1024, 7)
  plain.ws.send(big)
  t.equal((await plain.seen.frameCount(1))[0]!.length, 'binary:'.length + big.length, 'a 2 MB message is echoed, not closed with 1009')
  const ours = await connect(`${base}/ours`)
  t.match(ours.headers['sec-websocket-extensions'], /permessage-deflate/, 'our compress route negotiates it')
  t.equal(app.websocketServer.clients.size, 2, 'both sockets are in clients')
  ours.ws.send('x'.repeat(1_000_001))
  t.equal((await ours.seen.closed).code, 1009, 'our route keeps its own maxFrameSize')
  plain.ws.close()
})

t.test('posts are refused past mailboxLimit, with a warning once per episode; order holds', async (t) => {
  const warnings: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => warnings.push(JSON.parse(line)) } } })
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const got: number[] = []
  let ctxId = ''
  app.ws('/bounded', {
    websocketInit: async (_state, ctx) => {
      ctxId = ctx.id
      await gate // busy: posts wait in the mailbox
    },
    info: (message) => { got.push(message as number) }
  }, { mailboxLimit: 16 })
  const { ws } = await inject(app, '/bounded')
  await until(() => ctxId !== '', 'websocketInit to start')
  const accepted = Array.from({ length: 200 }, (_, i) => app.wsConnections.post(ctxId, i))
  t.equal(accepted.filter(Boolean).length, 16, '16 accepted')
  t.same(accepted.slice(0, 16), Array(16).fill(true), 'the first 16')
  t.equal(warnings.filter((w) => w.code === 'FST_WS_MAILBOX_FULL').length, 1, 'one warning, not 184')
  open()
  await until(() => got.length === 16, '16 infos')
  t.same(got, Array.from({ length: 16 }, (_, i) => i))
  t.equal(app.wsConnections.post(ctxId, 99), true, 'accepted again once drained')
  ws.terminate()
})

t.test('a long mailbox keeps its order through compaction', async (t) => {
  const { app } = await buildApp(t)
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const got: number[] = []
  let ctxId = ''
  app.ws('/long', {
    websocketInit: async (_state, ctx) => {
      ctxId = ctx.id
      await gate
    },
    info: (message, _state, ctx) => {
      got.push(message as number)
      if (message === 0) for (let i = 10_000; i < 15_000; i++) ctx.post(i) // posted while draining
    }
  }, { mailboxLimit: 20_000 })
  await inject(app, '/long')
  await until(() => ctxId !== '', 'websocketInit to start')
  for (let i = 0; i < 10_000; i++) app.wsConnections.post(ctxId, i)
  open()
  await until(() => got.length === 15_000, '15,000 infos')
  t.same(got, Array.from({ length: 15_000 }, (_, i) => i))
})

t.test('frames read while the handler paused reading still run when the peer closes', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  const handled: string[] = []
  app.ws('/held', {
    handle: (frame) => {
      if (frame.type !== 'text') return undefined
      handled.push(frame.data)
      return frame.data === 'pause' ? { active: false } : undefined
    },
    terminate: recorder.terminate
  })
  const base = await listen(app)
  const client = await RawClient.open(base, '/held')
  // One TCP write: the frames after "pause" are read before the handler pauses.
  client.send(Buffer.concat([
    RawClient.frame(0x1, 'pause'), RawClient.frame(0x1, 'a'), RawClient.frame(0x1, 'b'),
    RawClient.frame(0x8, Buffer.from([0x03, 0xe8]))
  ]))
  const { reason } = await recorder.first
  t.same(handled, ['pause', 'a', 'b'])
  t.same(reason, { type: 'remote', code: 1000, reason: '' })
  client.socket.destroy()
})

t.test('active: true puts the held frames first: before what was posted meanwhile, in the order they were read', async (t) => {
  const { app } = await buildApp(t)
  const handled: string[] = []
  let id = ''
  app.ws('/held', defineHandler<undefined, string>({
    websocketInit: (_state, ctx) => { id = ctx.id },
    handle: (frame) => {
      if (frame.type !== 'text') return undefined
      handled.push(frame.data)
      return frame.data === 'pause' ? { active: false } : undefined
    },
    info: (message) => {
      handled.push(`info:${message}`)
      return message === 'resume' ? { active: true } : undefined
    }
  }))
  const base = await listen(app)
  const client = await RawClient.open(base, '/held')
  await until(() => id !== '', 'open')
  // One TCP write: the frames after "pause" are read before the handler pauses, and held.
  client.send(Buffer.concat([RawClient.frame(0x1, 'pause'), RawClient.frame(0x1, 'a'), RawClient.frame(0x1, 'b')]))
  await until(() => handled.includes('pause'), 'paused')
  app.wsConnections.post(id, 'resume')
  app.wsConnections.post(id, 'later')
  await until(() => handled.length === 5, 'all of it')
  t.same(handled, ['pause', 'info:resume', 'a', 'b', 'info:later'])
  client.socket.destroy()
})

t.test('init runs after preHandlers that other plugins append in their own onRoute hooks', async (t) => {
  const { app } = await buildApp(t)
  // Like @fastify/rate-limit with hook: 'preHandler': registered after this plugin.
  await app.register(fp(async (instance: FastifyInstance) => {
    instance.addHook('onRoute', (routeOptions) => {
      const existing = routeOptions.preHandler === undefined ? [] : [routeOptions.preHandler].flat()
      routeOptions.preHandler = [...existing, async (_request, reply) => { await reply.code(429).send({ limited: true }) }]
    })
  }))
  let inits = 0
  app.ws('/limited', { init: () => { inits++ } })
  const response = await app.inject({ url: '/limited', headers: upgradeHeaders })
  t.equal(response.statusCode, 429)
  t.equal(inits, 0, 'init never saw the refused request')
})

t.test('handshakes that ws would refuse are refused with a coded 400 before init', async (t) => {
  const { app } = await buildApp(t)
  let inits = 0
  app.ws('/strict', { init: () => { inits++ } }, { protocols: ['mqtt'] })
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['a repeated subprotocol', { 'sec-websocket-protocol': 'mqtt, mqtt' }, /subprotocol is duplicated/],
    ['a subprotocol that is not a token', { 'sec-websocket-protocol': 'mqtt, m@tt' }, /Unexpected character/],
    ['an empty subprotocol', { 'sec-websocket-protocol': 'mqtt,' }, /Unexpected end/],
    ['a bad key', { 'sec-websocket-key': 'short' }, /Sec-WebSocket-Key/],
    ['a bad version', { 'sec-websocket-version': '12' }, /Sec-WebSocket-Version/]
  ]
  for (const [name, headers, message] of cases) {
    const response = await app.inject({ url: '/strict', headers: { ...upgradeHeaders, ...headers } })
    t.equal(response.statusCode, 400, name)
    t.match(response.json(), { code: 'FST_WS_INVALID_HANDSHAKE', message }, name)
  }
  t.equal(inits, 0)
})

t.test('a plain GET gets 426 with Upgrade and Connection: upgrade', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/only-ws', {})
  const response = await app.inject({ url: '/only-ws' })
  t.equal(response.statusCode, 426)
  t.equal(response.headers.upgrade, 'websocket')
  t.equal(response.headers.connection, 'upgrade')
})

t.test('one large legitimate reply is not mistaken for a slow reader', async (t) => {
  const { app } = await buildApp(t, { maxFrameSize: 20 * 1024 * 1024 })
  app.ws('/echo', { handle: (frame) => frame.type === 'binary' ? { reply: { type: 'binary', data: frame.data } } : undefined })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/echo`)
  const big = Buffer.alloc(16 * 1024 * 1024, 1) // Autobahn 9.1.6 / 9.2.6: over the default maxBufferedBytes alone
  ws.send(big)
  await seen.frameCount(1)
  t.equal(seen.frames[0]!.length, 'binary:'.length + big.length)
  ws.close(1000)
  t.equal((await seen.closed).code, 1000)
})

t.test('{ state: undefined } keeps the state, as undefined means absent for every key; null clears it', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/state', {
    init: () => ({ state: 'initial' as string | null }),
    handle: (frame, state) => {
      if (frame.type !== 'text') return undefined
      if (frame.data === 'undefined') return { state: undefined, reply: text(String(state)) }
      if (frame.data === 'null') return { state: null, reply: text(String(state)) }
      return { reply: text(String(state)) }
    }
  })
  const { ws, seen } = await inject(app, '/state')
  for (const message of ['undefined', 'show', 'null', 'show']) ws.send(message)
  t.same(await seen.frameCount(4), ['text:initial', 'text:initial', 'text:initial', 'text:null'])
  ws.terminate()
})

t.test('active: false stops reading the socket: the client\'s bytes stay buffered until it resumes', async (t) => {
  const { app } = await buildApp(t, { maxFrameSize: Infinity })
  let received = 0
  let resume!: () => void
  app.ws('/paused', {
    handle: (frame, _state, ctx) => {
      if (frame.type !== 'binary') return undefined
      received++
      if (received === 1) {
        resume = () => ctx.post('resume')
        return { active: false }
      }
      return undefined
    },
    info: () => ({ active: true })
  })
  const base = await listen(app)
  const ws = new WebSocket(`${base}/paused`)
  await once(ws, 'open')
  const chunk = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < 32; i++) ws.send(chunk)
  await until(() => received === 1, 'the first frame')
  // A negative, so a margin: far longer than loopback needs to move 32 MiB when the server reads.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.ok(ws.bufferedAmount > 8 * 1024 * 1024, `the client still holds ${ws.bufferedAmount} bytes: the server stopped reading`)
  t.ok(received < 32)
  resume()
  await until(() => received === 32, 'every frame after resuming')
  t.equal(ws.bufferedAmount, 0)
  ws.terminate()
})

t.test('the mailbox is bounded in bytes too: a few large frames stop reading the socket', async (t) => {
  const { app } = await buildApp(t, { maxFrameSize: 256 * 1024 })
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  let handled = 0
  app.ws('/large', {
    handle: async (frame) => {
      if (frame.type !== 'binary') return
      handled++
      if (handled === 1) await gate // busy: frames wait in the mailbox
    }
  }) // mailboxLimit stays 1024: only the bytes can bound 200 frames
  const base = await listen(app)
  const ws = new WebSocket(`${base}/large`)
  await once(ws, 'open')
  const frame = Buffer.alloc(200 * 1024)
  for (let i = 0; i < 200; i++) ws.send(frame) // 40 MiB: far more than the kernel's buffers hold
  await until(() => handled === 1, 'the first frame')
  // A negative, so a margin: far longer than loopback needs to move 40 MiB when the server reads.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.ok(ws.bufferedAmount > 16 * 1024 * 1024, `the client still holds ${ws.bufferedAmount} bytes`)
  open()
  await until(() => handled === 200, 'every frame once the mailbox drains')
  ws.terminate()
})

t.test('an upgrade whose init never settles does not hold app.close(): its socket is ended after closeTimeout', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers, { closeTimeout: 50 })
  app.ws('/hang', { init: async () => { await new Promise(() => {}) } })
  const base = await listen(app)
  const answer = rawUpgrade(base, '/hang')
  await until(() => app.wsConnections.countOfRoute('/hang') === 1, 'the upgrade admitted, its init running')
  await within(app.close(), 'app.close() with an init that never settles')
  t.equal(await answer, '', 'the socket was ended without an answer')
})
