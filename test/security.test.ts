/**
 * Secure by default: cross-site upgrades are refused unless allowed (Cross-Site WebSocket
 * Hijacking), wildcard patterns cannot be bypassed, and connection limits (route, app, client IP)
 * refuse with 503 + Retry-After before the 101, counting exactly under concurrency and churn.
 */
import diagnostics from 'node:diagnostics_channel'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import wsHandlers, { type WebSocketHandlersOptions } from '../lib/index.js'
import { buildApp, connect, inject, listen, terminateRecorder, until, upgradeHeaders } from './helpers.js'

async function originApp (t: Parameters<typeof buildApp>[0], options: WebSocketHandlersOptions = {}, fastifyOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(fastifyOptions)
  t.teardown(() => app.close())
  await app.register(wsHandlers, options)
  app.ws('/socket', {})
  await app.ready()
  return app
}

async function statusFor (app: FastifyInstance, headers: Record<string, string>): Promise<number> {
  return (await app.inject({ url: '/socket', headers: { ...upgradeHeaders, ...headers } })).statusCode
}
// inject answers an accepted upgrade with the route's HTTP handler: 426. Refusals come first.
const ACCEPTED = 426

t.test('by default only the app\'s own origin may upgrade; requests without Origin pass', async (t) => {
  const app = await originApp(t)
  const host = { host: 'app.example.com' }
  t.equal(await statusFor(app, { ...host, origin: 'http://app.example.com' }), ACCEPTED, 'own origin')
  t.equal(await statusFor(app, { ...host, origin: 'HTTP://APP.example.com:80' }), ACCEPTED, 'own origin, written otherwise')
  t.equal(await statusFor(app, host), ACCEPTED, 'no Origin: not a browser')
  t.equal(await statusFor(app, { ...host, origin: 'https://app.example.com' }), 403, 'another scheme is another origin')
  t.equal(await statusFor(app, { ...host, origin: 'http://app.example.com:8080' }), 403, 'another port is another origin')
  t.equal(await statusFor(app, { ...host, origin: 'http://evil.example' }), 403, 'another site')
  t.equal(await statusFor(app, { ...host, origin: 'null' }), 403, 'the null origin')
  t.equal(await statusFor(app, { ...host, origin: 'not an origin' }), 403)
  t.match((await app.inject({ url: '/socket', headers: { ...upgradeHeaders, host: 'bad host', origin: 'http://x.example' } })).json(),
    { statusCode: 403, message: /only its own origin, http:\/\/bad host, may/ }, 'a host that is no origin matches nothing')
  t.equal(await statusFor(app, { ...host, 'sec-websocket-origin': 'http://evil.example', 'sec-websocket-version': '8' }), 403, 'version 8 clients\' header')
  const refusal = await app.inject({ url: '/socket', headers: { ...upgradeHeaders, ...host, origin: 'http://evil.example' } })
  t.match(refusal.json(), {
    code: 'FST_WS_ORIGIN_NOT_ALLOWED',
    message: /Origin "http:\/\/evil\.example" may not open this WebSocket route \(only its own origin, http:\/\/app\.example\.com, may by default\); to allow it, add it to .*allowOrigins: \['http:\/\/evil\.example'\]/
  })
})

t.test('a cross-origin browser is refused on a real socket; its own origin is accepted', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/socket', {})
  const base = await listen(app)
  const own = base.replace('ws:', 'http:')
  await t.rejects(connect(`${base}/socket`, undefined, { origin: 'https://evil.example' }), { message: 'HTTP 403' })
  const { ws } = await connect(`${base}/socket`, undefined, { origin: own })
  ws.close()
})

