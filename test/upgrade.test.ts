/**
 * Before the 101: init, subprotocols, refusals, hooks, the HTTP side of the same path,
 * encapsulation, and registration beside an app's own @fastify/websocket.
 */
import fastifyWebsocket, { type WebsocketPluginOptions } from '@fastify/websocket'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import wsHandlers, { defineHandler, text, type RequestSnapshot } from '../lib/index.js'
import { RawClient, buildApp, connect, inject, listen, terminateRecorder, until, upgradeHeaders } from './helpers.js'

const echo = defineHandler({
  handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined
})

t.test("Cowboy's guide case: a client offering only v12.stomp gets 400 with a body that says why", async (t) => {
  const { app } = await buildApp(t)
  app.ws('/mqtt', echo, { protocols: ['mqtt'] })
  const response = await app.inject({ url: '/mqtt', headers: { ...upgradeHeaders, 'sec-websocket-protocol': 'v12.stomp' } })
  t.equal(response.statusCode, 400)
  t.match(response.json(), {
    code: 'FST_WS_PROTOCOL_NOT_SUPPORTED',
    message: 'None of the offered subprotocols (v12.stomp) is supported; this route speaks: mqtt'
  })
  t.notOk(response.headers['sec-websocket-accept'], 'no upgrade happened')
})

t.test("Cowboy's guide case: v12.stomp, mqtt is upgraded with mqtt in the 101 (real socket)", async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/mqtt', { ...echo, terminate: recorder.terminate }, { protocols: ['mqtt'] })
  const base = await listen(app)
  const { ws, headers } = await connect(`${base}/mqtt`, ['v12.stomp', 'mqtt'])
  t.equal(headers['sec-websocket-protocol'], 'mqtt', 'the 101 carries the chosen protocol')
  t.equal(ws.protocol, 'mqtt')
  ws.close()
  const { request } = await recorder.first
  t.equal(request.protocol, 'mqtt', 'callbacks see the negotiated protocol in the request snapshot')
})

t.test('v12.stomp, mqtt through injectWS reaches the handler with mqtt negotiated', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/mqtt', { terminate: recorder.terminate }, { protocols: ['mqtt'] })
  const { ws } = await inject(app, '/mqtt', { 'sec-websocket-protocol': 'v12.stomp, mqtt' })
  ws.close()
  t.equal((await recorder.first).request.protocol, 'mqtt')
})

t.test('a client with no Sec-WebSocket-Protocol is upgraded without one by default', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/mqtt', echo, { protocols: ['mqtt'] })
  const base = await listen(app)
  const { ws, headers } = await connect(`${base}/mqtt`)
  t.equal(headers['sec-websocket-protocol'], undefined)
  t.equal(ws.protocol, '')
  ws.close()
})

t.test('protocolRequired: a client with no Sec-WebSocket-Protocol gets 400', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/mqtt', echo, { protocols: ['mqtt'], protocolRequired: true })
  const response = await app.inject({ url: '/mqtt', headers: upgradeHeaders })
  t.equal(response.statusCode, 400)
  t.equal(response.json().code, 'FST_WS_PROTOCOL_REQUIRED')
})

t.test('the route order of protocols is the preference, not the client order', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/p', echo, { protocols: ['v2', 'v1'] })
  const base = await listen(app)
  const { ws } = await connect(`${base}/p`, ['v1', 'v2'])
  t.equal(ws.protocol, 'v2')
  ws.close()
})

t.test('a route without protocols answers none, even when the client offers some', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/none', echo)
  const base = await listen(app)
  // The ws client itself fails a handshake that answers none of its protocols.
  await t.rejects(connect(`${base}/none`, ['chat']), /Server sent no subprotocol/)
})

