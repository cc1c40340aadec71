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
  const bearer = await connect(`${base}/private`, undefined, { headers: { authorization: 'Bearer secret' } })
  t.match(await bearer.seen.frameCount(1), [/^text:welcome, token:sec…/])
  bearer.ws.close()
  const missing = await app.inject({ method: 'POST', url: '/connections/nope', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal(missing.statusCode, 404)
  for (const client of [echo.ws, hello.ws, priv.ws]) client.close()
})
