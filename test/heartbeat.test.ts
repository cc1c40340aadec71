/**
 * Idle timeout and server pings, with fake timers (time is the subject): only received data
 * counts as life; after `pingInterval` of silence the server pings, the pong is received data,
 * and a peer that stops answering meets the idle timeout.
 */
import { once } from 'node:events'
import type net from 'node:net'
import { install } from '@sinonjs/fake-timers'
import t from 'tap'
import WebSocket from 'ws'
import { text, type InFrame } from '../lib/index.js'
import { RawClient, buildApp, connect, listen, terminateRecorder, until } from './helpers.js'

/**
 * Fake setTimeout/clearTimeout and performance.now() (the heartbeat's clock) from now on
 * (install it before connecting: a connection's heartbeat starts at the upgrade); sockets,
 * promises and the helpers' waits keep running for real.
 */
function fakeClock (t: { teardown(fn: () => unknown): void }): ReturnType<typeof install> {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  t.teardown(() => clock.uninstall())
  return clock
}

t.test('a listening peer answers the server\'s pings and stays open; a silent one is closed by the idle timeout', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 }) // defaults: pingInterval 30 s, idleTimeout 60 s (a short close timeout: some peers here never answer)
  const recorder = terminateRecorder()
  const frames: InFrame[] = []
  app.ws('/listen', { handle: (frame) => { frames.push(frame) }, terminate: recorder.terminate })
  const base = await listen(app)
  const clock = fakeClock(t)
  const listening = await connect(`${base}/listen`)
  const deaf = new WebSocket(`${base}/listen`, { autoPong: false }) // a dead peer: never answers
  await once(deaf, 'open')
  await until(() => app.wsConnections.size === 2, 'both connections open')
  const pings = { listening: 0, deaf: 0 }
  listening.ws.on('ping', () => pings.listening++)
  deaf.on('ping', () => pings.deaf++)

  for (let i = 1; i <= 6; i++) { // three minutes
    clock.tick(30_000)
    await until(() => pings.listening === i, `ping ${i}`)
    await until(() => frames.filter((f) => f.type === 'pong').length === i, `pong ${i} reaches handle`)
    if (i === 2) {
      const { reason } = await recorder.first
      t.same(reason, { type: 'timeout' }, 'the deaf peer is closed 60 s after its last data')
      t.equal(pings.deaf, 1, 'pinged once, at 30 s')
    }
  }
  t.equal(recorder.calls.length, 1, 'the listening peer is still open three idle timeouts later')
  listening.ws.close()
})

t.test('pings stop while data flows, and pingInterval 0 or >= idleTimeout sends none', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  app.ws('/talk', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }, { pingInterval: 1000, idleTimeout: 5000 })
  app.ws('/off', {}, { pingInterval: 0, idleTimeout: 5000 })
  app.ws('/long', {}, { pingInterval: 5000, idleTimeout: 5000 })
  const base = await listen(app)
  const clock = fakeClock(t)
  const talk = await connect(`${base}/talk`)
  const off = await connect(`${base}/off`)
  const long = await connect(`${base}/long`)
  const pings = { talk: 0, off: 0, long: 0 }
  talk.ws.on('ping', () => pings.talk++)
  off.ws.on('ping', () => pings.off++)
  long.ws.on('ping', () => pings.long++)
  for (let i = 1; i <= 5; i++) {
    clock.tick(900)
    talk.ws.send(String(i))
    await talk.seen.frameCount(i) // the server received it: silence starts again
  }
  t.equal(pings.talk, 0, 'no ping while the peer talks')
  clock.tick(1000)
  await until(() => pings.talk === 1, 'a ping after a second of silence')
  clock.tick(4000)
  t.same(await off.seen.closed, { code: 1000, reason: '' })
  t.same(await long.seen.closed, { code: 1000, reason: '' })
  t.same({ off: pings.off, long: pings.long }, { off: 0, long: 0 }, 'closed by the idle timeout without a ping')
  talk.ws.close()
})

t.test('an idle timeout that is not a multiple of pingInterval stays exact', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  app.ws('/odd', { terminate: recorder.terminate }, { pingInterval: 40, idleTimeout: 100 })
  app.ws('/forever', {}, { pingInterval: 40, idleTimeout: 0 })
  const base = await listen(app)
  const clock = fakeClock(t)
  const deaf = new WebSocket(`${base}/odd`, { autoPong: false })
  const forever = new WebSocket(`${base}/forever`, { autoPong: false })
  await Promise.all([once(deaf, 'open'), once(forever, 'open')])
  let pings = 0
  let foreverPings = 0
  deaf.on('ping', () => pings++)
  forever.on('ping', () => foreverPings++)
  clock.tick(80)
  await until(() => pings === 2, 'pings at 40 and 80 ms')
  clock.tick(19)
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(recorder.calls.length, 0, 'open at 99 ms')
  clock.tick(1)
  t.same((await recorder.first).reason, { type: 'timeout' }, 'closed at 100 ms')
  t.equal(pings, 2)
  deaf.terminate()
  clock.tick(400)
  await until(() => foreverPings === 12, 'with idleTimeout 0, a ping every 40 ms and no close')
  forever.terminate()
})

