/**
 * Every private part of ws that this plugin relies on, in one place, with the reason, and the
 * check that proves they still behave as expected before the plugin accepts a connection.
 *
 * ws offers no public way to do these per connection:
 * - `_receiver._maxPayload`, `_skipUTF8Validation`, and permessage-deflate's `_maxPayload`:
 *   per-connection `maxFrameSize` and `validateUtf8` (ws has them per server only);
 * - the receiver's `'conclude'` event: the peer's close frame as soon as it is parsed (ws's
 *   `'close'` waits for the TCP teardown), so `terminate` gets the peer's code promptly;
 * - the `'status-code'` symbol on ws's errors: the close code ws sent, so that `terminate`
 *   reports what went on the wire;
 * - `_sender._state`/`_queue`, `_receiver._state`/`_fragmented` and permessage-deflate's
 *   `_deflate`/`_inflate`/`params`: `hibernate` releases zlib contexts only when no zlib job
 *   runs or waits (actor/hibernate.ts); permessage-deflate's `_options`, `_compress`/`_decompress`
 *   and its inflaters' owner symbol: released contexts are pooled and reused (zlib-pool.ts);
 * - `_closeTimeout`: how long this connection waits for the peer's close reply (ws has it per
 *   server only; the app's own routes keep the server's);
 * - `_socket`: corked so that a tick's replies leave in one write, detached from the HTTP
 *   response after the 101; ws's 'data' listener on it, wrapped (`hookSocketData`) so that
 *   the heartbeat hears of every chunk (a partial frame is life too) without a second listener;
 *   and ws's `websocket` symbol on it, so that the wrapper, shared by every socket, finds the
 *   connection without a slot of its own.
 *
 * Public APIs are used where they do the job: `subprotocol.parse` (ws's own header rule),
 * `shouldHandle` and `handleProtocols` (per-upgrade compression and subprotocol), `ping`,
 * `pause`/`resume`. One private use is @fastify/websocket's, not ws's: its per-connection
 * 'error' listener is removed by position (the last one, added just before our wsHandler runs),
 * because it closes over Fastify's request and reply (+2.5 KB per connection); its public
 * `errorHandler` option would still leave that closure in place. The test toolkit also uses
 * ws's `setSocket`, as @fastify/websocket's `injectWS` does.
 *
 * `checkWs()` (ws-check.ts) proves at registration that each of these still behaves as expected.
 */