t.test('init refuses with 401 and no upgrade happens; terminate is not called', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/private', {
    init: (request, reply) => {
      if (request.headers.authorization !== 'Bearer good') return reply.code(401).send({ error: 'who are you?' })
      return { state: 'ok' }
    },
    terminate: recorder.terminate
  })
  const response = await app.inject({ url: '/private', headers: upgradeHeaders })
  t.equal(response.statusCode, 401)
  t.same(response.json(), { error: 'who are you?' })
  await t.rejects(inject(app, '/private'), /refused with HTTP 401/)
  const { ws } = await inject(app, '/private', { authorization: 'Bearer good' })
  ws.close()
  t.equal((await recorder.first).state, 'ok')
  t.equal(recorder.calls.length, 1, 'only the upgraded connection was terminated')
})

t.test('async init chooses a protocol, options and the state', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/custom', {
    init: async (request) => {
      await new Promise((resolve) => setImmediate(resolve))
      const offered = String(request.headers['sec-websocket-protocol']).split(',').map((p) => p.trim())
      return { state: { user: 'ada' }, protocol: offered.find((p) => p.startsWith('chat.')), options: { keepHeaders: ['x-user'] } }
    },
    terminate: recorder.terminate
  })
  const base = await listen(app)
  const { ws } = await connect(`${base}/custom`, ['foo', 'chat.v3'], { headers: { 'x-user': 'ada', 'x-other': 'no' } })
  t.equal(ws.protocol, 'chat.v3')
  ws.close()
  const { state, request } = await recorder.first
  t.same(state, { user: 'ada' })
  t.same(request.headers, { 'x-user': 'ada' }, 'only the kept headers are in the snapshot')
  t.ok(Object.isFrozen(request), 'the snapshot is frozen')
  t.match(request, { method: 'GET', url: '/custom', routeUrl: '/custom', ip: '127.0.0.1', protocol: 'chat.v3' })
})

t.test('init choosing a protocol the client did not offer is a 500 with a coded error', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/bad', { init: () => ({ protocol: 'mqtt' }) })
  const response = await app.inject({ url: '/bad', headers: { ...upgradeHeaders, 'sec-websocket-protocol': 'stomp' } })
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'FST_WS_PROTOCOL_NOT_OFFERED')
})

t.test('init returning the wrong shape is a 500 that says what was expected', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/a', { init: () => ({ stat: 1 }) as never })
  app.ws('/b', { init: () => 'state' as never })
  app.ws('/c', { init: () => ({ protocol: 1 }) as never })
  app.ws('/d', { init: () => ({ options: { idleTimeout: -1 } }) })
  const messages: string[] = []
  for (const url of ['/a', '/b', '/c', '/d']) {
    const response = await app.inject({ url, headers: upgradeHeaders })
    t.equal(response.statusCode, 500)
    t.equal(response.json().code, 'FST_WS_INVALID_RESULT')
    messages.push(response.json().message)
  }
  t.same(messages, [
    'init returned an invalid result: unknown key "stat", expected some of: state, protocol, options',
    'init returned an invalid result: got "state", expected undefined or an object with some of: state, protocol, options',
    'init returned an invalid result: "protocol" must be a string, got 1',
    'init returned an invalid result: option "idleTimeout": expected a whole number of ms from 0 to 2147483647 (a Node timer\'s limit, about 24.8 days), got -1'
  ])
})

t.test('init that throws answers through Fastify error handling (500) and nothing is upgraded', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/throws', { init: () => { throw new Error('database down') } })
  const response = await app.inject({ url: '/throws', headers: upgradeHeaders })
  t.equal(response.statusCode, 500)
  t.equal(response.json().message, 'database down')
})

