/**
 * The connection's edges (issue 24): a late callback after a server-decided close runs no held
 * frame; no delay past a Node timer's limit is clamped to 1 ms; an injected upgrade pending at
 * app.close() ends cleanly. Where time is the subject: edges-clock.test.ts.
 */
import t from 'tap'
import WebSocket from 'ws'
import type { Commands, InFrame } from '../lib/index.js'
import { RawClient, buildApp, connect, deferred, listen, pingsToClosedSockets, terminateRecorder, until, upgradeHeaders } from './helpers.js'

t.test('frames held by active: false are dropped when the server closes, even if a late callback says active: true', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  const handled: string[] = []
  const resume = deferred<Commands<undefined>>()
  let infoStarted = false
  app.ws('/held', {
    handle: (frame: InFrame) => {
      if (frame.type !== 'text') return
      handled.push(frame.data)
      return frame.data === 'pause' ? { active: false } : undefined
    },
    info: async () => { infoStarted = true; return await resume.promise },
    terminate: recorder.terminate
  })
  const base = await listen(app)
  const client = await RawClient.open(base, '/held')
  // One TCP chunk: 'a' and 'b' are read before the handler paused reading, so they are held.
  client.send(Buffer.concat([RawClient.frame(1, 'pause'), RawClient.frame(1, 'a'), RawClient.frame(1, 'b')]))
  await until(() => handled.length === 1, 'the pause ran')
  const [ctx] = [...app.wsConnections]
  ctx!.post('resume later') // info pending
  await until(() => infoStarted, 'info is pending')
  const drained = app.wsConnections.drain()
  resume.resolve({ active: true }) // after the server's close: too late to run anything
  await drained
  await recorder.first
  t.same(handled, ['pause'], 'the held frames never ran')
  t.equal(await client.closeCode(), 1012)
})

t.test('delays past a Node timer\'s limit are refused, never clamped to 1 ms', async (t) => {
  const tooLong = 2 ** 31 // 24.8 days and 1 ms
  for (const options of [{ idleTimeout: tooLong }, { pingInterval: tooLong }, { closeTimeout: tooLong }, { closeTimeout: 0 }, { drain: { batchIntervalMs: tooLong } }, { drain: { maxWindowMs: tooLong } }]) {
    await t.rejects(buildApp(t, options as never), { code: 'FST_WS_INVALID_OPTION', message: /2147483647/ }, JSON.stringify(options))
  }
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/route', {}, { idleTimeout: 2 ** 31 - 1, pingInterval: 2 ** 31 - 1 }) // the longest is honoured
  t.throws(() => { app.ws('/too-long', {}, { idleTimeout: tooLong }) }, { code: 'FST_WS_INVALID_OPTION' })
  app.ws('/timer', {
    websocketInit: (_state, ctx) => { ctx.sendAfter(tooLong, 'late') },
    terminate: recorder.terminate
  })
  app.ws('/live', { websocketInit: () => ({ options: { idleTimeout: tooLong } }), terminate: recorder.terminate })
  const base = await listen(app)
  const pings = pingsToClosedSockets(t)
  const { ws } = await connect(`${base}/route`)
  const timer = await connect(`${base}/timer`)
  const live = await connect(`${base}/live`)
  t.equal((await timer.seen.closed).code, 1011, 'sendAfter past the limit: FST_WS_INVALID_TIMER in the callback')
  t.equal((await live.seen.closed).code, 1011, 'a live option past the limit: an invalid result')
  await until(() => recorder.calls.length === 2, 'both ended')
  t.match(recorder.calls.map((call) => call.reason), [{ type: 'crash', error: { code: 'FST_WS_INVALID_TIMER' } }, { type: 'error', error: { code: 'FST_WS_INVALID_RESULT' } }])
  t.equal(ws.readyState, WebSocket.OPEN, 'the longest delay a timer takes is honoured: still open, never pinged')
  t.equal(pings.all, 0)
  ws.close()
})

t.test('an injected upgrade whose init is pending at app.close() ends at closeTimeout, with no uncaught throw', async (t) => {
  const Fastify = (await import('fastify')).default
  const plugin = (await import('../lib/index.js')).default
  const app = Fastify()
  await app.register(plugin, { closeTimeout: 100 })
  let initStarted = false
  app.ws('/pending', { init: async () => { initStarted = true; await new Promise(() => {}) } })
  await app.ready()
  const uncaught: unknown[] = []
  const onUncaught = (error: unknown): void => { uncaught.push(error) }
  process.on('uncaughtException', onUncaught)
  t.teardown(() => process.off('uncaughtException', onUncaught))
  const injected = app.inject({ url: '/pending', headers: upgradeHeaders }).catch((error: unknown) => error)
  await until(() => initStarted, 'init is running')
  await app.close()
  await injected
  await new Promise((resolve) => setImmediate(resolve))
  t.same(uncaught, [], 'nothing thrown out of the close timer')
})
