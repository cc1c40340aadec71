/**
 * WebSockets over HTTP/2 (RFC 8441): on Fastify's http2 server the same routes accept extended
 * CONNECT streams, with every hook, `init`, the limits and the lifecycle; refusals are real
 * HTTP/2 responses; HTTP/1.1 upgrades keep working on the same server; app.close() closes the
 * sessions it served. The toolkit's client speaks both (`wsClient(url, { http2 })`).
 */
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import http2 from 'node:http2'
import net, { type AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import WebSocket from 'ws'
import wsHandlers, { close, defineHandler, text } from '../lib/index.js'
import { UpgradeRefusedError, wsClient, type ClientOptions } from '../lib/testing.js'
import { H2_SESSION_WINDOW, H2_STREAM_WINDOW, answeringStream } from '../lib/route/h2.js'
import { deferred, until, within } from './helpers.js'

const tls = { key: readFileSync(new URL('./fixtures/localhost-key.pem', import.meta.url)), cert: readFileSync(new URL('./fixtures/localhost-cert.pem', import.meta.url)) }
const overH2: ClientOptions = { http2: { ca: tls.cert } }

/** A client-side ws on a CONNECT stream of a session the test holds (the toolkit's client has a session of its own). */
function wsOnStream (stream: http2.ClientHttp2Stream): WebSocket {
  const ws = new WebSocket(null as unknown as string, undefined, { autoPong: true }) as WebSocket & { _isServer: boolean, setSocket: (socket: unknown, head: Buffer, options: object) => void }
  ws._isServer = false
  ws.setSocket(stream, Buffer.alloc(0), { maxPayload: 0 })
  return ws
}

interface Served { app: FastifyInstance, base: string, versions: string[] }

/** The app over TLS with h2 and HTTP/1.1 (as browsers need it), or cleartext h2 (prior knowledge). */
async function h2App (t: { teardown(fn: () => unknown): void }, options: { cleartext?: boolean, plugin?: object, routes?: (app: FastifyInstance) => void } = {}): Promise<Served> {
  const app = (options.cleartext === true
    ? Fastify({ http2: true })
    : Fastify({ http2: true, https: { ...tls, allowHTTP1: true } })) as unknown as FastifyInstance
  t.teardown(() => app.close())
  await app.register(wsHandlers, { closeTimeout: 500, ...options.plugin })
  const versions: string[] = []
  app.addHook('onRequest', async (request) => { versions.push(request.raw.httpVersion) })
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers.authorization === 'Bearer wrong') await reply.code(401).send({ error: 'who are you?' })
  })
  app.ws('/echo', defineHandler({
    init: (request) => request.query !== null && (request.query as { refuse?: string }).refuse !== undefined ? { state: undefined, options: { maxFrameSize: -1 } } : undefined,
    handle: (frame) => {
      if (frame.type === 'text' && frame.data.startsWith('close ')) return { reply: close(Number(frame.data.slice(6)), 'as asked') }
      return frame.type === 'text' ? { reply: text(frame.data) } : frame.type === 'binary' ? { reply: { type: 'binary', data: frame.data } } : undefined
    }
  }), { protocols: ['chat', 'superchat'], maxFrameSize: 2 << 20 })
  app.ws('/small', { handle: () => undefined }, { maxFrameSize: 16 })
  app.get('/page', async () => 'a plain route')
  options.routes?.(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return { app, base: `${options.cleartext === true ? 'http' : 'https'}://localhost:${port}`, versions }
}

