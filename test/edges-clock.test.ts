/**
 * The connection's edges where time is the subject (issue 24, fake timers): a callback that
 * settles after the peer left keeps only its state (no heartbeat re-armed); a rate-limited
 * client is not idle-closed for the silence the plugin imposed; two drains wait together.
 */
import { install } from '@sinonjs/fake-timers'
import t from 'tap'
import WebSocket from 'ws'
import type { Commands } from '../lib/index.js'
import { buildApp, connect, deferred, listen, pingsToClosedSockets, terminateRecorder, until } from './helpers.js'

t.test('an async callback that resolves with options after the peer left does not re-arm its heartbeat', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  const late = deferred<Commands<undefined>>()
  app.ws('/late', { handle: async () => await late.promise, terminate: recorder.terminate }, { pingInterval: 1000, idleTimeout: 0 })
  const base = await listen(app)
  let serverSawClose = false
  app.websocketServer.on('connection', (socket: WebSocket) => { socket.on('close', () => { serverSawClose = true }) })
  const pings = pingsToClosedSockets(t)
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  t.teardown(() => { if (clock.now !== undefined) clock.uninstall() })
  const { ws } = await connect(`${base}/late`)
  ws.send('x')
  await until(() => app.wsConnections.size === 1, 'open')
  ws.terminate() // the peer leaves while handle is pending
  await until(() => serverSawClose, 'the server saw it go')
  late.resolve({ options: { pingInterval: 50 } })
  await recorder.first
  for (let i = 0; i < 20; i++) clock.tick(1000)
  t.equal(pings.count, 0, 'no ping to the closed socket')
  t.equal(clock.countTimers(), 0, 'no heartbeat timer left for nobody')
  clock.uninstall()
})

t.test('a client paused by the rate limit is not idle-closed for the silence the plugin imposed', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  const handled: string[] = []
  app.ws('/limited', {
    handle: (frame) => { if (frame.type === 'text') handled.push(frame.data) },
    terminate: recorder.terminate
  }, { rateLimit: { messagesPerSecond: 1, onExceeded: 'pause' }, idleTimeout: 3000, pingInterval: 0 })
  const base = await listen(app)
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  t.teardown(() => { if (clock.now !== undefined) clock.uninstall() })
  const { ws } = await connect(`${base}/limited`)
  // Eleven frames at once: ten over the limit, so reading pauses for ten seconds.
  for (let i = 0; i < 11; i++) ws.send(`m${i}`)
  await until(() => handled.length === 11, 'the frames read ran')
  for (let s = 1; s <= 10; s++) clock.tick(1000) // the pause: three idle timeouts long
  t.equal(recorder.calls.length, 0, 'never idle-closed while held back')
  clock.tick(2000)
  ws.send('after the pause')
  await until(() => handled.length === 12, 'read again')
  clock.tick(2500)
  t.equal(recorder.calls.length, 0, 'its silence counts from when reading resumed')
  clock.tick(3000)
  await recorder.first
  t.same(recorder.calls[0]!.reason, { type: 'timeout' }, 'then a silent client meets the idle timeout as any other')
  clock.uninstall()
})

t.test('a second drain() waits with the first: both resolve when the last connection is gone', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 60_000 })
  const recorder = terminateRecorder()
  app.ws('/two', { terminate: recorder.terminate })
  const base = await listen(app)
  await connect(`${base}/two`)
  await connect(`${base}/two`)
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => { if (clock.now !== undefined) clock.uninstall() })
  const first = app.wsConnections.drain()
  const second = app.wsConnections.drain()
  let firstDone = false
  first.then(() => { firstDone = true }, () => {})
  await second
  await until(() => firstDone, 'the first drain resolved with the second, not after its own timeout')
  t.equal(recorder.calls.length, 2)
  clock.uninstall()
})