t.test('app and route hooks run before init and can refuse the upgrade', async (t) => {
  const { app } = await buildApp(t)
  const order: string[] = []
  app.addHook('onRequest', async (request, reply) => {
    order.push('onRequest')
    if (request.headers['x-block'] === 'yes') return await reply.code(403).send('blocked')
  })
  app.route({
    method: 'GET',
    url: '/hooked',
    preValidation: async () => { order.push('preValidation') },
    preHandler: [async () => { order.push('preHandler') }],
    handler: async () => 'plain',
    ws: { init: () => { order.push('init') } }
  })
  const blocked = await app.inject({ url: '/hooked', headers: { ...upgradeHeaders, 'x-block': 'yes' } })
  t.equal(blocked.statusCode, 403)
  t.same(order, ['onRequest'])
  order.length = 0
  const { ws } = await inject(app, '/hooked')
  t.same(order, ['onRequest', 'preValidation', 'preHandler', 'init'])
  ws.close()
})

t.test('a plain GET on a ws route declared with the route option reaches the HTTP handler', async (t) => {
  const { app } = await buildApp(t)
  let preHandlerRuns = 0
  app.route({ method: 'GET', url: '/both', preHandler: async () => { preHandlerRuns++ }, handler: async () => ({ http: true }), ws: echo })
  const response = await app.inject({ url: '/both' })
  t.equal(response.statusCode, 200)
  t.same(response.json(), { http: true })
  const { ws, seen } = await inject(app, '/both')
  ws.send('hello')
  t.same(await seen.frameCount(1), ['text:hello'])
  t.equal(preHandlerRuns, 2, "the route's own preHandler ran for both")
  ws.close()
})

t.test('a plain GET on an app.ws route gets 426 Upgrade Required', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/only', echo)
  for (const headers of [{}, { connection: 'keep-alive', upgrade: 'websocket' }, { connection: 'upgrade', upgrade: 'h2c' }]) {
    const response = await app.inject({ url: '/only', headers })
    t.equal(response.statusCode, 426)
    t.equal(response.headers.upgrade, 'websocket')
    t.equal(response.json().code, 'FST_WS_UPGRADE_REQUIRED')
  }
  const listed = await app.inject({ url: '/only', headers: { ...upgradeHeaders, connection: 'keep-alive, Upgrade' } })
  t.equal(listed.statusCode, 426, 'an upgrade attempt that passes init still cannot upgrade through inject')
})

t.test('allowOrigins refuses other origins with 403 and lets origin-less clients in', async (t) => {
  const { app } = await buildApp(t, { allowOrigins: ['https://good.example'] })
  app.ws('/o', echo)
  const bad = await app.inject({ url: '/o', headers: { ...upgradeHeaders, origin: 'https://evil.example' } })
  t.equal(bad.statusCode, 403)
  t.equal(bad.json().code, 'FST_WS_ORIGIN_NOT_ALLOWED')
  const good = await inject(app, '/o', { origin: 'https://good.example' })
  good.ws.close()
  const none = await inject(app, '/o')
  none.ws.close()
})

t.test('routes work inside encapsulated contexts with prefixes, hooks and decorators', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  await app.register(async (child) => {
    child.decorate('greeting', 'hi from the child')
    child.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-token'] !== 'child') return await reply.code(401).send()
    })
    child.ws('/room/:name', {
      init: (request) => ({ state: `${(child as unknown as { greeting: string }).greeting} in ${(request.params as { name: string }).name}` }),
      websocketInit: (state: string) => ({ reply: text(state) }),
      terminate: recorder.terminate
    })
  }, { prefix: '/api' })
  await t.rejects(inject(app, '/api/room/blue'), /401/, 'the child hook applies')
  const { ws, seen } = await inject(app, '/api/room/blue', { 'x-token': 'child' })
  t.same(await seen.frameCount(1), ['text:hi from the child in blue'])
  ws.close()
  const { request } = await recorder.first
  t.match(request, { routeUrl: '/api/room/:name', url: '/api/room/blue', params: { name: 'blue' } } satisfies Partial<RequestSnapshot>)
})

/** An app that registered @fastify/websocket itself, before this plugin, with a plain route beside ours. */
async function appWithOwnWebsocket (t: Test, options: WebsocketPluginOptions = {}) {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyWebsocket, options)
  await app.register(wsHandlers)
  app.get('/plain', { websocket: true }, (socket) => { socket.send('plain route') })
  return { app } // not the instance itself: awaiting a Fastify instance readies it
}

