/**
 * The example app does what the README says it does.
 */
import t from 'tap'
import { buildExampleApp } from '../example-app/app.js'
import { connect, inject, listen, until, upgradeHeaders } from './helpers.js'

t.test('the example app: health, echo, hello, counter, private, posting from HTTP', async (t) => {
  const { app } = await buildExampleApp()
  t.teardown(() => app.close())
  t.same((await app.inject('/health')).json(), { ok: true, connections: 0 })

  const echo = await inject(app, '/echo')
  echo.ws.send('ping?')
  echo.ws.send(Buffer.from('binary is ignored'))
  echo.ws.send('pong!')
  t.same(await echo.seen.frameCount(2), ['text:ping?', 'text:pong!'])

  const hello = await inject(app, '/hello')
  t.same(await hello.seen.frameCount(2), ['text:Hello!', 'text:Hello!'], 'greeted, then greeted again by the timer')

  for (const url of ['/counter', '/counter?name=']) {
    t.equal((await app.inject({ url, headers: upgradeHeaders })).statusCode, 400, `${url} is refused`)
  }
  const counter = await inject(app, '/counter?name=ada')
  for (const message of ['+', '?', Buffer.from('binary is ignored'), '+', 'bye']) counter.ws.send(message)
  t.same(await counter.seen.frameCount(5), [
    'text:hi ada, send "+" to count, "bye" to leave', 'text:1', 'text:only "+" and "bye" are understood', 'text:2', 'text:final count 2'
  ])
  t.same(await counter.seen.closed, { code: 1000, reason: 'bye' })

  await t.rejects(inject(app, '/private'), /401/)
  const base = await listen(app)
  const priv = await connect(`${base}/private?token=secret`)
  const [welcome] = await priv.seen.frameCount(1)
  const id = /your id is (\S+)$/.exec(welcome!)![1]!
  t.match(welcome, /^text:welcome, token:sec…; your id is /)
  const posted = await app.inject({ method: 'POST', url: `/connections/${id}`, payload: 'hi', headers: { 'content-type': 'text/plain' } })
  t.equal(posted.statusCode, 202)
  t.same(await priv.seen.frameCount(2), [welcome, 'text:posted: hi'])
  const scrape = (await app.inject('/metrics')).body
  t.match(scrape, /^websocket_server_connections\{websocket_route="\/private",[^}]*\} 1$/m, 'GET /metrics: the open connection, for Prometheus')
  t.match(scrape, /^websocket_server_closes_total\{websocket_route="\/counter",websocket_close_code="1000",websocket_terminate_reason="stop",[^}]*\} 1$/m)
  const bearer = await connect(`${base}/private`, undefined, { headers: { authorization: 'Bearer secret' } })
  t.match(await bearer.seen.frameCount(1), [/^text:welcome, token:sec…/])
  bearer.ws.close()
  const missing = await app.inject({ method: 'POST', url: '/connections/nope', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal(missing.statusCode, 404)
  for (const client of [echo.ws, hello.ws, priv.ws]) client.close()
})