t.test('behind a proxy: with trustProxy the forwarded scheme and host are the app\'s own origin', async (t) => {
  const forwarded = { host: 'internal:3000', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example.com', origin: 'https://app.example.com' }
  t.equal(await statusFor(await originApp(t, {}, { trustProxy: true }), forwarded), ACCEPTED, 'trusted proxy')
  t.equal(await statusFor(await originApp(t), forwarded), 403, 'forwarded headers are not trusted without trustProxy')
})

t.test('wildcard patterns match subdomains only, and cannot be bypassed', async (t) => {
  const app = await originApp(t, { allowOrigins: ['https://*.example.com', 'http://localhost:5173', 'https://*.other.dev:443'] })
  const cases: Array<[string, number]> = [
    ['https://a.example.com', ACCEPTED],
    ['https://a.b.example.com', ACCEPTED],
    ['https://A.Example.COM', ACCEPTED],
    ['http://localhost:5173', ACCEPTED],
    ['https://example.com', 403],
    ['https://example.com.evil.io', 403],
    ['https://evilexample.com', 403],
    ['https://a.example.com.evil.io', 403],
    ['http://a.example.com', 403],
    ['https://a.example.com:8443', 403],
    ['https://a.example.com.', 403],
    ['https://x.example.com@evil.io', 403],
    ['https://evil.io/.example.com', 403],
    ['https://evil.io?.example.com', 403],
    ['http://localhost:5174', 403],
    ['https://a.example.com#x', 403],
    ['https://a.example.com:443', ACCEPTED],
    ['null', 403],
    ['https://x.other.dev', ACCEPTED]
  ]
  for (const [origin, status] of cases) t.equal(await statusFor(app, { host: 'app.internal', origin }), status, origin)
})

t.test('the null origin, a function and "*" are explicit choices', async (t) => {
  t.equal(await statusFor(await originApp(t, { allowOrigins: ['null'] }), { origin: 'null' }), ACCEPTED, '"null" named')
  const seen: string[] = []
  const byFunction = await originApp(t, {
    allowOrigins: async (origin, request) => {
      seen.push(`${origin} ${request.headers.host!}`)
      return origin.endsWith('.trusted.dev')
    }
  })
  t.equal(await statusFor(byFunction, { host: 'h', origin: 'https://x.trusted.dev' }), ACCEPTED)
  t.equal(await statusFor(byFunction, { host: 'h', origin: 'https://x.untrusted.dev' }), 403)
  t.same(seen, ['https://x.trusted.dev h', 'https://x.untrusted.dev h'])
  const everyone = await originApp(t, { allowOrigins: '*' })
  t.equal(await statusFor(everyone, { origin: 'https://anyone.example' }), ACCEPTED, 'a public endpoint')
  t.equal(await statusFor(everyone, { origin: 'null' }), ACCEPTED)
})

t.test('patterns that cannot be matched safely are refused at declaration', async (t) => {
  const { app } = await buildApp(t)
  for (const bad of ['https://*example.com', 'https://a.*.example.com', '*.example.com', 'https://*', 'example.com', 'https://example.com/path']) {
    t.throws(() => app.ws(`/x${Math.random()}`, {}, { allowOrigins: [bad] }), { code: 'FST_WS_INVALID_OPTION', message: /allowOrigins/ }, bad)
  }
  t.throws(() => app.ws('/y', {}, { allowOrigins: 'everyone' as never }), { code: 'FST_WS_INVALID_OPTION' })
})

/** Clients opened by `upgrades`, to close later. */
const opened: Array<{ close(): void }> = []

/** Open `count` upgrades at once; the statuses, in order (101 for an open connection). */
async function upgrades (base: string, path: string, count: number, headers: Record<string, string> = {}): Promise<number[]> {
  return await Promise.all(Array.from({ length: count }, async () => {
    try {
      opened.push((await connect(`${base}${path}`, undefined, { headers })).ws)
      return 101
    } catch (error) {
      return (error as { statusCode: number }).statusCode
    }
  }))
}

t.test('maxConnections on a route: the next upgrade gets 503 with Retry-After; a freed place is taken again', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/limited', { terminate: recorder.terminate }, { maxConnections: 2 })
  app.ws('/other', {})
  const base = await listen(app)
  const first = await connect(`${base}/limited`)
  await connect(`${base}/limited`)
  const refused = await app.inject({ url: '/limited', headers: upgradeHeaders })
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['retry-after'], '5')
  t.match(refused.json(), { code: 'FST_WS_TOO_MANY_CONNECTIONS', message: /\/limited holds its maximum of 2/ })
  t.same(await upgrades(base, '/limited', 1), [503], 'on a real socket too')
  t.same(await upgrades(base, '/other', 1), [101], 'other routes are not limited')
  first.ws.close()
  await recorder.first
  await until(() => app.wsConnections.countOfRoute('/limited') === 1, 'the place to be freed')
  t.same(await upgrades(base, '/limited', 1), [101])
})

