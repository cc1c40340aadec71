/**
 * Routes as Fastify users write them: `app.ws()` takes Fastify's route options, handlers may be
 * class instances, kept headers are named as Node names them, and the logs say what happened
 * (a line at open and at close, refusals without stack traces, the route's logLevel honoured).
 */
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { text, type InFrame, type Result } from '../lib/index.js'
import { wsClient } from '../lib/testing.js'
import { buildApp, upgradeHeaders } from './helpers.js'

async function loggedApp (t: { teardown(fn: () => unknown): void }, level = 'info') {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done() } })
  const app = Fastify({ logger: { level, stream } })
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  return { app, lines }
}

t.test('app.ws() takes Fastify route options: schema for the upgrade request, hooks, config, constraints', async (t) => {
  const { app } = await loggedApp(t, 'silent')
  const seenConfig: unknown[] = []
  app.ws('/typed', {
    init: (request) => ({ state: (request.query as { n: number }).n }),
    websocketInit: (n) => ({ reply: text(`n is a ${typeof n}: ${String(n)}`) })
  }, {
    schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } },
    config: { label: 'typed' },
    onRequest: async (request) => { seenConfig.push(request.routeOptions.config) },
    idleTimeout: 5000
  })
  const refused = await app.inject({ url: '/typed?n=x', headers: upgradeHeaders })
  t.equal(refused.statusCode, 400, 'the querystring schema refuses before the upgrade')
  const client = await wsClient(app, '/typed?n=7')
  t.equal(await client.nextText(), 'n is a number: 7', 'coerced by Fastify\'s validation')
  t.match(seenConfig, [{ label: 'typed' }, { label: 'typed' }])
  t.throws(() => app.ws('/typo', {}, { idleTimout: 5 } as never), { code: 'FST_WS_INVALID_OPTION', message: /unknown option "idleTimout"/ })
  client.close()
})

t.test('class-instance handlers with fields are accepted; object literals with unknown keys are not', async (t) => {
  const { app } = await loggedApp(t, 'silent')
  class Greeter {
    constructor (readonly greeting: string) {}
    handle (frame: InFrame): Result<undefined> {
      return frame.type === 'text' ? { reply: text(`${this.greeting}, ${frame.data}`) } : undefined
    }
  }
  app.ws('/class', new Greeter('hello'))
  const client = await wsClient(app, '/class')
  client.send('ada')
  t.equal(await client.nextText(), 'hello, ada')
  t.throws(() => app.ws('/literal', { greeting: 'x' } as never), { code: 'FST_WS_INVALID_HANDLER' })
  client.close()
})

t.test('keepHeaders are kept under the names Node gives them (lower case)', async (t) => {
  const { app } = await loggedApp(t, 'silent')
  app.ws('/headers', { websocketInit: (_state, ctx) => ({ reply: text(JSON.stringify(ctx.request.headers)) }) }, { keepHeaders: ['X-User'] })
  const client = await wsClient(app, '/headers', { headers: { 'X-User': 'ada' } })
  t.same(await client.nextJson(), { 'x-user': 'ada' })
  client.close()
})