t.test('over HTTP/2: echo, the subprotocol, a 1 MB message both ways, close codes both ways, terminate', async (t) => {
  const { app, base, versions } = await h2App(t)
  const client = await wsClient(`${base}/echo`, { ...overH2, protocols: ['superchat', 'chat'] })
  t.equal(client.handshake.status, 200, 'RFC 8441: 200, not 101')
  t.equal(client.handshake.protocol, 'chat', 'the route\'s preference among those offered')
  t.same(versions, ['2.0'], 'every hook ran, on an HTTP/2 request')
  // The stream no longer holds Node's compat request and response (≈ 1.3 KB of heap per WebSocket).
  const ctx = [...app.wsConnections][0] as unknown as Record<symbol, { _socket?: object }>
  const stream = Object.getOwnPropertySymbols(ctx).map((symbol) => ctx[symbol]).find((value) => value?._socket !== undefined)!._socket as Record<symbol, unknown>
  const compat = Object.getOwnPropertySymbols(stream).filter((symbol) => symbol.description === 'request' || symbol.description === 'response')
  t.equal(compat.length, 2, 'Node\'s slots are there')
  t.same(compat.map((symbol) => stream[symbol]), [undefined, undefined], 'and let go')
  client.send('hello')
  t.same(await client.next(), { type: 'text', data: 'hello' })
  const big = Buffer.alloc(1 << 20, 7)
  client.send(big)
  const echoed = await client.next()
  t.ok(Buffer.isBuffer(echoed.data) && big.equals(echoed.data), '1 MB back intact')
  client.send('close 4001')
  t.same(await client.closed(), { code: 4001, reason: 'as asked' })
  t.match(await client.terminated(), { type: 'stop', code: 4001 })

  const second = await wsClient(`${base}/echo`, overH2)
  second.close(4002, 'from the client')
  t.match(await second.terminated(), { type: 'remote', code: 4002, reason: 'from the client' })
  await until(() => app.wsConnections.size === 0, 'both gone')
})

t.test('refusals are real HTTP/2 responses: a hook\'s 401, init\'s invalid result, the subprotocol, an unknown path, a plain route, another :protocol', async (t) => {
  const { base } = await h2App(t)
  const refusal = async (path: string, options: ClientOptions = {}): Promise<UpgradeRefusedError> => {
    try {
      await wsClient(`${base}${path}`, { ...overH2, ...options })
    } catch (error) {
      if (error instanceof UpgradeRefusedError) return error
      throw error
    }
    throw new Error(`${path} was accepted`)
  }
  const unauthorized = await refusal('/echo', { headers: { authorization: 'Bearer wrong' } })
  t.equal(unauthorized.statusCode, 401)
  t.same(unauthorized.json(), { error: 'who are you?' })
  t.equal((await refusal('/echo?refuse=1')).statusCode, 500, 'init\'s invalid result')
  t.match((await refusal('/echo', { protocols: ['mqtt'] })).json(), { statusCode: 400, code: 'FST_WS_PROTOCOL_NOT_SUPPORTED' })
  t.equal((await refusal('/nowhere')).statusCode, 404)
  t.match((await refusal('/page')).json(), { statusCode: 404, message: '/page is not a WebSocket route' })

  const session = http2.connect(base, { ca: tls.cert })
  t.teardown(() => session.close())
  await once(session, 'remoteSettings')
  const other = session.request({ ':method': 'CONNECT', ':protocol': 'webtransport', ':path': '/echo', ':scheme': 'https', ':authority': new URL(base).host }, { endStream: false })
  const [headers] = await once(other, 'response') as [Record<string, unknown>]
  t.equal(headers[':status'], 501, 'a CONNECT for another protocol')
  other.resume()
  await once(other, 'end')
  other.end()
  const classic = session.request({ ':method': 'CONNECT', ':authority': 'example.com:443' }, { endStream: false }) // a tunnel, not a WebSocket
  const [classicHeaders] = await once(classic, 'response') as [Record<string, unknown>]
  t.equal(classicHeaders[':status'], 501, 'a classic CONNECT (no :protocol)')
  classic.resume()
  await once(classic, 'end')
  classic.end()
})

