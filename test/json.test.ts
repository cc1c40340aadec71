/**
 * JSON routes: text frames parsed and validated with Fastify's validator compiler; `json()`
 * replies; bad input closed with a code, or answered with an error frame when the route says so.
 */
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { close, defineHandler, json } from '../lib/index.js'
import { handlerHarness, wsClient } from '../lib/testing.js'
import { buildApp } from './helpers.js'

const schema = {
  type: 'object',
  properties: { type: { const: 'say' }, text: { type: 'string', minLength: 1 } },
  required: ['type', 'text'],
  additionalProperties: false
} as const

interface Say { type: 'say', text: string }

const shout = defineHandler<undefined, unknown, Say>({
  handle: (frame) => frame.type === 'json' ? { reply: json({ loud: frame.data.text.toUpperCase() }) } : undefined
})

t.test('a JSON route hands parsed, valid messages to handle; json() replies', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/shout', shout, { json: { schema } })
  const client = await wsClient(app, '/shout')
  client.sendJson({ type: 'say', text: 'hi' })
  t.same(await client.nextJson(), { loud: 'HI' })
  client.close(1000)
})

t.test('bad input closes with a code that says what was wrong, and terminate says why', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/shout', shout, { json: { schema } })
  app.ws('/any', { handle: (frame) => frame.type === 'json' ? { reply: json(frame.data) } : undefined }, { json: true })
  const cases: Array<[string, string | Buffer, number, RegExp]> = [
    ['/shout', 'not json', 1007, /^invalid JSON$/],
    ['/shout', Buffer.from('{}'), 1003, /JSON text frames/],
    ['/shout', JSON.stringify({ type: 'say' }), 1008, /must have required property 'text'/],
    ['/shout', JSON.stringify({ type: 'say', text: '' }), 1008, /\/text must NOT have fewer than 1 characters/],
    ['/shout', JSON.stringify({ type: 'say', text: 'x', extra: 1 }), 1008, /additional properties/],
    ['/any', '{', 1007, /invalid JSON/]
  ]
  for (const [path, message, code, reason] of cases) {
    const client = await wsClient(app, path)
    client.send(message)
    const closed = await client.closed()
    t.equal(closed.code, code, `${String(message)}: ${code}`)
    t.match(closed.reason, reason)
    t.match(await client.terminated(), { type: 'error', code, error: { code: 'FST_WS_INVALID_MESSAGE' } })
  }
  const any = await wsClient(app, '/any')
  any.send('[1,"two",null]')
  t.same(await any.nextJson(), [1, 'two', null], 'json: true parses without a schema')
  any.close()
})

t.test('onInvalid: error-frame answers bad input in order and keeps the connection open', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/shout', shout, { json: { schema, onInvalid: 'error-frame' } })
  const client = await wsClient(app, '/shout')
  client.send('nope')
  client.sendJson({ type: 'say', text: 'still here' })
  client.sendJson({ type: 'whisper' })
  t.same(await client.nextJson(), { type: 'error', code: 1007, message: 'invalid JSON' })
  t.same(await client.nextJson(), { loud: 'STILL HERE' })
  t.match(await client.nextJson(), { type: 'error', code: 1008, message: /must be equal to constant|must have required/ })
  client.close(1000)
  t.same(await client.terminated(), { type: 'remote', code: 1000, reason: '' })
})

t.test('the app\'s own validator compiler validates the messages', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const compiled: string[] = []
  app.setValidatorCompiler(({ url }) => {
    compiled.push(url)
    return (data: unknown) => typeof data === 'object' && data !== null && 'ok' in data
  })
  await app.register(wsHandlers)
  app.ws('/custom', { handle: (frame) => frame.type === 'json' ? { reply: json('accepted') } : undefined }, { json: { schema: { type: 'object' } } })
  const client = await wsClient(app, '/custom')
  client.sendJson({ ok: 1 })
  t.equal(await client.nextJson(), 'accepted')
  client.sendJson({ nope: 1 })
  t.match(await client.closed(), { code: 1008, reason: 'invalid message' })
  t.same(compiled, ['/custom'], 'compiled once, by the app\'s compiler')
})