t.test('received pings reset the idle timer; sending and infos do not', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  app.ws('/idle', {
    // The server talks every 20 ms: that does not keep the connection open.
    websocketInit: (_state, ctx) => { ctx.sendAfter(20, 'tick') },
    info: (_message, _state, ctx) => {
      ctx.sendAfter(20, 'tick')
      return { reply: text('tick') }
    },
    terminate: recorder.terminate
  }, { idleTimeout: 150, pingInterval: 0 })
  const base = await listen(app)
  const clock = fakeClock(t)
  const { ws, seen } = await connect(`${base}/idle`, undefined, { autoPong: false })
  let pongs = 0
  ws.on('pong', () => pongs++)
  for (let i = 1; i <= 6; i++) {
    clock.tick(100) // 600 ms in all: four idle timeouts, had the pings not counted
    ws.ping()
    await until(() => pongs === i, `pong ${i}`)
  }
  t.equal(recorder.calls.length, 0, 'open, thanks to the pings')
  t.ok(seen.frames.length >= 6, `the server kept talking (${seen.frames.length} frames)`)
  clock.tick(150)
  t.same(await seen.closed, { code: 1000, reason: '' })
  t.same((await recorder.first).reason, { type: 'timeout' })
})

t.test('a partial frame is received data too: a slow large frame is not cut off', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const got: number[] = []
  app.ws('/slow-upload', { handle: (frame) => { got.push(frame.data.length) } }, { idleTimeout: 150, pingInterval: 0 })
  const base = await listen(app)
  let serverSocket!: net.Socket
  app.server.once('connection', (socket: net.Socket) => { serverSocket = socket })
  const clock = fakeClock(t)
  const client = await RawClient.open(base, '/slow-upload')
  const frame = RawClient.frame(0x2, Buffer.alloc(2000))
  let expected = serverSocket.bytesRead // the handshake
  for (let offset = 0; offset < frame.length; offset += 500) {
    const chunk = frame.subarray(offset, offset + 500)
    client.send(chunk)
    expected += chunk.length
    await until(() => serverSocket.bytesRead === expected, 'the server to read the chunk')
    clock.tick(100) // 100 ms between chunks, 150 ms idle timeout: only chunks keep it open
  }
  await until(() => got.length === 1, 'the whole frame')
  t.same(got, [2000])
  client.socket.destroy()
})

t.test('idleTimeout can be changed live, and 0 turns it off; a connection opened without any timer gets one', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  const setsIdleTimeout = {
    handle: (frame: InFrame) => frame.type === 'text' ? { options: { idleTimeout: Number(frame.data) }, reply: text(frame.data) } : undefined,
    terminate: recorder.terminate
  }
  app.ws('/live', setsIdleTimeout, { idleTimeout: 100, pingInterval: 0 })
  app.ws('/late', setsIdleTimeout, { idleTimeout: 0, pingInterval: 0 })
  const base = await listen(app)
  const clock = fakeClock(t)
  const live = await connect(`${base}/live`)
  const late = await connect(`${base}/late`)
  live.ws.send('0')
  await live.seen.frameCount(1)
  clock.tick(3_600_000)
  t.equal(recorder.calls.length, 0, 'no idle timeout while it is 0, nor without a timer')
  live.ws.send('50')
  late.ws.send('50')
  await Promise.all([live.seen.frameCount(2), late.seen.frameCount(1)])
  clock.tick(50)
  t.same(await live.seen.closed, { code: 1000, reason: '' })
  t.same(await late.seen.closed, { code: 1000, reason: '' })
  await until(() => recorder.calls.length === 2, 'both terminated')
  t.same(recorder.calls.map((call) => call.reason), [{ type: 'timeout' }, { type: 'timeout' }])
})

t.test('every connection\'s heartbeat runs on a few shared timers, in order, and none is left when they are gone', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 200 })
  const recorder = terminateRecorder()
  app.ws('/a', { terminate: recorder.terminate }, { pingInterval: 40, idleTimeout: 100 }) // steps of 40 and of 20 ms
  app.ws('/b', { terminate: recorder.terminate }, { pingInterval: 0, idleTimeout: 100 }) // one step of 100 ms
  const base = await listen(app)
  const clock = fakeClock(t)
  const peers: WebSocket[] = []
  const pings = new Map<WebSocket, number>()
  for (let i = 0; i < 30; i++) {
    const peer = new WebSocket(`${base}/${i % 2 === 0 ? 'a' : 'b'}`, { autoPong: false })
    await once(peer, 'open')
    pings.set(peer, 0)
    peer.on('ping', () => pings.set(peer, pings.get(peer)! + 1))
    peers.push(peer)
    clock.tick(1) // each opens a millisecond after the one before
  }
  await until(() => app.wsConnections.size === 30, 'all open')
  t.ok(clock.countTimers() <= 2, `${clock.countTimers()} timers for 30 connections (two step lengths)`)
  clock.tick(69) // the first opened 99 ms ago, the last 70
  // /a peers opened at 0, 2, … 28 ms: all pinged at their 40 ms, those opened by 18 ms at their 80 ms too.
  await until(() => [...pings.values()].reduce((a, b) => a + b) === 15 + 10, 'the pings due by now')
  t.equal(recorder.calls.length, 0, 'nobody closed before its 100 ms')
  for (let closed = 1; closed <= 30; closed++) {
    clock.tick(1)
    await until(() => recorder.calls.length === closed, `connection ${closed} closed at its own 100 ms`)
  }
  t.same(peers.map((peer) => pings.get(peer)), peers.map((_, i) => i % 2 === 0 ? 2 : 0), '/a pinged at 40 and 80 ms, /b never')
  t.equal(clock.countTimers(), 0, 'no heartbeat timer left running')
  for (const peer of peers) peer.terminate()
})
