/**
 * `wsClient(app, path)`: a client without a port (the upgrade is injected into the app's server
 * through an in-memory socket), and `wsClient(url)` over a real port. Both expose the handshake
 * (status, headers, negotiated protocol), an ordered, awaitable stream of frames (`next()` fails
 * with a clear message after a timeout, or at once after a close), the close code and reason,
 * and the server-side `terminate` reason. A refused upgrade rejects with `UpgradeRefusedError`
 * carrying the status, headers and body.
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

const ignore = (): void => {}

/** A terminate reason in a sentence's words: `crash (Error: boom)`, `remote 1000 "bye"`. */
function describeReason (reason: TerminateReason): string {
  const code = 'code' in reason && reason.code !== undefined ? ` ${reason.code}` : ''
  const text = 'reason' in reason ? ` ${JSON.stringify(reason.reason)}` : ''
  const error = 'error' in reason ? ` (${String(reason.error)})` : ''
  return `${reason.type}${code}${text}${error}`
}

/** What the server answered to the upgrade request. */
export interface Handshake {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  /** The negotiated subprotocol, or '' when none. */
  readonly protocol: string
  /** The refusal's body (empty after a 101). */
  readonly body: string
}

/** A received frame, as the client saw it. */
export type ReceivedFrame =
  | { readonly type: 'text', readonly data: string }
  | { readonly type: 'binary', readonly data: Buffer }

/** The upgrade was refused: the HTTP answer is in `handshake` (and `statusCode`, `headers`, `body`, `json()`). */
export class UpgradeRefusedError extends Error {
  readonly code = 'FST_WS_UPGRADE_REFUSED'
  readonly statusCode: number
  /** The refusal's headers (as `handshake.headers`). */
  readonly headers: IncomingHttpHeaders
  readonly body: string
  constructor (readonly handshake: Handshake) {
    super(`The upgrade was refused with HTTP ${handshake.status}: ${handshake.body}`)
    this.statusCode = handshake.status
    this.headers = handshake.headers
    this.body = handshake.body
  }

  json (): unknown {
    return JSON.parse(this.body)
  }
}

export interface ClientOptions {
  /** Request headers (Origin, Authorization, …). */
  headers?: Record<string, string>
  /** Subprotocols to offer, in order. */
  protocols?: readonly string[]
  /** How long the handshake, `next()`, `closed()` and `terminated()` wait before failing. Default 2000 ms. */
  timeoutMs?: number
  /** Called with the ws client underneath before any frame is read (as injectWS's `onInit`): attach your own listeners. */
  onInit?: (ws: WebSocket) => void
  /**
   * Over HTTP/2 (RFC 8441's extended CONNECT, on Node's http2 client) instead of an HTTP/1.1
   * upgrade: `wsClient('https://127.0.0.1:3000/path', { http2: { rejectUnauthorized: false } })`
   * (`http://` for cleartext h2 with prior knowledge). The options go to `http2.connect`; one
   * session per client, closed with it. Default: HTTP/1.1.
   */
  http2?: true | SecureClientSessionOptions
}

export class TestClient {
  #handshake: Handshake | undefined
  /** The ws client underneath, for what this class does not wrap. */
  readonly ws: WebSocket
  readonly #timeoutMs: number
  readonly #frames: ReceivedFrame[] = []
  /** Those waiting for the next frame; `undefined` tells them the connection closed. */
  readonly #waiting: Array<(frame: ReceivedFrame | undefined) => void> = []
  readonly #closed: Promise<{ code: number, reason: string }>
  readonly #terminated: Promise<TerminateReason>
  #received = 0
  /** Set once the connection closed: why `next()` cannot get another frame. */
  #closedProblem: Promise<string> | undefined

