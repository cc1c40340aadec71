/**
 * `wsClient(app, path)`: a client without a port (the upgrade is injected into the app's server
 * through an in-memory socket), `wsClient(url)` over a real port, and over HTTP/2 (`http2`).
 * Here: the three transports; what each hands back, a `TestClient` (the handshake, the frames,
 * the close and the server's `terminate` reason), is test-client.ts's. A refused upgrade rejects
 * with `UpgradeRefusedError` carrying the status, headers and body.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import http2, { type SecureClientSessionOptions } from 'node:http2'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { Duplex } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import type { TerminateReason } from '../core/types.js'
import { memorySocketPair, type MemorySocket } from '../wire/memory-socket.js'
import { watchByPort, watchInjected } from './terminate-watch.js'
import { TestClient, UpgradeRefusedError, deadline, ignore, type ClientOptions, type Handshake } from './test-client.js'

export { TestClient, UpgradeRefusedError, type ClientOptions, type Handshake, type ReceivedFrame } from './test-client.js'

/**
 * A client for a WebSocket route: `wsClient(app, '/path')` without a port (the app need not
 * listen), or `wsClient('ws://127.0.0.1:3000/path')` over a real one.
 */
export async function wsClient (app: FastifyInstance, path: string, options?: ClientOptions): Promise<TestClient>
export async function wsClient (url: string, options?: ClientOptions): Promise<TestClient>
export async function wsClient (target: FastifyInstance | string, pathOrOptions?: string | ClientOptions, maybeOptions?: ClientOptions): Promise<TestClient> {
  if (typeof target === 'string') {
    const options = (pathOrOptions ?? {}) as ClientOptions
    return options.http2 === undefined ? await realClient(target, options) : await http2Client(target, options, options.http2)
  }
  return await injectedClient(target, pathOrOptions as string, maybeOptions ?? {})
}

async function injectedClient (app: FastifyInstance, path: string, options: ClientOptions): Promise<TestClient> {
  await app.ready()
  const [serverEnd, clientEnd] = memorySocketPair()
  const headers: Record<string, string> = {
    host: 'localhost',
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    ...lowerCaseKeys(options.headers ?? {})
  }
  if (options.protocols !== undefined) headers['sec-websocket-protocol'] = options.protocols.join(', ')
  const request = { method: 'GET', url: path, httpVersion: '1.1', headers, socket: serverEnd }
  const watch = watchInjected(request)
  const timeoutMs = options.timeoutMs ?? 2000
  const answer = readHead(clientEnd)
  app.server.emit('upgrade', request, serverEnd, Buffer.alloc(0))
  const { handshake, rest } = await deadline(answer, timeoutMs, () => {
    serverEnd.destroy()
    return `the upgrade of ${path} got no answer within ${timeoutMs} ms (an init that never settles?)`
  })
  if (handshake.status !== 101) throw new UpgradeRefusedError(handshake)
  const client = clientOn(clientEnd, rest, handshake, watch.terminated, timeoutMs, options)
  clientEnd.resume() // paused by readHead since the 101, so that nothing was read without a listener
  return client
}

async function realClient (url: string, options: ClientOptions): Promise<TestClient> {
  const ws = new WebSocket(url, options.protocols === undefined ? [] : [...options.protocols], { headers: options.headers })
  const watch = watchByPort()
  const timeoutMs = options.timeoutMs ?? 2000
  const client = new TestClient(ws, watch.terminated, timeoutMs)
  options.onInit?.(ws)
  const opened = new Promise<Handshake>((resolve, reject) => {
    ws.once('upgrade', (response: IncomingMessage) => {
      watch.claim(String(response.socket.localPort!))
      resolve({ status: 101, headers: response.headers, protocol: String(response.headers['sec-websocket-protocol'] ?? ''), body: '' })
    })
    ws.once('unexpected-response', (_request, response: IncomingMessage) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => reject(new UpgradeRefusedError({ status: response.statusCode!, headers: response.headers, protocol: '', body })))
    })
    ws.once('error', reject)
  })
  try {
    client.handshake = await deadline(opened, timeoutMs, () => {
      ws.terminate()
      return `the upgrade of ${url} got no answer within ${timeoutMs} ms (an init that never settles?)`
    })
  } finally {
    watch.done()
  }
  return client
}

/**
 * A client-side ws on a socket whose handshake is done (the in-memory socket after its 101, an
 * HTTP/2 stream after its 200), as @fastify/websocket's injectWS does (ws internals). A ws made
 * without an address is a server's: it must be told it is a client, and to answer pings.
 */