t.test('one log line at open and one at close; refusals without stack traces; the route\'s logLevel applies', async (t) => {
  const { app, lines } = await loggedApp(t)
  app.ws('/logged', { handle: () => ({ reply: { type: 'close', code: 4001, reason: 'bye' } }) })
  app.ws('/quiet', {}, { logLevel: 'warn' })
  const client = await wsClient(app, '/logged')
  client.send('x')
  await client.terminated()
  const open = lines.find((line) => line.msg === 'WebSocket open')
  const closed = lines.find((line) => line.msg === 'WebSocket closed')
  t.match(open, { level: 30, wsRoute: '/logged', wsId: /-/, reqId: /./, ip: '127.0.0.1' })
  t.match(closed, { level: 30, wsRoute: '/logged', code: 4001, reason: 'stop', durationMs: Number })
  const dropped = await wsClient(app, '/logged')
  dropped.ws.terminate()
  await dropped.terminated()
  t.match(lines.filter((line) => line.msg === 'WebSocket closed').at(-1), { code: 1006, reason: 'closed' }, 'no close frame: 1006')

  const refused = await app.inject({ url: '/logged', headers: { ...upgradeHeaders, origin: 'http://evil.example' } })
  t.equal(refused.statusCode, 403)
  const logged = lines.find((line) => (line.err as { code?: string } | undefined)?.code === 'FST_WS_ORIGIN_NOT_ALLOWED')
  t.ok(logged, 'the refusal is logged')
  t.notOk((logged!.err as { stack?: string }).stack, 'without a stack trace')
  await app.inject('/logged')
  const upgradeRequired = lines.find((line) => (line.err as { code?: string } | undefined)?.code === 'FST_WS_UPGRADE_REQUIRED')
  t.notOk((upgradeRequired!.err as { stack?: string }).stack)

  const before = lines.length
  const quiet = await wsClient(app, '/quiet')
  quiet.close()
  await quiet.terminated()
  t.notOk(lines.slice(before).some((line) => String(line.msg).startsWith('WebSocket ')), 'logLevel warn: no open or close line')
})

t.test('a close caused by an error says its cause in the close line; a 503 refusal is logged at warn, without a stack', async (t) => {
  const { app, lines } = await loggedApp(t)
  app.ws('/json', {}, { json: { schema: { type: 'object', required: ['a'] } }, maxConnections: 1 })
  app.ws('/throws', { handle: () => { throw 'not an Error' } }) // eslint-disable-line no-throw-literal
  const client = await wsClient(app, '/json')
  client.send('not json')
  await client.terminated()
  t.match(lines.find((line) => line.msg === 'WebSocket closed'), {
    level: 30, code: 1007, reason: 'error', errorCode: 'FST_WS_INVALID_MESSAGE', error: 'Invalid message: invalid JSON'
  })
  const held = await wsClient(app, '/json')
  const refused = await app.inject({ url: '/json', headers: upgradeHeaders })
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { statusCode: 503, code: 'FST_WS_TOO_MANY_CONNECTIONS', error: 'Service Unavailable', message: /\/json holds its maximum of 1/ })
  t.same(lines.filter((line) => (line.level as number) >= 50), [], 'nothing at error level')
  t.match(lines.find((line) => line.code === 'FST_WS_TOO_MANY_CONNECTIONS'), { level: 40, route: '/json' })
  t.notOk(lines.some((line) => 'stack' in line || (line.err as { stack?: string } | undefined)?.stack !== undefined), 'no stack anywhere')
  held.close()
  const thrower = await wsClient(app, '/throws')
  thrower.send('x')
  await thrower.terminated()
  t.match(lines.filter((line) => line.msg === 'WebSocket closed').at(-1), { code: 1011, reason: 'crash', error: 'not an Error' })
})

t.test('the README\'s first-day route: typed params and query, validated by Fastify before the upgrade', async (t) => {
  const { app } = await buildApp(t)
  app.ws<{ room: string, name: string }, unknown, never, { Params: { room: string }, Querystring: { name: string } }>('/rooms/:room', {
    init: (request) => ({ state: { room: request.params.room, name: request.query.name } }),
    websocketInit: (state) => ({ reply: text(`${state.name} joined ${state.room}`) })
  }, {
    schema: {
      params: { type: 'object', properties: { room: { type: 'string', minLength: 1 } }, required: ['room'] },
      querystring: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }
    }
  })
  const client = await wsClient(app, '/rooms/blue?name=ada')
  t.equal(await client.nextText(), 'ada joined blue')
  client.close()
  for (const url of ['/rooms/blue', '/rooms/?name=ada']) {
    const refused = await app.inject({ url, headers: upgradeHeaders })
    t.equal(refused.statusCode, 400, `${url}: 400 before the upgrade`)
  }
})