import type { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import type WebSocket from 'ws'
import { CloseCode } from '../core/close-codes.js'

/** A zlib stream of ws's (DeflateRaw or InflateRaw). */
export interface ZlibContext { close(): void, reset(): void }

type ZlibMethod = (this: PermessageDeflateInternals, data: unknown, fin: boolean, callback: unknown) => void

export interface PermessageDeflateInternals {
  /** Its own copy of the size limit, checked on the inflated size. */
  _maxPayload: number
  /** The zlib contexts; ws creates them on demand, so hibernate may recycle and drop them. */
  _deflate: ZlibContext | null
  _inflate: ZlibContext | null
  /** The server's options: contexts are only shared between connections with the same zlib options. */
  _options: { zlibDeflateOptions?: object, zlibInflateOptions?: object }
  /** Where ws creates a missing context and runs a zlib job; the pool wraps them per connection. */
  _compress: ZlibMethod
  _decompress: ZlibMethod
  /** The negotiated parameters (`client_no_context_takeover`). */
  params: Record<string, unknown>
}

export interface WsInternals {
  _closeTimeout: number
  _socket: Socket
  _receiver: EventEmitter & { _maxPayload: number, _skipUTF8Validation: boolean, _state: number, _fragmented: number }
  _sender: { _state: number, _queue: unknown[] }
  _extensions: { 'permessage-deflate'?: PermessageDeflateInternals }
}

/** ws/lib/sender.js: not deflating, not reading a Blob. */
export const SENDER_DEFAULT = 0
/** ws/lib/receiver.js: waiting for zlib to inflate a message. */
export const RECEIVER_INFLATING = 5

export function internalsOf (ws: WebSocket): WsInternals {
  return ws as unknown as WsInternals
}

/** Per-connection `maxFrameSize` and `validateUtf8` (ws has them per server only). */
export function applyReceiverLimits (ws: WebSocket, maxFrameSize: number, validateUtf8: boolean): void {
  const internals = internalsOf(ws)
  const maxPayload = maxFrameSize === Infinity ? 0 : maxFrameSize
  internals._receiver._maxPayload = maxPayload
  internals._receiver._skipUTF8Validation = !validateUtf8
  // permessage-deflate checks the inflated size against its own copy of the limit
  const deflate = internals._extensions['permessage-deflate']
  if (deflate !== undefined) deflate._maxPayload = maxPayload
}

/** The close code ws sent for this error (its private `status-code` symbol), if any. */
export function sentCloseCodeOf (error: Error): number | undefined {
  const symbol = Object.getOwnPropertySymbols(error).find((candidate) => candidate.description === 'status-code')
  return symbol === undefined ? undefined : (error as unknown as Record<symbol, number>)[symbol]
}

/**
 * The close code ws sent for one of its errors, so that terminate reports exactly what went on
 * the wire. Without it, 1002.
 */
export function closeCodeOfWsError (error: Error): number {
  return sentCloseCodeOf(error) ?? CloseCode.PROTOCOL_ERROR
}

/** The symbol under which this socket holds `ws` (ws's private `websocket` symbol), if any. */
function backLinkOf (socket: Socket, ws: WebSocket): symbol | undefined {
  return Object.getOwnPropertySymbols(socket).find((candidate) => (socket as unknown as Record<symbol, unknown>)[candidate] === ws)
}

type DataListener = ((this: Socket, chunk: Buffer) => void) & { listener?: DataListener }
/** What hears of socket data: the socket's WebSocket, or undefined once ws let the socket go (at its close). */
export type OnSocketData = (ws: WebSocket | undefined) => void
/** One wrapper per (ws's listener, our callback): both are module-level functions, so in practice one. */
const dataWrappers = new Map<DataListener, Map<OnSocketData, DataListener>>()

/**
 * Call `onData` for every chunk the socket delivers, before ws parses it. ws's own 'data'
 * listener is swapped for a shared wrapper that calls `onData`, then ws's listener: a second
 * listener would turn the socket's listener slot into an array (+64 B per connection). The
 * wrapper carries ws's listener as `.listener`, as Node's `once` wrappers do, so ws's own
 * `removeListener('data', socketOnData)` (at its close) still removes it; it finds the
 * WebSocket through ws's link back from the socket, so it needs no slot of its own. When the
 * socket has other 'data' listeners than ws's one, `onData` gets a listener of its own.
 */
export function hookSocketData (ws: WebSocket, onData: OnSocketData): void {
  const socket = internalsOf(ws)._socket
  const listeners = socket.rawListeners('data') as DataListener[]
  const backLink = backLinkOf(socket, ws)
  if (listeners.length !== 1 || backLink === undefined) {
    socket.on('data', () => { onData(ws) })
    return
  }
  const wsListener = listeners[0]!
  if (wsListener.listener !== undefined) return // hooked already
  let byCallback = dataWrappers.get(wsListener)
  if (byCallback === undefined) dataWrappers.set(wsListener, byCallback = new Map())
  let wrapper = byCallback.get(onData)
  if (wrapper === undefined) {
    wrapper = function (this: Socket, chunk: Buffer): void {
      onData((this as unknown as Record<symbol, WebSocket | undefined>)[backLink])
      wsListener.call(this, chunk)
    }
    wrapper.listener = wsListener
    byCallback.set(onData, wrapper)
  }
  socket.removeListener('data', wsListener)
  socket.on('data', wrapper)
}

/** What is not where this plugin expects it, or undefined. */
export function wsInternalsProblem (ws: WebSocket): string | undefined {
  const { _socket: socket, _receiver: receiver, _sender: sender, _extensions: extensions } = internalsOf(ws)
  const missing: string[] = []
  if (typeof internalsOf(ws)._closeTimeout !== 'number') missing.push('_closeTimeout')
  if (typeof socket?.cork !== 'function') missing.push('_socket')
  else if (backLinkOf(socket, ws) === undefined) missing.push('_socket[websocket]')
  if (typeof receiver?.on !== 'function') missing.push('_receiver')
  else {
    for (const field of ['_maxPayload', '_state', '_fragmented'] as const) {
      if (typeof receiver[field] !== 'number') missing.push(`_receiver.${field}`)
    }
    if (typeof receiver._skipUTF8Validation !== 'boolean') missing.push('_receiver._skipUTF8Validation')
  }
  if (typeof sender?._state !== 'number' || !Array.isArray(sender._queue)) missing.push('_sender._state/_queue')
  if (extensions === null || typeof extensions !== 'object') missing.push('_extensions')
  return missing.length === 0 ? undefined : `${missing.join(', ')} not found`
}

/** The ws module and version that @fastify/websocket resolves: its sockets come from there. */
export function resolveWs (): { ws: typeof import('ws'), version: string } {
  const fromHere = createRequire(import.meta.url)
  const fromFastifyWebsocket = createRequire(fromHere.resolve('@fastify/websocket'))
  return {
    ws: fromFastifyWebsocket('ws') as typeof import('ws'),
    version: (fromFastifyWebsocket('ws/package.json') as { version: string }).version
  }
}

let subprotocolParser: ((header: string) => Set<string>) | undefined

/** ws's own `Sec-WebSocket-Protocol` rule (exported by ws, not typed by @types/ws); throws a SyntaxError. */
export function parseSubprotocols (header: string): Set<string> {
  subprotocolParser ??= (resolveWs().ws as unknown as { subprotocol: { parse: (header: string) => Set<string> } }).subprotocol.parse
  return subprotocolParser(header)
}