t.test('maxConnections for the app, and per client IP', async (t) => {
  const { app } = await buildApp(t, { maxConnections: 3 })
  app.ws('/a', {})
  app.ws('/b', {})
  const base = await listen(app)
  // Which of two concurrent upgrades wins is a race: compare the outcomes, not their order.
  t.same([...await upgrades(base, '/a', 2), ...(await upgrades(base, '/b', 2)).sort()], [101, 101, 101, 503])

  const app2 = Fastify({ trustProxy: true })
  t.teardown(() => app2.close())
  await app2.register(wsHandlers, { maxConnectionsPerIp: 2 })
  app2.ws('/c', {})
  const base2 = await listen(app2)
  t.same((await upgrades(base2, '/c', 3, { 'x-forwarded-for': '203.0.113.7' })).sort(), [101, 101, 503])
  t.same(await upgrades(base2, '/c', 1, { 'x-forwarded-for': '203.0.113.8' }), [101], 'another client is not limited')
  const refused = await app2.inject({ url: '/c', headers: { ...upgradeHeaders, 'x-forwarded-for': '203.0.113.7' } })
  t.match(refused.json(), { statusCode: 503, message: /this client \(203\.0\.113\.7\) holds its maximum of 2/ })
})

t.test('counting is exact when upgrades arrive at once; refused ones never reach init; churn returns to zero', async (t) => {
  const warnings: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { warnings.push(JSON.parse(String(chunk))); done() } })
  const app = Fastify({ logger: { level: 'warn', stream } })
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  let inits = 0
  let slow = true
  app.ws('/slow', {
    init: async () => {
      inits++
      if (slow) await until(() => inits === 5, 'five upgrades in init at once')
    }
  }, { maxConnections: 5 })
  const refusals: unknown[] = []
  const onRefused = (message: unknown): void => { refusals.push(message) }
  diagnostics.subscribe('fastify-ws-handlers:refused', onRefused)
  t.teardown(() => diagnostics.unsubscribe('fastify-ws-handlers:refused', onRefused))
  const base = await listen(app)
  const statuses = await upgrades(base, '/slow', 20)
  t.equal(statuses.filter((s) => s === 101).length, 5, 'exactly five')
  t.equal(statuses.filter((s) => s === 503).length, 15)
  t.equal(inits, 5, 'init ran for the admitted ones only')
  t.equal(refusals.length, 15, 'each refusal on the diagnostics channel')
  t.match(refusals[0], { request: { url: '/slow' }, error: { code: 'FST_WS_TOO_MANY_CONNECTIONS' } })
  t.equal(warnings.filter((w) => w.code === 'FST_WS_TOO_MANY_CONNECTIONS').length, 15, 'and in the logs')

  // Churn: 30 clients × 10 connect/close cycles against the limit of 5, refusals included.
  slow = false
  for (const ws of opened.splice(0)) ws.close()
  await until(() => app.wsConnections.countOfRoute('/slow') === 0, 'the first five to end')
  const cycles = await Promise.all(Array.from({ length: 30 }, async () => {
    let count = 0
    for (let i = 0; i < 10; i++) {
      try {
        const { ws, seen } = await connect(`${base}/slow`)
        count++
        ws.close()
        await seen.closed
      } catch {}
    }
    return count
  }))
  t.ok(cycles.reduce((a, b) => a + b) >= 10, `${cycles.reduce((a, b) => a + b)} of 300 cycles got a place`)
  await until(() => app.wsConnections.countOfRoute('/slow') === 0, 'every place freed after churn')
  const again = await upgrades(base, '/slow', 6)
  t.same(again.sort(), [101, 101, 101, 101, 101, 503], 'and the limit is still exactly five')
})

t.test('an upgrade refused after admission (inject: the HTTP handler answers) does not keep its place', async (t) => {
  const { app } = await buildApp(t, { maxConnections: 1 })
  app.ws('/one', {})
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/one', headers: upgradeHeaders })).statusCode, 426)
  t.equal(app.wsConnections.countOfRoute('/one'), 0)
  const { ws } = await inject(app, '/one')
  t.equal(app.wsConnections.countOfRoute('/one'), 1)
  ws.terminate()
})