  /** @internal Listens from the start, so that frames sent with the 101 are not missed. */
  constructor (ws: WebSocket, terminated: Promise<TerminateReason>, timeoutMs: number) {
    this.ws = ws
    this.#terminated = terminated
    this.#timeoutMs = timeoutMs
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const frame: ReceivedFrame = isBinary ? { type: 'binary', data } : { type: 'text', data: data.toString() }
      this.#received++
      const waiter = this.#waiting.shift()
      if (waiter !== undefined) waiter(frame)
      else this.#frames.push(frame)
    })
    ws.on('error', ignore) // a broken connection shows in closed()
    this.#closed = new Promise((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => {
        resolve({ code, reason: reason.toString() })
        this.#closedProblem = this.#whyClosed(code, reason.toString())
        // Whoever waits for a frame is told now, not at its timeout.
        for (const waiter of this.#waiting.splice(0)) waiter(undefined)
      })
    })
  }

  /** "closed with 1011 ''; the server's terminate said …", with the terminate reason when it comes soon. */
  async #whyClosed (code: number, reason: string): Promise<string> {
    // In the background: its timer must not hold the process (unref).
    const terminated = await deadline(this.#terminated, this.#timeoutMs, () => 'not reported', false).then(
      describeReason, (error: Error) => error.message)
    return `the connection closed with ${code} ${JSON.stringify(reason)} (${this.#received} frames received before; the server's terminate reason: ${terminated})`
  }

  /** What the server answered to the upgrade request. */
  get handshake (): Handshake {
    return this.#handshake!
  }

  /** @internal */
  set handshake (handshake: Handshake) {
    this.#handshake = handshake
  }

  send (data: string | Buffer): void {
    this.ws.send(data)
  }

  /** Send `value` as a JSON text frame. */
  sendJson (value: unknown): void {
    this.ws.send(JSON.stringify(value))
  }

  /**
   * The next frame, in order. Fails after the timeout, saying how many frames came; or, once the
   * connection has closed, at once, with the close code and the server's terminate reason.
   */
  async next (timeoutMs = this.#timeoutMs): Promise<ReceivedFrame> {
    const queued = this.#frames.shift()
    if (queued !== undefined) return queued
    if (this.#closedProblem !== undefined) throw new Error(`no next frame: ${await this.#closedProblem}`)
    let resolve!: (frame: ReceivedFrame | undefined) => void
    const arrived = new Promise<ReceivedFrame | undefined>((_resolve) => { resolve = _resolve })
    this.#waiting.push(resolve)
    const frame = await deadline(arrived, timeoutMs, () => {
      this.#waiting.splice(this.#waiting.indexOf(resolve), 1)
      return `no frame within ${timeoutMs} ms (${this.#received} received before)`
    })
    if (frame === undefined) throw new Error(`no next frame: ${await this.#closedProblem!}`)
    return frame
  }

  /** The next frame's text; fails if it is binary. */
  async nextText (timeoutMs?: number): Promise<string> {
    const frame = await this.next(timeoutMs)
    if (frame.type !== 'text') throw new Error(`expected a text frame, got binary (${frame.data.length} bytes)`)
    return frame.data
  }

  /** The next frame's text, parsed as JSON. */
  async nextJson<T = unknown> (timeoutMs?: number): Promise<T> {
    return JSON.parse(await this.nextText(timeoutMs)) as T
  }

  /** The close code and reason the client saw. */
  async closed (timeoutMs = this.#timeoutMs): Promise<{ code: number, reason: string }> {
    return await deadline(this.#closed, timeoutMs, () => `the connection did not close within ${timeoutMs} ms`)
  }

  /** The reason the server's `terminate` was called with. */
  async terminated (timeoutMs = this.#timeoutMs): Promise<TerminateReason> {
    return await deadline(this.#terminated, timeoutMs, () => `the server did not terminate the connection within ${timeoutMs} ms`)
  }

  close (code?: number, reason?: string): void {
    this.ws.close(code, reason)
  }
}

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

async function deadline<T> (promise: Promise<T>, ms: number, problem: () => string, holdsProcess = true): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(problem())), ms)
    if (!holdsProcess) timer.unref()
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}