function clientOn (
  socket: Duplex, head: Buffer, handshake: Handshake, terminated: Promise<TerminateReason>, timeoutMs: number, options: ClientOptions
): TestClient {
  const ws = new WebSocket(null as unknown as string, undefined, { autoPong: true })
  const client = new TestClient(ws, terminated, timeoutMs)
  options.onInit?.(ws)
  client.handshake = handshake
  const internals = ws as unknown as { _isServer: boolean, setSocket: (socket: Duplex, head: Buffer, options: object) => void }
  internals._isServer = false
  internals.setSocket(socket, head, { maxPayload: 0 })
  return client
}

/** A WebSocket over an HTTP/2 stream: the extended CONNECT of RFC 8441, then a client-side ws on the stream. */
async function http2Client (url: string, options: ClientOptions, sessionOptions: true | SecureClientSessionOptions): Promise<TestClient> {
  const target = new URL(url)
  const secure = target.protocol === 'https:' || target.protocol === 'wss:'
  const timeoutMs = options.timeoutMs ?? 2000
  const session = http2.connect(`${secure ? 'https' : 'http'}://${target.host}`, sessionOptions === true ? {} : sessionOptions)
  session.on('error', ignore) // a failed session shows in the handshake or in closed()
  const watch = watchByPort()
  try {
    const stream = await deadline((async () => {
      await once(session, 'remoteSettings')
      if (session.remoteSettings.enableConnectProtocol !== true) {
        throw new Error(`${target.host} does not offer WebSockets over HTTP/2 (no SETTINGS_ENABLE_CONNECT_PROTOCOL)`)
      }
      const headers: OutgoingHttpHeaders = {
        ...lowerCaseKeys(options.headers ?? {}),
        ':method': 'CONNECT',
        ':protocol': 'websocket',
        ':scheme': secure ? 'https' : 'http',
        ':authority': target.host,
        ':path': target.pathname + target.search,
        'sec-websocket-version': '13'
      }
      if (options.protocols !== undefined) headers['sec-websocket-protocol'] = options.protocols.join(', ')
      return session.request(headers, { endStream: false })
    })(), timeoutMs, () => `no HTTP/2 session with ${target.host} within ${timeoutMs} ms`)
    const [responseHeaders] = await deadline(once(stream, 'response') as Promise<[IncomingHttpHeaders & { ':status'?: number }]>, timeoutMs,
      () => `the CONNECT of ${target.pathname} got no answer within ${timeoutMs} ms (an init that never settles?)`)
    const { ':status': status = 0, ...headers } = responseHeaders
    if (status !== 200) {
      let body = ''
      stream.on('data', (chunk: Buffer) => { body += chunk.toString() })
      await once(stream, 'end')
      session.close()
      throw new UpgradeRefusedError({ status, headers, protocol: '', body })
    }
    watch.claim(`${session.socket.localPort!}/${stream.id!}`)
    const handshake = { status, headers, protocol: String(headers['sec-websocket-protocol'] ?? ''), body: '' }
    const client = clientOn(stream, Buffer.alloc(0), handshake, watch.terminated, timeoutMs, options)
    client.ws.once('close', () => { session.close() })
    watch.done()
    return client
  } catch (error) {
    watch.done()
    // A refusal ended its stream and closed the session gently already; anything else (a timeout,
    // a session that failed) may leave a stream open, which a gentle close would wait for.
    if (!(error instanceof UpgradeRefusedError)) session.destroy()
    throw error
  }
}

/** The HTTP head of the server's answer, then (for a refusal) its body. */
async function readHead (socket: MemorySocket): Promise<{ handshake: Handshake, rest: Buffer }> {
  let buffered = Buffer.alloc(0)
  return await new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk])
      const end = buffered.indexOf('\r\n\r\n')
      /* c8 ignore next -- in memory, Node writes the head in one chunk; kept for any other transport */
      if (end === -1) return
      const [statusLine, ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine!)?.[1])
      const headers: IncomingHttpHeaders = {}
      for (const line of lines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      const rest = buffered.subarray(end + 4)
      const handshake = (body: string): Handshake => ({ status, headers, protocol: String(headers['sec-websocket-protocol'] ?? ''), body })
      if (status === 101) {
        socket.off('data', onData)
        socket.pause() // the client's ws reads from here on
        resolve({ handshake: handshake(''), rest })
        return
      }
      // A refusal: @fastify/websocket ends the socket once the response is sent.
      socket.off('data', onData)
      let body = rest
      socket.on('data', (more: Buffer) => { body = Buffer.concat([body, more]) })
      socket.once('end', () => resolve({ handshake: handshake(body.toString()), rest: Buffer.alloc(0) }))
    }
    socket.on('data', onData)
    socket.once('error', reject)
  })
}

function lowerCaseKeys (headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))
}