t.test('with @fastify/websocket registered by the app first, app.ws works', async (t) => {
  const { app } = await appWithOwnWebsocket(t)
  app.ws('/mine', echo, { protocols: ['mqtt'] })
  const base = await listen(app)
  const mine = await connect(`${base}/mine`, ['x', 'mqtt'])
  t.equal(mine.ws.protocol, 'mqtt', 'our protocol rule is used on our routes')
  mine.ws.send('hello')
  t.same(await mine.seen.frameCount(1), ['text:hello'])
  const plain = await connect(`${base}/plain`, ['x', 'y'])
  t.equal(plain.ws.protocol, 'x', "a plain @fastify/websocket route keeps ws's rule (the first offer)")
  t.same(await plain.seen.frameCount(1), ['text:plain route'])
  plain.ws.close()
  mine.ws.close()
})

t.test("the app's own handleProtocols still decides for its plain @fastify/websocket routes", async (t) => {
  const { app } = await appWithOwnWebsocket(t, { options: { handleProtocols: (protocols) => [...protocols].at(-1) ?? false } })
  app.ws('/mine', echo, { protocols: ['x'] })
  const base = await listen(app)
  const plain = await connect(`${base}/plain`, ['x', 'y'])
  t.equal(plain.ws.protocol, 'y', 'the last offer, as the app decided')
  const mine = await connect(`${base}/mine`, ['x', 'y'])
  t.equal(mine.ws.protocol, 'x')
  t.same(await plain.seen.frameCount(1), ['text:plain route'])
  mine.ws.close()
  plain.ws.close()
})

t.test('with @fastify/websocket registered by the app first, the ws route option is a clear error', async (t) => {
  const { app } = await appWithOwnWebsocket(t)
  t.throws(() => app.route({ method: 'GET', url: '/late', handler: async () => 'x', ws: echo }), {
    code: 'FST_WS_ROUTE_OPTION_ORDER', message: /Route \/late uses the "ws" route option/
  })
})

t.test('a handler that is not a handler object is refused at declaration with a coded error', async (t) => {
  const { app } = await buildApp(t)
  t.throws(() => app.ws('/fn', ((socket: unknown) => socket) as never), {
    code: 'FST_WS_INVALID_HANDLER',
    message: 'The WebSocket handler of /fn is invalid: expected an object with some of init, websocketInit, handle, info, terminate, got a function (a @fastify/websocket handler?)'
  })
  t.throws(() => app.ws('/typo', { handel: () => undefined } as never), {
    message: 'The WebSocket handler of /typo is invalid: unknown callback "handel", expected some of init, websocketInit, handle, info, terminate'
  })
  t.throws(() => app.ws('/bad', { handle: 'echo' } as never), { message: /"handle" must be a function, got "echo"/ })
  t.throws(() => app.route({ method: 'GET', url: '/null', handler: async () => 'x', ws: null as never }), { code: 'FST_WS_INVALID_HANDLER' })
  t.doesNotThrow(() => app.ws('/class', new (class { handle (): undefined { return undefined } })()), 'methods of a class instance count')
})

t.test("listeners the app adds in websocketServer's connection event are kept", async (t) => {
  const { app } = await buildApp(t)
  const seen: string[] = []
  app.websocketServer.on('connection', (socket) => {
    socket.on('close', () => seen.push('app close listener'))
    socket.on('error', () => seen.push('app error listener'))
  })
  const recorder = terminateRecorder()
  app.ws('/observed', { terminate: recorder.terminate })
  const base = await listen(app)
  const { ws } = await connect(`${base}/observed`)
  ws.close()
  await recorder.first
  const raw = await RawClient.open(base, '/observed')
  raw.send(RawClient.frame(0x1, 'unmasked', { masked: false })) // a protocol error: 'error' then 'close'
  await raw.ended
  await until(() => seen.length === 3)
  t.same(seen.sort(), ['app close listener', 'app close listener', 'app error listener'])
})