t.test('maxConnectionsPerIp counts an IPv6 client by its /64 (ipv6Subnet), an IPv4-mapped one by its IPv4 address', async (t) => {
  const app = Fastify({ trustProxy: true })
  t.teardown(() => app.close())
  await app.register(wsHandlers, { maxConnectionsPerIp: 2 })
  app.ws('/c', {})
  const base = await listen(app)
  const from = async (ip: string): Promise<number> => (await upgrades(base, '/c', 1, { 'x-forwarded-for': ip }))[0]!
  t.same([await from('2001:db8:1:2::1'), await from('2001:db8:1:2:ffff::9'), await from('2001:db8:1:2:abcd:ef01:2345:6789')], [101, 101, 503],
    'three addresses of one /64 are one client')
  t.equal(await from('2001:db8:1:3::1'), 101, 'the next /64 is another client')
  t.same([await from('::ffff:198.51.100.7'), await from('198.51.100.7'), await from('::ffff:c633:6407')], [101, 101, 503], 'IPv4-mapped is its IPv4 address')
  const refused = await app.inject({ url: '/c', headers: { ...upgradeHeaders, 'x-forwarded-for': '2001:db8:1:2::77' } })
  t.match(refused.json(), { message: /this client \(2001:db8:1:2::77, counted as 2001:db8:1:2::\/64\)/ })

  const narrow = Fastify({ trustProxy: true })
  t.teardown(() => narrow.close())
  await narrow.register(wsHandlers, { maxConnectionsPerIp: 1, ipv6Subnet: 128 })
  narrow.ws('/c', {})
  const narrowBase = await listen(narrow)
  t.same([
    (await upgrades(narrowBase, '/c', 1, { 'x-forwarded-for': '2001:db8::1' }))[0],
    (await upgrades(narrowBase, '/c', 1, { 'x-forwarded-for': '2001:db8::2' }))[0],
    (await upgrades(narrowBase, '/c', 1, { 'x-forwarded-for': '2001:db8::1%eth0' }))[0]
  ], [101, 101, 503], 'ipv6Subnet: 128 counts full addresses (a zone is the same address)')
  for (const ipv6Subnet of [0, 129, 64.5]) {
    await t.rejects(async () => { await Fastify().register(wsHandlers, { ipv6Subnet }) }, { code: 'FST_WS_INVALID_OPTION', message: /ipv6Subnet.*1 to 128/ })
  }
})

t.test('ownOrigins: the app names its public origins, and a page that rebinds DNS to the app is not same-origin', async (t) => {
  const { app } = await buildApp(t, { ownOrigins: ['https://app.example.com'] })
  app.ws('/private', {})
  app.ws('/also', {}, { allowOrigins: (origin) => origin === 'https://partner.example' })
  const rebound = await app.inject({ url: '/private', headers: { ...upgradeHeaders, host: 'evil.example', origin: 'http://evil.example' } })
  t.equal(rebound.statusCode, 403, 'Host and Origin agree, but the origin is not one of the app\'s')
  t.match(rebound.json(), { code: 'FST_WS_ORIGIN_NOT_ALLOWED', message: /only its own origin, https:\/\/app\.example\.com/ })
  for (const url of ['/private', '/also']) {
    const own = await app.inject({ url, headers: { ...upgradeHeaders, host: 'internal:8080', origin: 'https://app.example.com' } })
    t.not(own.statusCode, 403, `${url}: the named origin passes`)
  }
  const partner = await app.inject({ url: '/also', headers: { ...upgradeHeaders, origin: 'https://partner.example' } })
  t.not(partner.statusCode, 403, 'and allowOrigins still applies')
  const ftp = await app.inject({ url: '/private', headers: { ...upgradeHeaders, origin: 'ftp://app.example.com' } })
  t.equal(ftp.statusCode, 403, 'a scheme without a default port is compared as written')
  const garbage = await app.inject({ url: '/also', headers: { ...upgradeHeaders, origin: 'not an origin' } })
  t.equal(garbage.statusCode, 403, 'an origin that does not parse is the function\'s to decide (here: no)')
  t.throws(() => app.ws('/bad', {}, { ownOrigins: ['app.example.com'] }), { code: 'FST_WS_INVALID_OPTION', message: /ownOrigins/ })
})