t.test('compilers that answer { error }, long reasons cut to a close frame, queued JSON frames', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.setValidatorCompiler(() => (data: unknown) => (data as { ok?: boolean }).ok === true ? { value: data } : { error: new Error('x'.repeat(200)) })
  await app.register(wsHandlers)
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const got: unknown[] = []
  app.ws('/slow', {
    handle: async (frame) => {
      if (frame.type === 'json') got.push(frame.data)
      await gate // the next messages wait in the mailbox, weighed by their text's length
    }
  }, { json: { schema: { type: 'object' } } })
  const client = await wsClient(app, '/slow')
  client.sendJson({ ok: true, n: 1 })
  client.sendJson({ ok: true, n: 2 })
  client.sendJson({ ok: false })
  const closed = await client.closed()
  t.equal(closed.code, 1008)
  t.equal(Buffer.byteLength(closed.reason), 123, 'a close reason is at most 123 bytes')
  t.match(closed.reason, /^x+…$/)
  open()
  await client.terminated()
  t.same(got, [{ ok: true, n: 1 }], 'a close this side decides drops what waits, as for any close it decides')
})

t.test('json: false leaves text frames as text', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/plain', { handle: (frame) => frame.type === 'text' ? { reply: json({ got: frame.type }) } : undefined }, { json: false })
  const client = await wsClient(app, '/plain')
  client.send('{"not":"parsed"}')
  t.same(await client.nextJson(), { got: 'text' })
  client.close()
})

t.test('a bad json option is refused at declaration', async (t) => {
  const { app } = await buildApp(t)
  t.throws(() => app.ws('/x', {}, { json: 'yes' as never }), { code: 'FST_WS_INVALID_OPTION', message: /option "json"/ })
  t.throws(() => app.ws('/z', {}, { json: null as never }), { code: 'FST_WS_INVALID_OPTION', message: /option "json"/ })
  t.throws(() => app.ws('/y', {}, { json: { onInvalid: 'ignore' } as never }), { code: 'FST_WS_INVALID_OPTION' })
})

t.test('onInvalid as a function: the protocol answers (graphql-transport-ws closes with 4400; others send their own error), in order', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/graphql', shout, { json: { schema, onInvalid: (problem) => close(4400, problem.reason) } })
  app.ws('/typed', shout, { json: { schema, onInvalid: (problem) => json({ kind: 'bad-request', why: problem.reason, code: problem.code }) } })
  app.ws('/wrong', shout, { json: { onInvalid: () => 'not a frame' as never } })
  app.ws('/throws', shout, { json: { onInvalid: () => { throw new Error('protocol bug') } } })
  const graphql = await wsClient(app, '/graphql')
  graphql.sendJson({ type: 'say' })
  t.same(await graphql.closed(), { code: 4400, reason: 'message must have required property \'text\'' })
  t.same(await graphql.terminated(), { type: 'stop', code: 4400, reason: 'message must have required property \'text\'' })

  const typed = await wsClient(app, '/typed')
  typed.send('nope')
  typed.sendJson({ type: 'say', text: 'fine' })
  t.same(await typed.nextJson(), { kind: 'bad-request', why: 'invalid JSON', code: 1007 })
  t.same(await typed.nextJson(), { loud: 'FINE' }, 'the connection goes on, replies in order')
  typed.close()

  const wrong = await wsClient(app, '/wrong')
  wrong.send('{')
  t.equal((await wrong.closed()).code, 1011)
  t.match(await wrong.terminated(), { type: 'error', code: 1011, error: { code: 'FST_WS_INVALID_RESULT', message: /^onInvalid returned an invalid result: a frame must be built/ } })
  const throws = await wsClient(app, '/throws')
  throws.send('{')
  t.match(await throws.terminated(), { type: 'crash', error: { message: 'protocol bug' } })
})

t.test('the harness takes a JSON route\'s message type: handleJson and json frames compile without a cast', async (t) => {
  const h = handlerHarness(shout)
  t.same((await h.handleJson({ type: 'say', text: 'typed' })).replies, [json({ loud: 'TYPED' })])
  t.same((await h.handle({ type: 'json', data: { type: 'say', text: 'frame' } })).replies, [json({ loud: 'FRAME' })])
})