t.test('the chat: the page, rooms as topics, presence, JSON messages and their refusals', async (t) => {
  const { app } = await buildExampleApp({}, { feedIntervalMs: 0 })
  t.teardown(() => app.close())
  const page = await app.inject('/chat')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /text\/html/)
  t.match(page.body, /function resumingSocket/)
  t.equal((await app.inject({ url: '/chat?name=&room=x', headers: upgradeHeaders })).statusCode, 400, 'a name is required')

  // Frames as JSON; presence and the log arrive in their own order, so each kind is read apart.
  const json = (frames: string[]): Array<Record<string, unknown>> => frames.map((frame) => JSON.parse(frame.slice('text:'.length)))
  const ofType = (frames: string[], ...types: string[]): Array<Record<string, unknown>> => json(frames).filter((m) => types.includes(m.type as string))
  const ada = await inject(app, '/chat?name=Ada&room=lobby')
  await ada.seen.frameCount(2)
  t.match(ofType(ada.seen.frames, 'welcome'), [{ type: 'welcome', name: 'Ada', room: 'lobby', members: ['Ada'] }])
  t.match(ofType(ada.seen.frames, 'caught-up'), [{ type: 'caught-up', recovered: 0, pos: /^[0-9a-f]+:0$/ }])
  const grace = await inject(app, '/chat?name=Grace&room=lobby')
  const elsewhere = await inject(app, '/chat?name=Linus&room=kernel')
  await grace.seen.frameCount(3)
  t.match(ofType(grace.seen.frames, 'welcome', 'members'), [{ type: 'welcome', members: ['Grace'] }, { type: 'members', members: ['Ada', 'Grace'] }])
  await ada.seen.frameCount(3)
  t.match(ofType(ada.seen.frames, 'joined'), [{ type: 'joined', name: 'Grace', members: ['Ada', 'Grace'] }])

  ada.ws.send(JSON.stringify({ type: 'say', text: ' hello ' }))
  await grace.seen.frameCount(4)
  t.match(ofType(grace.seen.frames, 'said'), [{ type: 'said', from: 'Ada', text: 'hello', pos: /^[0-9a-f]+:1$/ }])
  await ada.seen.frameCount(4)
  t.match(ofType(ada.seen.frames, 'said'), [{ type: 'said', from: 'Ada', text: 'hello' }], 'the sender sees it too')
  ada.ws.send('not json')
  ada.ws.send(JSON.stringify({ type: 'shout' }))
  await ada.seen.frameCount(6)
  t.match(ofType(ada.seen.frames, 'error'), [{ type: 'error', message: 'not JSON' }, { type: 'error', message: /expected/ }])
  ada.ws.ping()

  // Grace goes; Ada says more; Grace comes back from her last position and gets it, once.
  const pos = ofType(grace.seen.frames, 'said')[0]!.pos as string
  grace.ws.close()
  await ada.seen.frameCount(7)
  t.match(ofType(ada.seen.frames, 'left'), [{ type: 'left', name: 'Grace', members: ['Ada'] }])
  ada.ws.send(JSON.stringify({ type: 'say', text: 'while you were away' }))
  await ada.seen.frameCount(8)
  const back = await inject(app, `/chat?name=Grace&room=lobby&since=${pos}`)
  await back.seen.frameCount(3)
  t.match(ofType(back.seen.frames, 'said', 'caught-up'), [
    { type: 'said', from: 'Ada', text: 'while you were away', pos: /:2$/ },
    { type: 'caught-up', recovered: 1, pos: /:2$/ }
  ])
  t.same(json(elsewhere.seen.frames).map((m) => m.type).filter((type) => type !== 'caught-up'), ['welcome'], 'another room heard nothing')
  const stale = await inject(app, '/chat?name=Linus&room=lobby&since=0bad:1')
  await until(() => ofType(stale.seen.frames, 'missed').length === 1, 'the page is told it missed some')
  t.match(ofType(stale.seen.frames, 'missed'), [{ reason: 'epoch' }])
  stale.ws.close()
  const garbled = await inject(app, '/chat?name=Linus&room=lobby&since=not-a-position') // from now on
  await until(() => ofType(garbled.seen.frames, 'caught-up').length === 1, 'caught up from now')
  t.match(ofType(garbled.seen.frames, 'caught-up'), [{ recovered: 0 }])
  garbled.ws.close()
  back.ws.close()
  ada.ws.send(Buffer.from('binary'))
  t.same(await ada.seen.closed, { code: 1003, reason: 'chat messages are JSON text' })
  elsewhere.ws.close()
})

t.test('the live feed: the page, ticks at consecutive offsets, and a page that comes back counts on', async (t) => {
  const { app } = await buildExampleApp({}, { feedIntervalMs: 2 })
  t.teardown(() => app.close())
  const page = await app.inject('/feed')
  t.equal(page.statusCode, 200)
  t.match(page.body, /function resumingSocket/)
  const json = (frames: string[]): Array<Record<string, unknown>> => frames.map((frame) => JSON.parse(frame.slice('text:'.length)))
  const first = await inject(app, '/feed')
  await first.seen.frameCount(6)
  const [caughtUp, ...ticks] = json(first.seen.frames)
  t.match(caughtUp, { type: 'caught-up', recovered: 0 })
  const offsets = ticks.map((tick) => tick.offset as number)
  t.same(offsets, offsets.map((_, i) => offsets[0]! + i), 'consecutive offsets')
  t.match(ticks[0], { type: 'tick', from: app.wsConnections.instanceId, at: Number })
  const pos = ticks.at(-1)!.pos as string
  first.ws.terminate()
  await until(() => app.wsConnections.subscriberCount('feed') === 0, 'gone')
  const back = await inject(app, `/feed?since=${pos}`)
  await back.seen.frameCount(3)
  const again = json(back.seen.frames).filter((m) => m.type === 'tick').map((m) => m.offset as number)
  t.equal(again[0], offsets.at(-1)! + 1, 'from where it was, nothing skipped')
  t.match(json(back.seen.frames).find((m) => m.type === 'caught-up'), { recovered: Number })
  // A position of another epoch (the history was lost): the page is told.
  const lost = await inject(app, '/feed?since=0bad:3')
  await lost.seen.frameCount(1)
  t.match(json(lost.seen.frames)[0], { type: 'missed', reason: 'epoch', pos: /^[0-9a-f]+:\d+$/ })
})
