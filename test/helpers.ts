/**
 * Test helpers: an app per test (closed on teardown) with its error logs captured, a recorder
 * for terminate calls, and three kinds of client: injectWS (no port), a real ws client, and a
 * raw TCP socket that writes frame bytes by hand.
 */
import { once } from 'node:events'
import { setTimeout as wait } from 'node:timers/promises'
import net from 'node:net'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import wsHandlers, { type RequestSnapshot, type TerminateReason, type WebSocketHandlersOptions } from '../lib/index.js'
import { wsClient } from '../lib/testing.js'

interface Teardown { teardown(fn: () => unknown): void }

export interface TestApp {
  app: FastifyInstance
  /** Parsed log lines at level error and above. */
  errors: Array<Record<string, unknown> & { msg: string }>
}

/** The headers of a valid handshake, for `app.inject()`: what a real client sends. */
export const upgradeHeaders = {
  connection: 'upgrade',
  upgrade: 'websocket',
  'sec-websocket-version': '13',
  'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ=='
}

export async function buildApp (t: Teardown, options: WebSocketHandlersOptions = {}): Promise<TestApp> {
  const errors: TestApp['errors'] = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      errors.push(JSON.parse(chunk.toString()))
      done()
    }
  })
  const app = Fastify({ logger: { level: 'error', stream } })
  t.teardown(() => app.close())
  await app.register(wsHandlers, options)
  return { app, errors }
}

export interface Termination { reason: TerminateReason, request: RequestSnapshot, state: unknown }

/** A `terminate` callback that records its calls, and a promise of the first. */
export function terminateRecorder (): { terminate: (r: TerminateReason, q: RequestSnapshot, s: unknown) => void, calls: Termination[], first: Promise<Termination> } {
  const calls: Termination[] = []
  let resolve!: (value: Termination) => void
  const first = new Promise<Termination>((_resolve) => { resolve = _resolve })
  return {
    calls,
    first,
    terminate (reason, request, state) {
      calls.push({ reason, request, state })
      resolve({ reason, request, state })
    }
  }
}

/** What a client saw: frames as 'text:…' / 'binary:…' strings, and the close. */
export class Seen {
  readonly frames: string[] = []
  readonly closed: Promise<{ code: number, reason: string }>
  #waiters: Array<{ count: number, resolve: () => void }> = []

  constructor (ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary) => {
      this.frames.push(`${isBinary ? 'binary' : 'text'}:${data.toString()}`)
      this.#waiters = this.#waiters.filter((w) => {
        if (this.frames.length < w.count) return true
        w.resolve()
        return false
      })
    })
    ws.on('error', () => {}) // a refused or broken connection shows in `closed`
    this.closed = new Promise((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: String(reason) }))
    })
  }

  /** Resolves once `count` frames in all have arrived. */
  async frameCount (count: number): Promise<string[]> {
    if (this.frames.length < count) await new Promise<void>((resolve) => this.#waiters.push({ count, resolve }))
    return this.frames
  }
}

/**
 * A connection without a port (the toolkit's injected client: an in-memory socket that delivers
 * on a later tick, as TCP does), with what it sees recorded from before the open.
 */
export async function inject (app: FastifyInstance, path: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket, seen: Seen }> {
  let seen!: Seen
  const client = await wsClient(app, path, { headers, onInit (socket) { seen = new Seen(socket) } })
  return { ws: client.ws, seen }
}

/** Listen on an ephemeral port and return its ws:// base. */
export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address() as net.AddressInfo
  return `ws://127.0.0.1:${address.port}`
}

/** A real ws client; resolves once open (or rejects on a refused upgrade). */
export async function connect (url: string, protocols?: string | string[], options?: WebSocket.ClientOptions): Promise<{ ws: WebSocket, seen: Seen, headers: Record<string, string | string[] | undefined> }> {
  const ws = new WebSocket(url, protocols, options)
  const seen = new Seen(ws)
  let headers: Record<string, string | string[] | undefined> = {}
  ws.on('upgrade', (response) => { headers = response.headers })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('unexpected-response', (_request, response) => {
      reject(Object.assign(new Error(`HTTP ${response.statusCode}`), { statusCode: response.statusCode }))
    })
    ws.once('error', reject)
  })
  return { ws, seen, headers }
}

/**
 * A raw TCP client: does the handshake, then writes frame bytes as given and parses what the
 * server sends back (unmasked server frames).
 */
export class RawClient {
  readonly socket: net.Socket
  #buffer = Buffer.alloc(0)
  readonly frames: Array<{ opcode: number, payload: Buffer }> = []
  readonly ended: Promise<void>

