/**
 * What `wsClient` hands back (`TestClient`): the handshake, an ordered, awaitable stream of
 * frames (`next()` fails with a clear message after a timeout, or at once after a close), the
 * close code and reason, and the server-side `terminate` reason; and what a refused upgrade
 * rejects with (`UpgradeRefusedError`). The transports that make one are client.ts's.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { SecureClientSessionOptions } from 'node:http2'
import type WebSocket from 'ws'
import type { TerminateReason } from '../core/types.js'

export const ignore = (): void => {}

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

/** `promise`, or a failure saying `problem()` after `ms` (an unref'd timer unless `holdsProcess`). */
export async function deadline<T> (promise: Promise<T>, ms: number, problem: () => string, holdsProcess = true): Promise<T> {
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