t.test('ws\'s own refusal head (a closing server\'s 503) becomes the stream\'s response and ends it', async (t) => {
  const calls: unknown[] = []
  const stream = { respond: (...args: unknown[]) => { calls.push(args) }, write: () => { calls.push('prototype write'); return true } }
  const answering = answeringStream(stream as never) as unknown as { write: (chunk: string) => boolean }
  answering.write('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n')
  t.same(calls, [[{ ':status': 503 }, { endStream: true }]])
  t.equal(Object.hasOwn(answering, 'write'), false, 'one head only: the stream\'s own write again')
})

t.test('permessage-deflate over h2: the 200 carries the extension ws negotiated, and compressed messages go both ways', async (t) => {
  const { base } = await h2App(t, { routes: (app) => app.ws('/deflate', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }, { compress: true }) })
  const session = http2.connect(base, { ca: tls.cert })
  t.teardown(() => session.close())
  await once(session, 'remoteSettings')
  const offer = { 'sec-websocket-version': '13', 'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits' }
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/deflate', ':scheme': 'https', ':authority': new URL(base).host, ...offer }, { endStream: false })
  const [headers] = await once(stream, 'response') as [Record<string, string>]
  t.equal(headers[':status'], 200)
  t.match(headers['sec-websocket-extensions'], /^permessage-deflate/, 'the negotiated extension in the response')
  // The client side takes the extension the server answered, as ws's own client does.
  const require = createRequire(import.meta.url)
  const wsLib = join(dirname(require.resolve('ws')), 'lib') // not exported: taken by path
  const PerMessageDeflate = require(join(wsLib, 'permessage-deflate.js')) as new (options: object, isServer: boolean, maxPayload: number) => { accept(offers: unknown[]): unknown }
  const { parse } = require(join(wsLib, 'extension.js')) as { parse(header: string): Record<string, unknown[]> }
  const deflate = new PerMessageDeflate({}, false, 0)
  deflate.accept(parse(headers['sec-websocket-extensions']!)['permessage-deflate']!)
  const ws = new WebSocket(null as unknown as string, undefined, { autoPong: true }) as WebSocket & { _isServer: boolean, _extensions: object, setSocket: (socket: unknown, head: Buffer, options: object) => void }
  ws._isServer = false
  ws._extensions = { 'permessage-deflate': deflate }
  ws.setSocket(stream, Buffer.alloc(0), { maxPayload: 0 })
  const big = 'compressible '.repeat(10_000)
  const echoed = new Promise<string>((resolve) => ws.once('message', (data: Buffer) => resolve(data.toString())))
  ws.send(big, { compress: true })
  t.equal(await echoed, big, 'a compressed message there and back')
  ws.close()
})

t.test('one session carries several WebSockets and plain requests at once', async (t) => {
  const { app, base } = await h2App(t)
  const session = http2.connect(base, { ca: tls.cert })
  t.teardown(() => session.close())
  await once(session, 'remoteSettings')
  t.equal(session.remoteSettings.enableConnectProtocol, true, 'the server advertises extended CONNECT')
  t.equal(session.remoteSettings.initialWindowSize, H2_STREAM_WINDOW, 'stream windows sized for WebSockets (4 MiB), not 64 KB')
  const authority = new URL(base).host
  const sockets = await Promise.all([1, 2, 3].map(async () => {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/echo', ':scheme': 'https', ':authority': authority, 'sec-websocket-version': '13' }, { endStream: false })
    const [headers] = await once(stream, 'response') as [Record<string, unknown>]
    t.equal(headers[':status'], 200)
    return wsOnStream(stream)
  }))
  await until(() => (session.state.remoteWindowSize ?? 0) >= H2_SESSION_WINDOW - 65_535, 'the session window opened to 8 MiB once it carried a WebSocket')
  const page = session.request({ ':path': '/page', ':authority': authority })
  let body = ''
  page.on('data', (chunk: Buffer) => { body += chunk.toString() })
  await once(page, 'end')
  t.equal(body, 'a plain route')
  const replies = await Promise.all(sockets.map(async (ws, i) => {
    const reply = once(ws, 'message')
    ws.send(`socket ${i}`)
    return String((await reply)[0])
  }))
  t.same(replies, ['socket 0', 'socket 1', 'socket 2'])
  t.equal(app.wsConnections.size, 3)
  for (const ws of sockets) ws.close()
  await until(() => app.wsConnections.size === 0, 'all three closed')
})

