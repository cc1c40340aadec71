/**
 * Where the outside enters (ws's events, promises a handler returned, the app's logger), a throw
 * closes that one connection with 1011 (FST_WS_INTERNAL, the thrown value as its cause) and
 * terminate still runs once; the process goes on. Each entry point is driven by making the
 * connection's own reaction throw, as a bug of ours would.
 */
import Fastify, { type FastifyBaseLogger } from 'fastify'
import t from 'tap'
import wsHandlers, { json, text, type Result, type WebSocketContext } from '../lib/index.js'
import { kDataReceived, kPeerEnded, kReceived } from '../lib/actor/listeners.js'
import { wsClient } from '../lib/testing.js'
import { RawClient, buildApp, connect, listen, terminateRecorder, until } from './helpers.js'

const boom = (): never => { throw new Error('boom') }

/** The one open connection's ctx, with one of its reactions made to throw. */
function breakOnly (app: { wsConnections: Iterable<WebSocketContext> }, method: symbol): void {
  const ctx = [...app.wsConnections][0] as unknown as Record<symbol, unknown>
  ctx[method] = boom
}

const internalError = { type: 'error', code: 1011, error: { code: 'FST_WS_INTERNAL', message: 'A WebSocket event failed: boom', cause: { message: 'boom' } } }

t.test('a throw on a text, binary, ping or pong frame closes that connection with 1011; the others go on', async (t) => {
  for (const send of ['text', 'binary', 'ping', 'pong'] as const) {
    const { app, errors } = await buildApp(t)
    const recorder = terminateRecorder()
    app.ws('/x', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined, terminate: recorder.terminate })
    const base = await listen(app)
    const { ws, seen } = await connect(`${base}/x`)
    const bystander = await connect(`${base}/x`)
    await until(() => app.wsConnections.size === 2, 'two connections')
    breakOnly(app, kReceived)
    if (send === 'text') ws.send('hi')
    else if (send === 'binary') ws.send(Buffer.from([1]))
    else ws[send]()
    t.equal((await seen.closed).code, 1011, `${send}: close 1011`)
    t.match((await recorder.first).reason, internalError)
    t.equal(recorder.calls.length, 1, 'terminate ran once')
    t.match(errors, [{ err: { code: 'FST_WS_INTERNAL' }, msg: 'WebSocket event failed; closing with 1011' }])
    bystander.ws.send('still here')
    t.same(await bystander.seen.frameCount(1), ['text:still here'], 'the other connection is served')
    bystander.ws.close()
  }
})

t.test('a throw where the peer ends the connection (close frame, protocol error, socket gone) still ends it once', async (t) => {
  for (const end of ['close frame', 'protocol error', 'socket gone'] as const) {
    const { app } = await buildApp(t, { closeTimeout: 100 })
    const recorder = terminateRecorder()
    app.ws('/x', { terminate: recorder.terminate })
    const base = await listen(app)
    const client = await RawClient.open(base, '/x')
    await until(() => app.wsConnections.size === 1, 'open')
    breakOnly(app, kPeerEnded)
    if (end === 'close frame') client.send(RawClient.frame(0x8, Buffer.from([0x03, 0xe8])))
    else if (end === 'protocol error') client.send(RawClient.frame(0x1, 'unmasked', { masked: false }))
    else client.socket.destroy()
    t.match((await recorder.first).reason, internalError, end)
    await until(() => app.wsConnections.size === 0, 'the connection gone')
    t.equal(recorder.calls.length, 1, `${end}: terminate ran once`)
    client.socket.destroy()
  }
})

