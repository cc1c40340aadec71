/**
 * What a result may contain. Every invalid one closes the connection with 1011, and terminate's
 * error says what was returned and what was expected.
 */
import t from 'tap'
import { binary, close, ping, pong, text, type Result } from '../lib/index.js'
import { isSendableCloseCode } from '../lib/core/close-codes.js'
import { closeCodeOfWsError } from '../lib/wire/ws-internals.js'
import { show } from '../lib/core/options.js'
import { RawClient, buildApp, inject, listen, terminateRecorder } from './helpers.js'

const invalid: Array<[string, unknown, string]> = [
  ['null', null, 'got null, expected undefined or an object with some of: state, reply, stop, hibernate, active, options'],
  ['an array', [text('a')], 'got an array of 1, expected undefined'],
  ['a number', 42, 'got 42, expected undefined'],
  ['a string frame', { reply: 'hello' }, 'a frame must be built with text(), binary(), ping(), pong() or close(), got "hello"'],
  ['a bad frame in a list', { reply: [text('ok'), { type: 'txt', data: 'x' }] }, 'reply[1]: unknown frame type "txt", expected text, binary, ping, pong or close'],
  ['text with a buffer', { reply: { type: 'text', data: Buffer.from('x') } }, 'a text frame needs string data, got { 0 }'],
  ['binary with a string', { reply: { type: 'binary', data: 'x' } }, 'a binary frame needs a Buffer or Uint8Array, got "x"'],
  ['a ping payload of the wrong type', { reply: { type: 'ping', data: 5 } }, 'a ping payload must be a string, Buffer or Uint8Array, got 5'],
  ['a pong payload over 125 bytes', { reply: pong(Buffer.alloc(126)) }, 'a pong payload is at most 125 bytes, got 126'],
  ['a close code that cannot be sent', { reply: close(1005) }, 'close code 1005 cannot be sent (1000-1003, 1007-1014 or 3000-4999)'],
  ['a close reason that is not a string', { reply: { type: 'close', code: 1000, reason: 7 } }, 'a close reason must be a string, got 7'],
  ['a non-boolean stop', { stop: 'yes' }, '"stop" must be a boolean, got "yes"'],
  ['a non-boolean hibernate', { hibernate: 1 }, '"hibernate" must be a boolean, got 1'],
  ['a non-boolean active', { active: null }, '"active" must be a boolean, got null'],
  ['an unknown live option', { options: { compress: true } }, 'unknown option "compress" (known: idleTimeout, pingInterval, maxFrameSize, maxBufferedBytes, mailboxLimit)'],
  ['a bad live option', { options: { mailboxLimit: 0 } }, 'option "mailboxLimit": expected a whole number >= 1, got 0'],
  ['options that are not an object', { options: 5 }, 'options must be an object, got 5']
]

t.test('each invalid result closes with 1011 and says what was expected', async (t) => {
  const { app } = await buildApp(t)
  let recorder = terminateRecorder()
  const byName = new Map(invalid.map(([name, result]) => [name, result]))
  app.ws('/r', {
    handle: (frame) => frame.type === 'text' ? byName.get(frame.data) as Result<undefined> : undefined,
    terminate: (...args) => recorder.terminate(...args)
  })
  for (const [name, , message] of invalid) {
    recorder = terminateRecorder()
    const { ws, seen } = await inject(app, '/r')
    ws.send(name)
    t.equal((await seen.closed).code, 1011, `${name}: close 1011`)
    const { reason } = await recorder.first
    t.match(reason, { type: 'error', code: 1011, error: { code: 'FST_WS_INVALID_RESULT', message: `handle returned an invalid result: ${message}` } }, name)
  }
})

t.test('every frame builder puts its frame on the wire, in order', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 }) // the raw client never answers the close
  app.ws('/frames', {
    websocketInit: () => ({
      hibernate: true, // accepted (its memory effect is measured by the benchmark)
      reply: [text('t'), binary(Buffer.from('b')), binary(new Uint8Array([1, 2])), ping('p'), pong(), ping(), close(4000, 'end')]
    })
  })
  const base = await listen(app)
  const client = await RawClient.open(base, '/frames')
  await client.ended
  t.same(client.frames.map((f) => [f.opcode, f.payload.toString('hex')]), [
    [0x1, Buffer.from('t').toString('hex')],
    [0x2, Buffer.from('b').toString('hex')],
    [0x2, '0102'],
    [0x9, Buffer.from('p').toString('hex')],
    [0xa, ''],
    [0x9, ''],
    [0x8, Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('end')]).toString('hex')]
  ])
})

t.test('a field that is undefined counts as absent, in results and in init', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/undefined-fields', {
    init: () => ({ state: 'from init', protocol: undefined, options: undefined }),
    handle: (_frame, state) => ({ state: `${String(state)}, kept`, reply: undefined, stop: undefined, options: undefined }),
    terminate: recorder.terminate
  })
  const { ws } = await inject(app, '/undefined-fields')
  ws.send('x')
  ws.send('y')
  ws.close() // frames before the peer's close still run before terminate
  t.equal((await recorder.first).state, 'from init, kept, kept')
  t.match((await recorder.first).reason, { type: 'remote' }, 'nothing was refused')
})

t.test('close() with no code closes with 1000', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/bare', { websocketInit: () => ({ reply: close() }), terminate: recorder.terminate })
  const { seen } = await inject(app, '/bare')
  t.same(await seen.closed, { code: 1000, reason: '' })
  t.same((await recorder.first).reason, { type: 'stop', code: 1000, reason: '' })
})

t.test('a close frame and stop in one result: the close frame wins, once', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/both', { websocketInit: () => ({ reply: close(4003, 'first'), stop: true }), terminate: recorder.terminate })
  const { seen } = await inject(app, '/both')
  t.same(await seen.closed, { code: 4003, reason: 'first' })
  t.same((await recorder.first).reason, { type: 'stop', code: 4003, reason: 'first' })
  t.equal(recorder.calls.length, 1)
})

t.test('which close codes may be sent; an error without ws\'s close code counts as 1002', async (t) => {
  t.same([999, 1000, 1003, 1004, 1006, 1007, 1014, 1015, 2999, 3000, 4999, 5000, 1000.5, '1000'].map(isSendableCloseCode),
    [false, true, true, false, false, true, true, false, false, true, true, false, false, false])
  t.equal(closeCodeOfWsError(new Error('not from ws')), 1002) // ws's own errors: test/conformance.test.ts
})

t.test('error messages describe any value briefly', async (t) => {
  t.same([show(10n), show(() => 1), show('x'.repeat(50)), show({ a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7 }), show(Promise.resolve())],
    ['10n', 'a function', `"${'x'.repeat(40)}…"`, '{ a, b, c, d, e, f, … }', 'a promise'])
})
