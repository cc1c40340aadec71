/**
 * Draining an instance for a rolling deploy: new upgrades get 503 at once, and connections are
 * closed with 1012 (Service Restart) in batches spread over a window, in a random order, so
 * that their clients reconnect elsewhere without a stampede. app.close() drains too, within
 * closeTimeout.
 */
import { once } from 'node:events'
import net from 'node:net'
import { PassThrough } from 'node:stream'
import { install } from '@sinonjs/fake-timers'
import t from 'tap'
import { wsClient } from '../lib/testing.js'
import { buildApp, connect, deferred, inject, listen, terminateRecorder } from './helpers.js'

/** Wait for what sockets and callbacks do (not timers: they are fake here). */
async function until (predicate: () => boolean, label: string): Promise<void> {
  for (let turn = 0; turn < 10_000; turn++) {
    if (predicate()) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error(`never came: ${label}`)
}

t.test('drain(): 503 for new upgrades, then batches of 1012 spread over the window, every terminate told why', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/s', { terminate: recorder.terminate })
  const clients = await Promise.all(Array.from({ length: 10 }, async () => await inject(app, '/s')))
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => clock.uninstall())
  const closedCount = (): number => recorder.calls.length
  let drained = false
  const drain = app.wsConnections.drain({ batchSize: 3, batchIntervalMs: 1000 }).then(() => { drained = true })
  t.equal(app.wsConnections.draining, true)

  // The first batch at once, each later one somewhere in its own second.
  await until(() => closedCount() === 3, 'the first batch')
  const refused = await wsClient(app, '/s').catch((error: unknown) => error)
  t.match(refused, { statusCode: 503, headers: { 'retry-after': '5' } }, 'new upgrades are refused while draining')
  const counts: number[] = []
  // Batch k closes at a random moment in [k, k + 1) seconds: after k + 1 seconds it has.
  for (let second = 1; second <= 4; second++) {
    await clock.tickAsync(1000)
    await until(() => closedCount() >= Math.min(3 * second, 10), `batch ${second - 1}`)
    counts.push(closedCount())
  }
  t.same(counts, [3, 6, 9, 10], 'one batch per interval')
  await drain
  t.ok(drained)
  for (const { seen } of clients) t.same(await seen.closed, { code: 1012, reason: '' })
  t.ok(recorder.calls.every(({ reason }) => reason.type === 'shutdown' && reason.code === 1012))
})

t.test('the window is bounded: batches come closer together rather than take longer than maxWindowMs', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/s', { terminate: recorder.terminate })
  await Promise.all(Array.from({ length: 10 }, async () => await inject(app, '/s')))
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => clock.uninstall())
  const drain = app.wsConnections.drain({ batchSize: 2, batchIntervalMs: 60_000, maxWindowMs: 1000 })
  await clock.tickAsync(1000)
  await until(() => recorder.calls.length === 10, 'all closed within the window')
  await drain
})

t.test('code 1001 when the service is not coming back; one batch closes at once', async (t) => {
  const { app } = await buildApp(t, { drain: { code: 1001 } })
  const recorder = terminateRecorder()
  app.ws('/s', { terminate: recorder.terminate })
  const { seen } = await inject(app, '/s')
  await app.wsConnections.drain({ code: undefined, batchSize: undefined }) // given as undefined: not given, the plugin's apply
  t.same(await seen.closed, { code: 1001, reason: '' })
  t.same(recorder.calls[0]?.reason, { type: 'shutdown', code: 1001 })
})

t.test('app.close() drains with the plugin\'s drain options, within closeTimeout', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 1000, drain: { batchSize: 1, batchIntervalMs: 60_000 } })
  const recorder = terminateRecorder()
  app.ws('/s', { terminate: recorder.terminate })
  const clients = await Promise.all(Array.from({ length: 4 }, async () => await inject(app, '/s')))
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => clock.uninstall())
  const closing = app.close()
  await until(() => recorder.calls.length === 1, 'the first batch')
  // closeTimeout 1000: the drain's window is at most half of it.
  await clock.tickAsync(500)
  await until(() => recorder.calls.length === 4, 'the rest within the window')
  await closing
  for (const { seen } of clients) t.equal((await seen.closed).code, 1012)
})

t.test('drain options are checked', async (t) => {
  for (const drain of [{ batchSize: 0 }, { code: 1000 }, { batchIntervalMs: -1 }, { extra: 1 }, 'fast']) {
    await t.rejects(buildApp(t, { drain } as never), { code: 'FST_WS_INVALID_OPTION' }, JSON.stringify(drain))
  }
  const { app } = await buildApp(t)
  await t.rejects(app.wsConnections.drain({ batchSize: 0 }), { code: 'FST_WS_INVALID_OPTION' })
})

t.test('during app.close(), a new upgrade gets the drain\'s 503: Retry-After and FST_WS_SHUTTING_DOWN, not Fastify\'s generic one', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 60_000 })
  const finish = deferred<void>()
  app.ws('/slow', { terminate: async () => { await finish.promise } }) // holds app.close() in its drain
  const base = await listen(app)
  await connect(`${base}/slow`)
  const closing = app.close()
  await until(() => app.wsConnections.draining, 'app.close() began')
  const { port } = new URL(base)
  const socket = net.connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  socket.write('GET /slow HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString() })
  await once(socket, 'close')
  const [head = '', body = ''] = answer.split('\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 503 /)
  t.match(head, /\r\nretry-after: 5\r\n/i)
  t.match(JSON.parse(body), { statusCode: 503, code: 'FST_WS_SHUTTING_DOWN', error: 'Service Unavailable' })
  // A socket that is a plain Duplex (injectWS's in-memory one: no destroySoon()) is answered the same, and nothing throws.
  const memory = new PassThrough()
  let written = ''
  memory.on('data', (chunk: Buffer) => { written += chunk.toString() })
  app.server.emit('upgrade', { headers: {} }, memory, Buffer.alloc(0))
  await once(memory, 'close')
  t.match(written, /^HTTP\/1\.1 503 [^]*retry-after: 5/)
  finish.resolve()
  await closing
})
