/**
 * Inbound rate limits (the `rateLimit` option), with fake timers and a fake clock (time is the
 * subject): a flooding client is held to its rate by TCP (`'pause'`, the default) or closed with
 * 1008 (`'close'`); every frame counts, a JSON route's refused messages too; plugin, route and
 * `init` set it, and `false` turns a default off.
 */
import { install } from '@sinonjs/fake-timers'
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { text } from '../lib/index.js'
import { wsClient } from '../lib/testing.js'
import { RawClient, buildApp, listen, sleep, terminateRecorder, until } from './helpers.js'

/** Fake timers and performance.now() (the bucket's clock); sockets and promises run for real. */
function fakeClock (t: { teardown(fn: () => unknown): void }): ReturnType<typeof install> {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  t.teardown(() => clock.uninstall())
  return clock
}

t.test('pause: a flooding client is held to its rate, one second of burst at most, and gets everything through in the end', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 })
  let handled = 0
  app.ws('/flood', { handle: () => { handled++ } }, { rateLimit: { messagesPerSecond: 100 } })
  const base = await listen(app)
  const clock = fakeClock(t)
  const client = await RawClient.open(base, '/flood')
  const total = 2000
  client.send(Buffer.concat(Array.from({ length: total }, () => RawClient.frame(0x2, Buffer.alloc(1024)))))
  await until(() => handled >= 100, 'the first second\'s burst')
  // One TCP read holds many frames, and what was read runs: allow one read's worth above the rate.
  const slack = 256
  let seconds = 0
  const tooFast: string[] = []
  const done = (): boolean => handled >= total // (read through a function: the handler changes it)
  while (!done()) {
    if (handled > 100 * (seconds + 1) + slack) tooFast.push(`${handled} after ${seconds} s`)
    clock.tick(1000)
    seconds++
    await sleep(5) // real time: let the socket be read again
  }
  t.same(tooFast, [], `held to 100 messages/s: ${total} in ${seconds} s of the fake clock`)
  t.ok(seconds >= (total - 100 - slack) / 100, `${seconds} s is at least what the rate allows`)
  client.socket.destroy()
})

t.test('close: over the limit the connection closes with 1008 and terminate names the limit', async (t) => {
  const { app } = await buildApp(t, { rateLimit: { messagesPerSecond: 5, onExceeded: 'close' } })
  fakeClock(t)
  let handled = 0
  const recorder = terminateRecorder()
  app.ws('/strict', { handle: () => { handled++ }, terminate: recorder.terminate })
  const base = await listen(app)
  const client = await RawClient.open(base, '/strict')
  client.send(Buffer.concat(Array.from({ length: 20 }, () => RawClient.frame(0x1, 'hi'))))
  await until(() => client.frames.some((frame) => frame.opcode === 0x8), 'the close frame') // (the raw client never answers it)
  const closeFrame = client.frames.find((frame) => frame.opcode === 0x8)!
  t.equal(closeFrame.payload.readUInt16BE(0), 1008)
  t.equal(closeFrame.payload.subarray(2).toString(), 'rate limit exceeded')
  client.socket.destroy()
  t.match((await recorder.first).reason, { type: 'error', code: 1008, error: { code: 'FST_WS_RATE_LIMITED', message: /\(5 messages\/s\)/ } })
  t.equal(handled, 5, 'the five the bucket held ran; the one over it did not')
})

t.test('bytes count too, and so do a JSON route\'s refused messages', async (t) => {
  const { app } = await buildApp(t)
  fakeClock(t)
  app.ws('/bytes', {}, { rateLimit: { bytesPerSecond: 1000, onExceeded: 'close' } })
  app.ws('/json', {}, { json: { onInvalid: 'error-frame' }, rateLimit: { messagesPerSecond: 3, bytesPerSecond: 10_000, onExceeded: 'close' } })
  const bytes = await wsClient(app, '/bytes')
  bytes.send(Buffer.alloc(600))
  bytes.send(Buffer.alloc(600))
  t.match(await bytes.closed(), { code: 1008 })
  t.match(await bytes.terminated(), { error: { message: /1000 bytes\/s/ } })
  const json = await wsClient(app, '/json')
  for (let i = 0; i < 4; i++) json.send('not json')
  t.match(await json.closed(), { code: 1008, reason: 'rate limit exceeded' })
  t.match(await json.terminated(), { error: { message: /3 messages\/s, 10000 bytes\/s/ } })
})

t.test('init sets a connection\'s limit; a route\'s false turns the plugin\'s off; bad limits are refused', async (t) => {
  const { app } = await buildApp(t, { rateLimit: { messagesPerSecond: 1, onExceeded: 'close' } })
  fakeClock(t)
  app.ws('/free', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }, { rateLimit: false })
  app.ws('/vip', {
    init: (request) => ({ options: { rateLimit: (request.query as { vip?: string }).vip === undefined ? { messagesPerSecond: 1, onExceeded: 'close' } : false } }),
    handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined
  })
  for (const path of ['/free', '/vip?vip=1']) {
    const client = await wsClient(app, path)
    for (let i = 0; i < 5; i++) client.send(String(i))
    for (let i = 0; i < 5; i++) t.equal(await client.nextText(), String(i), `${path}: ${i}`)
    client.close()
  }
  const limited = await wsClient(app, '/vip')
  limited.send('a')
  limited.send('b')
  t.equal(await limited.nextText(), 'a')
  t.match(await limited.closed(), { code: 1008 })

  for (const rateLimit of [{}, { messagesPerSecond: 0 }, { bytesPerSecond: Infinity }, { messagesPerSecond: 1, onExceeded: 'drop' }, { perSecond: 1 }, 5]) {
    t.throws(() => app.ws(`/bad-${JSON.stringify(rateLimit)}`, {}, { rateLimit: rateLimit as never }), { code: 'FST_WS_INVALID_OPTION', message: /rateLimit/ })
  }
  await t.rejects(async () => { await Fastify().register(wsHandlers, { rateLimit: { messagesPerSecond: -1 } }) }, { code: 'FST_WS_INVALID_OPTION' })
})

t.test('the bucket holds one second of the rate at most: a client quiet for a minute may then send one second of it at once, not a minute', async (t) => {
  const { InboundRate } = await import('../lib/actor/rate-limit.js')
  const clock = fakeClock(t)
  const messages = new InboundRate({ messagesPerSecond: 10 })
  const bytes = new InboundRate({ bytesPerSecond: 1000 })
  clock.tick(60_000)
  const burst = Array.from({ length: 10 }, () => messages.take(1))
  t.same(burst, Array(10).fill(0), 'ten at once: one second of the rate')
  t.equal(messages.take(1), 100, 'the eleventh waits a tenth of a second')
  t.equal(bytes.take(1000), 0, 'a second of bytes at once')
  t.equal(bytes.take(500), 500, 'then half a second more waits half a second')
  clock.tick(60_000)
  t.equal(bytes.take(1000), 0)
  t.equal(bytes.take(1), 1, 'the same after another quiet minute')
})