t.test('HTTP/1.1 upgrades keep working on the same server (a browser\'s first contact), and cleartext h2 works for non-browser clients', async (t) => {
  const { base } = await h2App(t)
  const h1 = new WebSocket(`${base.replace('https', 'wss')}/echo`, { ca: tls.cert })
  await once(h1, 'open')
  h1.send('over 1.1')
  t.equal(String((await once(h1, 'message'))[0]), 'over 1.1')
  h1.close()

  const { base: cleartext } = await h2App(t, { cleartext: true })
  const client = await wsClient(`${cleartext}/echo`, { http2: true })
  client.send('prior knowledge')
  t.same(await client.next(), { type: 'text', data: 'prior knowledge' })
  client.close()
})

t.test('app.close(): 1012 to every h2 WebSocket and the sessions closed, promptly', async (t) => {
  const { app, base } = await h2App(t)
  const clients = await Promise.all([1, 2].map(async () => await wsClient(`${base}/echo`, overH2)))
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 5000, `closed in ${Date.now() - started} ms (a session held open would take the 72 s session timeout)`)
  for (const client of clients) {
    t.same(await client.closed(), { code: 1012, reason: '' })
    t.match(await client.terminated(), { type: 'shutdown', code: 1012 })
  }
})

/**
 * An h2 client behind a TCP relay the test can silence: the relay stops reading from the server
 * and forwards nothing more, as a peer that stops reading without closing (no FIN).
 */
async function silentPeer (t: { teardown(fn: () => unknown): void }, port: number): Promise<{ session: http2.ClientHttp2Session, silence(): void }> {
  const sides: net.Socket[] = []
  const relay = net.createServer((client) => {
    const server = net.connect(port, '127.0.0.1')
    for (const side of [client, server]) side.on('error', () => {})
    client.pipe(server)
    server.pipe(client)
    sides.push(client, server)
  })
  relay.listen(0, '127.0.0.1')
  await once(relay, 'listening')
  t.teardown(() => {
    for (const side of sides) side.destroy()
    relay.close()
  })
  const session = http2.connect(`http://127.0.0.1:${(relay.address() as AddressInfo).port}`)
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  await once(session, 'remoteSettings')
  return {
    session,
    silence () {
      const [client, server] = sides as [net.Socket, net.Socket]
      server.unpipe(client)
      client.unpipe(server)
      server.pause()
    }
  }
}

t.test('app.close() is bounded when an h2 peer stops reading (no FIN): with WebSockets flooding it, and with an init still pending', async (t) => {
  const pending = deferred<undefined>()
  const initRunning = deferred<undefined>()
  const { app } = await h2App(t, {
    cleartext: true,
    routes: (app) => {
      app.ws('/flood', { websocketInit: () => ({ reply: Array.from({ length: 16 }, () => ({ type: 'binary' as const, data: Buffer.alloc(1 << 20) })) }) })
      app.ws('/pending', {
        init: async () => {
          initRunning.resolve(undefined)
          return await pending.promise
        }
      })
    }
  })
  t.teardown(() => pending.resolve(undefined))
  const { port } = app.server.address() as AddressInfo
  const connect = (session: http2.ClientHttp2Session, path: string): http2.ClientHttp2Stream => {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': path, ':scheme': 'http', ':authority': `127.0.0.1:${port}`, 'sec-websocket-version': '13' }, { endStream: false })
    stream.on('error', () => {})
    return stream
  }
  const flooded = await silentPeer(t, port)
  const flood = connect(flooded.session, '/flood')
  await once(flood, 'response')
  flooded.silence()
  const waiting = await silentPeer(t, port)
  connect(waiting.session, '/pending')
  await initRunning.promise
  waiting.silence()
  await within(app.close(), 'app.close() with two silent h2 peers', 20_000)
  t.pass('closed')
})