t.test('a throw where socket data restarts the idle count closes with 1011, before ws parses the chunk', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  const frames: string[] = []
  app.ws('/x', { handle: (frame) => { frames.push(frame.type) }, terminate: recorder.terminate })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/x`)
  await until(() => app.wsConnections.size === 1, 'open')
  breakOnly(app, kDataReceived)
  ws.send('hi')
  t.equal((await seen.closed).code, 1011)
  t.match((await recorder.first).reason, internalError)
  t.same(frames, [], 'the chunk\'s frame never reached handle')
})

t.test('a ping the heartbeat cannot send closes that connection with 1011; the others keep their heartbeat', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 })
  const recorder = terminateRecorder()
  app.ws('/x', { terminate: recorder.terminate }, { pingInterval: 20, idleTimeout: 0 })
  const base = await listen(app)
  const broken = await connect(`${base}/x`)
  const healthy = await connect(`${base}/x`)
  await until(() => app.wsConnections.size === 2, 'two connections')
  const [first] = [...app.wsConnections] as unknown as Array<Record<symbol, { ping: () => void }>>
  const ws = Object.getOwnPropertySymbols(first!).map((symbol) => first![symbol]).find((value) => typeof value?.ping === 'function')!
  ws.ping = boom
  t.equal((await broken.seen.closed).code, 1011)
  t.match((await recorder.first).reason, internalError)
  let pings = 0
  healthy.ws.on('ping', () => pings++)
  await until(() => pings >= 2, 'the other connection is still pinged')
  healthy.ws.close()
})

t.test('a throw in the app\'s validator (a JSON route) closes with 1011', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.setValidatorCompiler(() => boom)
  await app.register(wsHandlers)
  app.ws('/j', { handle: () => undefined }, { json: { schema: { type: 'object' } } })
  const client = await wsClient(app, '/j')
  client.sendJson({ any: 1 })
  t.equal((await client.closed()).code, 1011)
  t.match(await client.terminated(), internalError)
})

t.test('a result that throws when it is read is the callback\'s crash, sync or async', async (t) => {
  const { app } = await buildApp(t)
  const throwing = { get reply () { return boom() } }
  app.ws('/r', {
    handle: (frame) => (frame.type === 'text' && frame.data === 'async' ? Promise.resolve(throwing) : throwing) as Result<undefined>
  })
  for (const mode of ['sync', 'async']) {
    const client = await wsClient(app, '/r')
    client.send(mode)
    t.equal((await client.closed()).code, 1011, mode)
    t.match(await client.terminated(), { type: 'crash', error: { message: 'boom' } })
  }
})

t.test('an app logger that throws on the close line does not keep terminate from running', async (t) => {
  const lines: string[] = []
  const logger: FastifyBaseLogger = {
    level: 'info',
    info: (_fields: unknown, message?: string) => {
      if (message === 'WebSocket closed') throw new Error('log sink down')
    },
    error: (_fields: unknown, message?: string) => { lines.push(String(message)) },
    warn () {},
    debug () {},
    trace () {},
    fatal () {},
    silent () {},
    child: () => logger
  }
  Object.defineProperty(logger, 'isLevelEnabled', { value: () => true })
  const app = Fastify({ loggerInstance: logger })
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  const recorder = terminateRecorder()
  app.ws('/x', { handle: () => ({ reply: json('bye'), stop: true }), terminate: recorder.terminate })
  const client = await wsClient(app, '/x')
  client.send('stop')
  t.same((await recorder.first).reason, { type: 'stop', code: 1000, reason: '' })
  t.ok(lines.includes('WebSocket close line failed'), 'the failure is logged')
})

t.test('a thrown value that is not an Error is the cause all the same', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/x', { terminate: recorder.terminate })
  const client = await wsClient(app, '/x')
  await until(() => app.wsConnections.size === 1, 'open')
  const ctx = [...app.wsConnections][0] as unknown as Record<symbol, unknown>
  ctx[kReceived] = () => { throw 'a string' } // eslint-disable-line no-throw-literal
  client.send('x')
  t.match((await recorder.first).reason, { type: 'error', code: 1011, error: { code: 'FST_WS_INTERNAL', message: 'A WebSocket event failed: a string', cause: 'a string' } })
})