t.test('bad plugin and route options are refused with a coded error at declaration', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => await app.register(wsHandlers, { idleTimeout: 'soon' } as never), {
    code: 'FST_WS_INVALID_OPTION', message: 'Invalid option "plugin options": option "idleTimeout": expected a whole number of ms from 0 to 2147483647 (a Node timer\'s limit, about 24.8 days), got "soon"'
  })
  await t.rejects(async () => await Fastify().register(wsHandlers, { perMessageDeflate: true } as never), {
    message: /option "perMessageDeflate": expected an object, got true/
  })
  await t.rejects(async () => await Fastify().register(wsHandlers, { adapter: 'redis' } as never), {
    message: /option "adapter": expected an adapter \(inProcessAdapter\(\), redisAdapter\(\)\), got "redis"/
  })
  const { app: other } = await buildApp(t, { perMessageDeflate: { threshold: 0 } })
  t.throws(() => other.ws('/x', echo, { maxFrameSize: 0 }), {
    code: 'FST_WS_INVALID_OPTION', message: /wsOptions of \/x.*maxFrameSize.*>= 1 or Infinity, got 0/
  })
  t.throws(() => other.ws('/y', echo, { protocol: ['mqtt'] } as never), { message: /unknown option "protocol"/ })
  t.throws(() => other.ws('/z', echo, { protocols: 'mqtt' } as never), { message: /array of non-empty strings, got "mqtt"/ })
  t.throws(() => other.ws('/w', echo, null as never), { message: /options must be an object, got null/ })
  t.throws(() => other.ws('/w', echo, 5 as never), { message: /options must be an object, got 5/ }, 'not taken for no options')
  t.throws(() => other.ws('/w', echo, ['idleTimeout'] as never), { message: /options must be an object/ })
  t.throws(() => other.ws('/v', echo, { compress: 'yes' } as never), { message: /option "compress": expected a boolean, got "yes"/ })
  t.doesNotThrow(() => other.ws('/u', echo, { idleTimeout: undefined }), 'an undefined option is the default')
})

t.test('an app\'s async verifyClient: a refused upgrade frees its place, an accepted one counts until terminate', async (t) => {
  const { app } = await appWithOwnWebsocket(t, {
    options: {
      verifyClient: (info: { req: { url?: string } }, done: (ok: boolean, code?: number) => void) => {
        setImmediate(() => done(!(info.req.url ?? '').includes('deny'), 401))
      }
    }
  })
  const recorder = terminateRecorder()
  app.ws('/verified', { terminate: recorder.terminate }, { maxConnections: 1 })
  const base = await listen(app)
  await t.rejects(connect(`${base}/verified?deny`), { message: 'HTTP 401' })
  await until(() => app.wsConnections.countOfRoute('/verified') === 0, 'the refused upgrade\'s place freed')
  const { ws } = await connect(`${base}/verified`)
  t.equal(app.wsConnections.countOfRoute('/verified'), 1)
  await t.rejects(connect(`${base}/verified`), { message: 'HTTP 503' })
  ws.close()
  await recorder.first
  await until(() => app.wsConnections.countOfRoute('/verified') === 0, 'freed after terminate')
  // The socket's own close, later, uncounts nothing a second time: the counts and the limit hold.
  await until(async () => await new Promise<number>((resolve) => app.server.getConnections((_error, count) => resolve(count))) === 0, 'the socket closed')
  t.equal(app.wsConnections.countOfRoute('/verified'), 0)
  const again = await connect(`${base}/verified`)
  t.equal(app.wsConnections.countOfRoute('/verified'), 1)
  await t.rejects(connect(`${base}/verified`), { message: 'HTTP 503' }, 'maxConnections still holds')
  again.ws.close()
})