t.test('during app.close(), a new h2 WebSocket gets the drain\'s 503 (Retry-After, FST_WS_SHUTTING_DOWN), not Fastify\'s generic one', async (t) => {
  const finish = deferred<void>()
  const { app, base } = await h2App(t, { plugin: { closeTimeout: 60_000 }, routes: (app) => { app.ws('/slow', { terminate: async () => { await finish.promise } }) } })
  const session = http2.connect(base, { ca: tls.cert })
  t.teardown(() => session.destroy())
  await once(session, 'remoteSettings')
  const connectTo = (): http2.ClientHttp2Stream => session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/slow', ':scheme': 'https', ':authority': new URL(base).host, 'sec-websocket-version': '13' }, { endStream: false })
  const first = connectTo()
  const [accepted] = await once(first, 'response') as [Record<string, unknown>]
  t.equal(accepted[':status'], 200)
  const closing = app.close()
  await until(() => app.wsConnections.draining, 'app.close() began')
  const refused = connectTo()
  const [headers] = await once(refused, 'response') as [Record<string, unknown>]
  let body = ''
  refused.on('data', (chunk: Buffer) => { body += chunk.toString() })
  await once(refused, 'end')
  t.equal(headers[':status'], 503)
  t.equal(headers['retry-after'], '5')
  t.match(JSON.parse(body), { statusCode: 503, code: 'FST_WS_SHUTTING_DOWN' })
  session.destroy() // this client goes: the drain and the session close can end
  finish.resolve()
  await closing
})

t.test('limits over HTTP/2 as over HTTP/1.1: a frame over maxFrameSize closes 1009, text that is not UTF-8 closes 1007', async (t) => {
  const { base } = await h2App(t)
  const open = async (transport: 'HTTP/2' | 'HTTP/1.1', path: string): Promise<WebSocket> => {
    if (transport === 'HTTP/2') return (await wsClient(`${base}${path}`, overH2)).ws
    const ws = new WebSocket(`${base.replace('https', 'wss')}${path}`, { ca: tls.cert })
    await once(ws, 'open')
    return ws
  }
  const closeCode = async (ws: WebSocket): Promise<number> => (await once(ws, 'close') as [number])[0]
  for (const transport of ['HTTP/2', 'HTTP/1.1'] as const) {
    const large = await open(transport, '/small')
    large.send('x'.repeat(17))
    t.equal(await closeCode(large), 1009, `${transport}: 1009`)
    const invalid = await open(transport, '/echo')
    invalid.send(Buffer.from([0xff, 0xfe]), { binary: false })
    t.equal(await closeCode(invalid), 1007, `${transport}: 1007`)
  }
})

t.test('every way an h2 WebSocket ends reaches terminate once: peer reset, session gone, the peer\'s GOAWAY', async (t) => {
  const reasons: string[] = []
  const { app, base } = await h2App(t, { routes: (app) => app.ws('/watched', { terminate: (reason) => { reasons.push(reason.type) } }) })
  const authority = new URL(base).host
  const open = async (session: http2.ClientHttp2Session): Promise<http2.ClientHttp2Stream> => {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/watched', ':scheme': 'https', ':authority': authority, 'sec-websocket-version': '13' }, { endStream: false })
    await once(stream, 'response')
    return stream
  }
  const session = http2.connect(base, { ca: tls.cert })
  session.on('error', () => {})
  await once(session, 'remoteSettings')
  const reset = await open(session)
  await until(() => app.wsConnections.size === 1, 'open')
  reset.close(http2.constants.NGHTTP2_CANCEL) // RST_STREAM from the peer
  await until(() => reasons.length === 1, 'terminate after the reset')
  const gone = [await open(session), await open(session)]
  await until(() => app.wsConnections.size === 2, 'two open on one session')
  t.ok(gone.length === 2)
  session.destroy() // the TCP connection goes: both streams end
  await until(() => reasons.length === 3, 'terminate for both')
  const polite = http2.connect(base, { ca: tls.cert })
  polite.on('error', () => {})
  await once(polite, 'remoteSettings')
  await open(polite)
  await until(() => app.wsConnections.size === 1, 'open on a new session')
  polite.goaway(http2.constants.NGHTTP2_NO_ERROR)
  polite.destroy()
  await until(() => reasons.length === 4, 'terminate after GOAWAY')
  t.same(reasons, ['closed', 'closed', 'closed', 'closed'], 'each once, as a connection that went away')
  await until(() => app.wsConnections.size === 0, 'nothing left')
})