  private constructor (socket: net.Socket) {
    this.socket = socket
    // Not events.once: it rejects on 'error', and a reset by the server is an ending too.
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()))
  }

  static async open (base: string, path: string, { extensions }: { extensions?: string } = {}): Promise<RawClient> {
    const { hostname, port } = new URL(base)
    const socket = net.connect(Number(port), hostname)
    await once(socket, 'connect')
    const client = new RawClient(socket)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      (extensions === undefined ? '' : `Sec-WebSocket-Extensions: ${extensions}\r\n`) +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    let head = Buffer.alloc(0)
    while (!head.includes('\r\n\r\n')) {
      const [chunk] = await once(socket, 'data') as [Buffer]
      head = Buffer.concat([head, chunk])
    }
    const end = head.indexOf('\r\n\r\n') + 4
    if (!head.subarray(0, end).toString().startsWith('HTTP/1.1 101')) throw new Error(head.toString())
    socket.on('data', (chunk: Buffer) => client.#parse(chunk))
    client.#parse(head.subarray(end))
    return client
  }

  /** A client frame; masked unless `masked: false`. */
  static frame (opcode: number, payload: Buffer | string, { fin = true, masked = true } = {}): Buffer {
    const data = Buffer.from(payload)
    const mask = Buffer.from([0x37, 0xfa, 0x21, 0x3d])
    let header: Buffer
    if (data.length < 126) {
      header = Buffer.from([(fin ? 0x80 : 0) | opcode, (masked ? 0x80 : 0) | data.length])
    } else if (data.length < 65536) {
      header = Buffer.alloc(4)
      header.writeUInt16BE(data.length, 2)
      header[0] = (fin ? 0x80 : 0) | opcode
      header[1] = (masked ? 0x80 : 0) | 126
    } else {
      header = Buffer.alloc(10)
      header.writeBigUInt64BE(BigInt(data.length), 2)
      header[0] = (fin ? 0x80 : 0) | opcode
      header[1] = (masked ? 0x80 : 0) | 127
    }
    if (!masked) return Buffer.concat([header, data])
    const body = Buffer.from(data.map((byte, i) => byte ^ mask[i % 4]!))
    return Buffer.concat([header, mask, body])
  }

  send (bytes: Buffer): void {
    this.socket.write(bytes)
  }

  /** The close frame's code, once the server has sent one (undefined if it closed without). */
  async closeCode (): Promise<number | undefined> {
    await this.ended
    const closeFrame = this.frames.find((f) => f.opcode === 0x8)
    return closeFrame === undefined || closeFrame.payload.length < 2 ? undefined : closeFrame.payload.readUInt16BE(0)
  }

  #parse (chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk])
    for (;;) {
      const buffer = this.#buffer
      if (buffer.length < 2) return
      let length = buffer[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (buffer.length < 4) return
        length = buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (buffer.length < 10) return
        length = Number(buffer.readBigUInt64BE(2))
        offset = 10
      }
      if (buffer.length < offset + length) return
      this.frames.push({ opcode: buffer[0]! & 0x0f, payload: buffer.subarray(offset, offset + length) })
      this.#buffer = buffer.subarray(offset + length)
    }
  }
}

/** Real time, also while a test fakes the global timers (node:timers/promises is not faked). */
export const sleep = async (ms: number): Promise<void> => { await wait(ms) }

/**
 * Wait until `predicate` holds (polling), for conditions that no event announces. Past the
 * deadline it fails with the label, not with a silent tap timeout.
 */
export async function until (predicate: () => boolean | Promise<boolean>, label = String(predicate), deadlineMs = 20_000): Promise<void> {
  const deadline = Date.now() + deadlineMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for: ${label}`)
    await sleep(5)
  }
}

/** `promise`, or a failure naming what never came. */
export async function within<T> (promise: Promise<T>, label: string, deadlineMs = 20_000): Promise<T> {
  const cancel = new AbortController()
  const late = wait(deadlineMs, undefined, { signal: cancel.signal }).then(() => {
    throw new Error(`timed out after ${deadlineMs} ms waiting for: ${label}`)
  }, () => undefined as never)
  try {
    return await Promise.race([promise, late])
  } finally {
    cancel.abort()
  }
}

/** Counts the pings the server sends to sockets that are no longer open (there must be none). */
export function pingsToClosedSockets (t: { teardown(fn: () => unknown): void }): { count: number, all: number } {
  const seen = { count: 0, all: 0 }
  const ping = WebSocket.prototype.ping
  WebSocket.prototype.ping = function (this: WebSocket, ...args: Parameters<WebSocket['ping']>) {
    seen.all++
    if (this.readyState !== WebSocket.OPEN) seen.count++
    return ping.apply(this, args)
  }
  t.teardown(() => { WebSocket.prototype.ping = ping })
  return seen
}

/** A promise and its resolve, for a callback the test settles when it chooses. */
export function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}

/**
 * fast-check's settings for a model test: a fixed seed and `numRuns` in `npm test`; `npm run
 * test:models` (which CI runs too, bounded in time) runs `FWS_MODEL_SCALE` times as many with a
 * fresh seed, which fast-check prints with any counterexample (keep it as a regression test).
 */
export function modelRuns (numRuns: number): { seed: number, numRuns: number } {
  const scale = Number(process.env.FWS_MODEL_SCALE ?? 1)
  const seed = process.env.FWS_MODEL_SEED === 'random' ? Math.floor(Math.random() * 2 ** 31) : 24
  return { seed, numRuns: numRuns * scale }
}
