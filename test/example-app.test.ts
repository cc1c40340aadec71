/**
 * The example app does what the README says it does.
 */
import t from 'tap'
import { buildExampleApp } from '../example-app/app.js'
import { connect, inject, listen, upgradeHeaders } from './helpers.js'

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
  const { app } = await buildExampleApp()
  t.teardown(() => app.close())
  const page = await app.inject('/chat')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /text\/html/)
  t.match(page.body, /new WebSocket\(url\)/)
  t.equal((await app.inject({ url: '/chat?name=&room=x', headers: upgradeHeaders })).statusCode, 400, 'a name is required')

  const json = (frames: string[]): Array<Record<string, unknown>> => frames.map((frame) => JSON.parse(frame.slice('text:'.length)))
  const ada = await inject(app, '/chat?name=Ada&room=lobby')
  t.match(json(await ada.seen.frameCount(1)), [{ type: 'welcome', name: 'Ada', room: 'lobby', members: ['Ada'] }])
  const grace = await inject(app, '/chat?name=Grace&room=lobby')
  const elsewhere = await inject(app, '/chat?name=Linus&room=kernel')
  t.match(json(await grace.seen.frameCount(2)), [{ type: 'welcome', members: ['Grace'] }, { type: 'members', members: ['Ada', 'Grace'] }])
  t.match(json(await ada.seen.frameCount(2))[1], { type: 'joined', name: 'Grace', members: ['Ada', 'Grace'] })

  ada.ws.send(JSON.stringify({ type: 'say', text: ' hello ' }))
  t.match(json(await grace.seen.frameCount(3))[2], { type: 'said', from: 'Ada', text: 'hello' })
  t.match(json(await ada.seen.frameCount(3))[2], { type: 'said', from: 'Ada', text: 'hello' }, 'the sender sees it too')
  ada.ws.send('not json')
  ada.ws.send(JSON.stringify({ type: 'shout' }))
  t.match(json(await ada.seen.frameCount(5)).slice(3), [{ type: 'error', message: 'not JSON' }, { type: 'error', message: /expected/ }])
  ada.ws.ping()

  grace.ws.close()
  t.match(json(await ada.seen.frameCount(6))[5], { type: 'left', name: 'Grace', members: ['Ada'] })
  t.same(json(await elsewhere.seen.frameCount(1)).length, 1, 'another room heard nothing')
  ada.ws.send(Buffer.from('binary'))
  t.same(await ada.seen.closed, { code: 1003, reason: 'chat messages are JSON text' })
  elsewhere.ws.close()
})