t.test('an HTTP/1.1 CONNECT on the same server gets 405; a refused upgrade\'s lease is released when its stream goes', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let streamClosed = false
  const { app, base } = await h2App(t, {
    plugin: { maxConnections: 1 },
    routes: (app) => app.ws('/slow', {
      init: async (request) => {
        (request.raw as unknown as { stream: http2.ServerHttp2Stream }).stream.once('close', () => { streamClosed = true })
        await gate
      }
    })
  })
  const { port } = new URL(base)
  const tlsSocket = (await import('node:tls')).connect({ host: '127.0.0.1', port: Number(port), ca: tls.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
  await once(tlsSocket, 'secureConnect')
  tlsSocket.write('CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const [answer] = await once(tlsSocket, 'data') as [Buffer]
  t.match(answer.toString(), /^HTTP\/1\.1 405 /)
  tlsSocket.destroy()

  // A CONNECT whose stream is reset while init runs: the connection limit is free again.
  const session = http2.connect(base, { ca: tls.cert })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  await once(session, 'remoteSettings')
  const authority = new URL(base).host
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/slow', ':scheme': 'https', ':authority': authority, 'sec-websocket-version': '13' }, { endStream: false })
  await until(() => app.wsConnections.countOfRoute('/slow') === 1, 'admitted, init running')
  stream.close(http2.constants.NGHTTP2_CANCEL)
  await until(() => streamClosed, 'the server saw the stream go')
  release() // init returns for a client that is gone
  await until(() => app.wsConnections.countOfRoute('/slow') === 0, 'the lease released')
  const client = await wsClient(`${base}/echo`, overH2)
  t.equal(client.handshake.status, 200, 'the one allowed connection is available again')
  client.close()
})

t.test('the example app over HTTP/2 (npm run start:h2): its routes over h2 and HTTP/1.1 on one port', async (t) => {
  const { buildExampleApp } = await import('../example-app/app.js')
  const tlsDir = new URL('../example-app/tls/', import.meta.url)
  const { app } = await buildExampleApp({ http2: true, https: { key: readFileSync(new URL('localhost-key.pem', tlsDir)), cert: readFileSync(new URL('localhost-cert.pem', tlsDir)), allowHTTP1: true } } as never)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `https://localhost:${(app.server.address() as AddressInfo).port}`
  const echo = await wsClient(`${base}/echo`, overH2)
  echo.send('over h2')
  t.same(await echo.next(), { type: 'text', data: 'over h2' })
  const hello = await wsClient(`${base}/hello`, overH2)
  t.same(await hello.next(), { type: 'text', data: 'Hello!' })
  echo.close()
  hello.close()
})

t.test('the toolkit\'s h2 client says so when a server does not offer WebSockets over HTTP/2', async (t) => {
  const server = http2.createServer()
  server.on('stream', (stream) => { stream.respond({ ':status': 404 }, { endStream: true }) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  await t.rejects(wsClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`, { http2: true }), /does not offer WebSockets over HTTP\/2/)

  const silent = http2.createServer({ settings: { enableConnectProtocol: true } })
  silent.on('stream', () => {}) // never answers
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => silent.close())
  await t.rejects(wsClient(`http://127.0.0.1:${(silent.address() as AddressInfo).port}/x`, { http2: true, timeoutMs: 200 }), /the CONNECT of \/x got no answer within 200 ms/)
})

t.test('the toolkit\'s h2 client hands its ws to onInit before any frame is read', async (t) => {
  const { base } = await h2App(t)
  const seen: string[] = []
  const client = await wsClient(`${base}/echo`, { ...overH2, onInit: (ws) => { ws.on('message', (data) => seen.push(String(data))) } })
  client.send('raw listener')
  t.same(await client.next(), { type: 'text', data: 'raw listener' })
  t.same(seen, ['raw listener'])
  client.close()
})

t.test('heartbeats over HTTP/2: the server pings a silent h2 WebSocket, the pong counts, a deaf one meets the idle timeout', async (t) => {
  const reasons: string[] = []
  const { base } = await h2App(t, { routes: (app) => app.ws('/beat', { terminate: (reason) => { reasons.push(reason.type) } }, { pingInterval: 50, idleTimeout: 120 }) })
  const listening = await wsClient(`${base}/beat`, overH2)
  let pings = 0
  listening.ws.on('ping', () => pings++)
  const deaf = await wsClient(`${base}/beat`, { ...overH2, onInit: (ws) => { (ws as unknown as { _autoPong: boolean })._autoPong = false } })
  t.same(await deaf.closed(), { code: 1000, reason: '' }, 'the deaf one: closed by the idle timeout')
  await until(() => pings >= 3, `the listening one keeps being pinged, and stays (pings ${pings}, terminates ${reasons.join(' ')})`)
  t.same(reasons, ['timeout'])
  listening.close()
})

t.test('an idle HTTP/2 session that times out (Fastify\'s http2SessionTimeout) is closed gently: its WebSocket goes on, terminate comes at its own close', async (t) => {
  const app = Fastify({ http2: true, http2SessionTimeout: 200 }) as unknown as FastifyInstance
  t.teardown(() => app.close())
  await app.register(wsHandlers)
  const reasons: string[] = []
  app.ws('/quiet', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined, terminate: (reason) => { reasons.push(reason.type) } }, { pingInterval: 0, idleTimeout: 0 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/quiet`
  let goaway = false
  const session = http2.connect(new URL(url).origin)
  session.on('goaway', () => { goaway = true })
  await once(session, 'remoteSettings')
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/quiet', ':scheme': 'http', ':authority': new URL(url).host, 'sec-websocket-version': '13' }, { endStream: false })
  await once(stream, 'response')
  const ws = wsOnStream(stream)
  await until(() => goaway, 'the session timed out: GOAWAY, no new streams')
  ws.send('still here')
  t.equal(String((await once(ws, 'message'))[0]), 'still here', 'the WebSocket outlives the GOAWAY')
  t.same(reasons, [])
  ws.close(1000)
  await until(() => reasons.length === 1, 'terminate at its own close')
  t.same(reasons, ['remote'])
  session.close()
})

t.test('a CONNECT whose routing throws resets that stream and is logged; the server goes on', async (t) => {
  const { app, base } = await h2App(t)
  const errors: unknown[] = []
  const log = app.log as unknown as { error: (...args: unknown[]) => void }
  const error = log.error.bind(app.log)
  log.error = (...args: unknown[]) => { errors.push(args[1]); error(...args) }
  const routing = app.routing
  ;(app as unknown as { routing: () => never }).routing = () => { throw new Error('boom') }
  t.teardown(() => { (app as unknown as { routing: typeof routing }).routing = routing })
  await t.rejects(wsClient(`${base}/echo`, { ...overH2, timeoutMs: 1000 }), 'the stream is reset, not answered')
  t.same(errors, ['WebSocket over HTTP/2: the CONNECT failed'])
  ;(app as unknown as { routing: typeof routing }).routing = routing
  const client = await wsClient(`${base}/echo`, overH2)
  t.equal(client.handshake.status, 200, 'the next CONNECT is served')
  client.close()
})
