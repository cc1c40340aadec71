/**
 * One upgraded connection: an actor with a mailbox, in the manner of a cowboy_websocket process.
 *
 *             upgrade
 *                │  websocketInit is the mailbox's first item
 *                ▼
 *   ┌────────── open ──────────┐  frames and infos: one callback at a time, in arrival order
 *   │ peer close, protocol     │ stop, close command, crash, bad result,
 *   │ error, socket dropped    │ idle timeout, outbound overflow, app.close()
 *   │ (what is queued still    │ (a close frame goes out now; what is queued
 *   │  runs, replies dropped)  │  is dropped)
 *   ▼                          ▼
 *   └───────► closing ◄────────┘  #endReason is set; nothing new enters the mailbox
 *                │  after the callback in progress (if any) settles
 *                ▼
 *             closed              terminate(reason) ran exactly once; timers are cancelled
 */
import type { IncomingMessage } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type WebSocket from 'ws'
import { CloseCode, closeCodeOfWsError } from './close-codes.js'
import { resultProblem, writeFrames } from './commands.js'
import { releaseIdleResources } from './hibernate.js'
import { closeChannel, frameInChannel, frameOutChannel, openChannel } from './diagnostics.js'
import { InvalidMessageError, InvalidResultError, InvalidTimerError, OutboundOverflowError } from './errors.js'
import { json } from './frames.js'
import type { JsonProblem, JsonReader } from './json-messages.js'
import type { ResolvedConnectionOptions } from './options.js'
import { SENDER_DEFAULT, internalsOf } from './ws-internals.js'
import type { BroadcastFrame } from './adapter.js'
import type { Lease } from './registry.js'
import type {
  Commands, InFrame, LiveOptions, OutFrame, RequestSnapshot, TerminateReason, TimerRef,
  WebSocketContext, WebSocketHandler
} from './types.js'

/** What every connection of one route shares. */
export interface RouteContext {
  readonly url: string
  readonly handler: WebSocketHandler<unknown, unknown>
  readonly log: FastifyBaseLogger
  readonly registry: ConnectionRegistry
  /** ms to wait for the peer's close reply before the socket is destroyed. */
  readonly closeTimeout: number
  /** JSON routes: how text becomes `json` frames, and what bad input gets. */
  readonly json?: { readonly read: JsonReader, readonly onInvalid: 'close' | 'error-frame' } | undefined
}

/** Where connections announce themselves and keep their topics; see registry.ts. */
export interface ConnectionRegistry {
  nextId(): string
  add(connection: Connection): void
  subscribe(connection: Connection, topic: string): boolean
  unsubscribe(connection: Connection, topic: string): boolean
  /** The connection's terminate has settled (or it had none). */
  remove(connection: Connection): void
}

/** What the upgrade hands over: the state and options `init` produced, and the request snapshot. */
export interface Upgrade {
  readonly state: unknown
  readonly options: ResolvedConnectionOptions
  readonly request: RequestSnapshot
  /** The admission that counts this connection against the limits, released after terminate. */
  readonly lease: Lease
  /** The raw HTTP request, for the open channel's observers only (not kept). */
  readonly raw: IncomingMessage
}

export const kShutdown = Symbol('fastify-ws-handlers.shutdown')
export const kWriteShared = Symbol('fastify-ws-handlers.write-shared')
export const kLease = Symbol('fastify-ws-handlers.lease')
const kConnection = Symbol('fastify-ws-handlers.connection')

/** The connection's slot on ws objects, so that shared listeners find their connection. */
interface Slot { [kConnection]?: Connection }

// Mailbox item kinds. Items are stored as (kind, payload) pairs: no wrapper object per message.
const INIT = 0
const FRAME = 1
const INFO = 2
const END = 3
const REFUSED = 4 // a JSON message the route refused: its error frame goes out in order
const callbackNames = ['websocketInit', 'handle', 'info'] as const

// Why reading is paused: bits, so the handler's `active: false` and a full mailbox do not undo each other.
const PAUSED_BY_HANDLER = 1
const PAUSED_BY_MAILBOX = 2

let lastTimerRef = 0

/** A waiting frame's weight for the mailbox's byte bound: its bytes, or its JSON text's length. */
function sizeOf (frame: InFrame<unknown>): number {
  return frame.type === 'json' ? (frame as { size?: number }).size! : frame.data.length
}

/**
 * Whether `log` writes info lines: pino's isLevelEnabled. Fastify's disabled logger (logger:
 * false) has none, and nothing is logged then (nor a child logger made per connection).
 */
function logsInfo (log: FastifyBaseLogger): boolean {
  const pino = log as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }
  return pino.isLevelEnabled?.('info') === true
}

/** The close code of the ways to end that carry none, for the close log line (1006: no close frame). */
const closeCodeByReason: Readonly<Record<string, number>> = { timeout: 1000, crash: 1011, shutdown: 1001, closed: 1006 }

function closeCodeOf (reason: TerminateReason): number | undefined {
  return 'code' in reason ? reason.code : closeCodeByReason[reason.type]
}
const noTopics: readonly string[] = Object.freeze([])

export class Connection implements WebSocketContext<unknown> {
  readonly id: string
  readonly request: RequestSnapshot
  readonly [kLease]: Lease
  readonly #route: RouteContext
  readonly #ws: WebSocket
  #state: unknown
  #options: ResolvedConnectionOptions
  /**
   * Items waiting while a callback runs, as (kind, payload) pairs from `#head` on: dequeueing
   * moves the head (O(1)); allocated on first use (most connections are idle).
   */
  #queue: unknown[] | undefined
  #head = 0
  /** Payload bytes (characters of text) of the frames waiting: bounded by `maxFrameSize` too. */
  #queuedBytes = 0
  /** A post was refused since the mailbox was last below its limit (logged once per episode). */
  #refusing = false
  /** Frames that came while the handler said `active: false`; they run first on `active: true`. */
  #held: Array<InFrame<unknown>> | undefined
  /** A callback is running (or pending): new items wait in the queue. */
  #busy = true
  #pendingKind = INIT
  #paused = 0
  #endReason: TerminateReason | undefined
  #closed = false
  /** One timer for the idle timeout and the heartbeat: it fires every `#tickMs` of silence. */
  #idleTimer: NodeJS.Timeout | undefined
  #tickMs = 0
  /** Milliseconds of silence (no received data) counted by the timer so far. */
  #silentMs = 0
  /** Set while `hibernate` waits for zlib to finish the reply before releasing it. */
  #hibernateTimer: NodeJS.Timeout | undefined
  #timers: Map<TimerRef, NodeJS.Timeout> | undefined
  #log: FastifyBaseLogger | undefined
  /** When it opened (performance.now()), for the close log line. */
  readonly #openedAt = performance.now()
  /** Topics this connection is in (few per connection: an array is the smallest). */
  #topics: string[] | undefined
  #onFulfilled: ((result: unknown) => void) | undefined
  #onRejected: ((error: unknown) => void) | undefined

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    this.id = route.registry.nextId()
    this.request = upgrade.request
    this[kLease] = upgrade.lease
    this.#route = route
    this.#ws = ws
    this.#state = upgrade.state
    this.#options = upgrade.options

    const internals = internalsOf(ws)
    internals._closeTimeout = route.closeTimeout
    ;(ws as Slot)[kConnection] = this
    ;(internals._socket as Slot)[kConnection] = this
    ;(internals._receiver as Slot)[kConnection] = this
    ws.on('message', Connection.#onMessage)
    ws.on('ping', Connection.#onPing)
    ws.on('pong', Connection.#onPong)
    ws.on('close', Connection.#onClose)
    // The peer's close frame, as soon as it is parsed: ws's own 'close' waits for the TCP teardown.
    internals._receiver.on('conclude', Connection.#onConclude)
    ws.on('error', Connection.#onError)
    this.#applyReceiverLimits()
    this.#armIdleTimer()

    route.registry.add(this)
    if (logsInfo(route.log)) this.log.info({ ip: this.request.ip, protocol: this.request.protocol }, 'WebSocket open')
    if (openChannel.hasSubscribers) openChannel.publish({ ctx: this, request: upgrade.raw })
    if (this.#dispatch(INIT, undefined)) this.#drain()
  }

  get alive (): boolean {
    return !this.#closed
  }

  get bufferedAmount (): number {
    return this.#ws.bufferedAmount
  }

  get log (): FastifyBaseLogger {
    this.#log ??= this.#route.log.child({ reqId: this.request.id, wsId: this.id, wsRoute: this.#route.url })
    return this.#log
  }

  /** Refused (false) once the connection is ending or `mailboxLimit` items wait: the app's producers are bounded too. */
  post (message: unknown): boolean {
    if (this.#endReason !== undefined) return false
    if (this.#busy && this.#queued() >= this.#options.mailboxLimit) {
      if (!this.#refusing) {
        this.#refusing = true
        this.log.warn({ code: 'FST_WS_MAILBOX_FULL', mailboxLimit: this.#options.mailboxLimit }, 'WebSocket mailbox full: posts are refused until it drains')
      }
      return false
    }
    return this.#deliver(INFO, message)
  }

  sendAfter (ms: number, message: unknown): TimerRef {
    return this.#startTimer(ms, message, false)
  }

  startTimer (ms: number, message: unknown): TimerRef {
    return this.#startTimer(ms, message, true)
  }

  cancelTimer (ref: TimerRef): boolean {
    const timer = this.#timers?.get(ref)
    if (timer === undefined) return false
    clearTimeout(timer)
    this.#timers!.delete(ref)
    return true
  }

  get topics (): readonly string[] {
    return this.#topics ?? noTopics
  }

  subscribe (topic: string): boolean {
    if (this.#closed || !this.#route.registry.subscribe(this, topic)) return false
    // A literal: an empty array's first push reserves room for 17 (+136 B per connection).
    if (this.#topics === undefined) this.#topics = [topic]
    else this.#topics.push(topic)
    return true
  }

  unsubscribe (topic: string): boolean {
    if (!this.#route.registry.unsubscribe(this, topic)) return false
    const topics = this.#topics!
    topics.splice(topics.indexOf(topic), 1)
    return true
  }

  /**
   * `broadcast`: write a frame encoded once for every subscriber, without running the handler.
   * The shared buffers go straight to the socket when ws's sender is idle; otherwise (it is
   * compressing a reply) through ws after what it queued, uncompressed. False when not written.
   */
  [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean {
    if (this.#endReason !== undefined) return false
    const ws = this.#ws
    // The peer ended TCP and ws has not said 'close' yet: nothing to write to.
    /* c8 ignore next */
    if (ws.readyState !== ws.OPEN) return false
    if (this.#closedForOverflow()) return false
    const { _sender: sender, _socket: socket } = internalsOf(ws)
    if (sender._state === SENDER_DEFAULT && sender._queue.length === 0) {
      socket.write(encoded)
    } else {
      ws.send(frame.data, { binary: frame.binary, compress: false })
    }
    return true
  }

  /** app.close(): close with 1001 now; terminate follows the callback in progress. */
  [kShutdown] (): void {
    this.#close(CloseCode.GOING_AWAY, '', { type: 'shutdown' })
  }

  // ---- the mailbox --------------------------------------------------------

  #deliver (kind: number, payload: unknown): boolean {
    if (this.#endReason !== undefined) return false
    if (!this.#busy) {
      this.#busy = true
      if (this.#dispatch(kind, payload)) this.#drain()
      return true
    }
    const queue = this.#queue ??= []
    queue.push(kind, payload)
    if (kind === FRAME) this.#queuedBytes += sizeOf(payload as InFrame<unknown>)
    // Stop reading the socket past either bound: many small items, or a few large frames
    // (mailboxLimit × maxFrameSize would be a gigabyte with the defaults).
    if ((this.#paused & PAUSED_BY_MAILBOX) === 0 &&
      (this.#queued() > this.#options.mailboxLimit || this.#queuedBytes > this.#options.maxFrameSize)) {
      this.#setPaused(PAUSED_BY_MAILBOX, true)
    }
    return true
  }

  /** Items waiting in the mailbox. */
  #queued (): number {
    return this.#queue === undefined ? 0 : (this.#queue.length - this.#head) >> 1
  }

  /** Run queued items until the queue is empty or a callback goes async. */
  #drain (): void {
    // Re-read each turn: a callback may create the queue (a post, or a close queuing END).
    for (let queue = this.#queue; queue !== undefined && queue.length !== this.#head; queue = this.#queue) {
      const head = this.#head
      const kind = queue[head] as number
      const payload = queue[head + 1]
      queue[head + 1] = undefined // let the payload go
      if (kind === FRAME) this.#queuedBytes -= sizeOf(payload as InFrame<unknown>)
      if (head + 2 === queue.length) {
        queue.length = 0
        this.#head = 0
      } else if (head >= 2048 && head * 2 >= queue.length) {
        queue.splice(0, head + 2) // compact now and then: still O(1) per item, amortised
        this.#head = 0
      } else {
        this.#head = head + 2
      }
      if (this.#queued() <= this.#options.mailboxLimit >> 1) {
        this.#refusing = false
        if ((this.#paused & PAUSED_BY_MAILBOX) !== 0 && this.#queuedBytes <= this.#options.maxFrameSize / 2) {
          this.#setPaused(PAUSED_BY_MAILBOX, false)
        }
      }
      if (!this.#dispatch(kind, payload)) return
    }
    this.#busy = false
  }

  /**
   * The one place that calls websocketInit, handle and info: a throw becomes close 1011 and a
   * `crash`, a promise makes the mailbox wait. Returns false while a callback is pending.
   */
  #dispatch (kind: number, payload: unknown): boolean {
    if (kind === END) {
      this.#terminate()
      return true
    }
    if (kind === REFUSED) {
      const { code, reason } = payload as JsonProblem
      this.#write(json({ type: 'error', code, message: reason }))
      return true
    }
    if (kind === FRAME && (this.#paused & PAUSED_BY_HANDLER) !== 0 && this.#endReason === undefined) {
      // Already read from the socket (same TCP chunk) when the handler paused: it waits (unless
      // the peer has ended the connection: then what was read still runs, as queued frames do).
      (this.#held ??= []).push(payload as InFrame<unknown>)
      return true
    }
    const handler = this.#route.handler
    let result: unknown
    try {
      if (kind === FRAME) {
        result = handler.handle === undefined ? undefined : handler.handle(payload as InFrame, this.#state, this)
      } else if (kind === INFO) {
        result = handler.info === undefined ? undefined : handler.info(payload, this.#state, this)
      } else {
        result = handler.websocketInit === undefined ? undefined : handler.websocketInit(this.#state, this)
      }
    } catch (error) {
      this.#crash(kind, error)
      return true
    }
    if (result === undefined) return true
    if (result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
      this.#pendingKind = kind
      this.#onFulfilled ??= (settled) => {
        if (settled !== undefined) this.#apply(this.#pendingKind, settled)
        this.#drain()
      }
      this.#onRejected ??= (error) => {
        this.#crash(this.#pendingKind, error)
        this.#drain()
      }
      ;(result as PromiseLike<unknown>).then(this.#onFulfilled, this.#onRejected)
      return false
    }
    this.#apply(kind, result)
    return true
  }

  /** The command interpreter, in the order documented on `Commands`. */
  #apply (kind: number, result: unknown): void {
    const problem = resultProblem(result)
    if (problem !== undefined) {
      const error = new InvalidResultError(callbackNames[kind], problem)
      this.log.error({ err: error }, `WebSocket ${callbackNames[kind]} returned an invalid result; closing with 1011`)
      this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
      return
    }
    const commands = result as Commands<unknown>
    if (commands.state !== undefined) this.#state = commands.state
    if (commands.options !== undefined) this.#setOptions(commands.options)
    if (commands.active !== undefined) this.#setActive(commands.active)
    if (commands.reply !== undefined) this.#write(commands.reply)
    if (commands.stop === true) this.#close(CloseCode.NORMAL, '', { type: 'stop', code: CloseCode.NORMAL, reason: '' })
    if (commands.hibernate === true) this.#hibernate()
  }

  /** Release what can be rebuilt on the next message (hibernate.ts), once the reply is compressed. */
  #hibernate (): void {
    if (this.#endReason !== undefined || this.#hibernateTimer !== undefined) return
    if (!releaseIdleResources(this.#ws)) this.#hibernateTimer = setTimeout(Connection.#retryHibernate, 1, this, 1).unref()
  }

  #crash (kind: number, error: unknown): void {
    this.log.error({ err: error }, `WebSocket ${callbackNames[kind]} threw; closing with 1011`)
    this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'crash', error })
  }

  // ---- writing and closing ------------------------------------------------

  #write (reply: OutFrame | readonly OutFrame[]): void {
    // Nothing is sent once the connection is ending: after a close frame, or to a closed peer.
    if (this.#endReason !== undefined) return
    if (this.#closedForOverflow()) return
    const ws = this.#ws
    const closeFrame = writeFrames(ws, reply)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: reply })
    if (closeFrame !== undefined) {
      const code = closeFrame.code ?? CloseCode.NORMAL
      const reason = closeFrame.reason ?? ''
      this.#close(code, reason, { type: 'stop', code, reason })
    }
  }

  /**
   * A slow reader is one that has not taken what was sent before: the backlog before a write
   * counts (replies and broadcasts alike), so that one legitimate large reply is not mistaken
   * for it. Over `maxBufferedBytes`: close 1008, and true.
   */
  #closedForOverflow (): boolean {
    const backlog = this.#ws.bufferedAmount
    if (backlog <= this.#options.maxBufferedBytes) return false
    const error = new OutboundOverflowError(backlog, this.#options.maxBufferedBytes)
    this.#close(CloseCode.POLICY_VIOLATION, 'outbound buffer full', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return true
  }

  /** A close that this side decides: the close frame goes out now and queued items are dropped. */
  #close (code: number, reason: string, terminateReason: TerminateReason): void {
    if (this.#endReason !== undefined) return
    this.#ws.close(code, reason)
    // Read again (frames are dropped from now on) so that the peer's close reply ends the socket.
    if (this.#paused !== 0) this.#ws.resume()
    this.#end(terminateReason, false)
  }

  /** Enter `closing`: terminate runs once the callback in progress (and, if kept, the queue) is done. */
  #end (reason: TerminateReason, keepQueue: boolean): void {
    if (this.#endReason !== undefined) return
    this.#endReason = reason
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#hibernateTimer)
    const queue = this.#queue ??= []
    if (!keepQueue) {
      queue.length = 0
      this.#head = 0
      this.#queuedBytes = 0
    } else {
      // Frames read before the handler paused reading are not lost when the peer ends: they run first.
      this.#releaseHeld()
    }
    queue.push(END, undefined)
    if (!this.#busy) {
      this.#busy = true
      this.#drain()
    }
  }

  #terminate (): void {
    this.#closed = true
    const reason = this.#endReason!
    if (this.#topics !== undefined) {
      for (const topic of this.#topics) this.#route.registry.unsubscribe(this, topic)
      this.#topics = undefined
    }
    if (this.#timers !== undefined) {
      for (const timer of this.#timers.values()) clearTimeout(timer)
      this.#timers = undefined
    }
    if (closeChannel.hasSubscribers) closeChannel.publish({ ctx: this, reason })
    if (logsInfo(this.#route.log)) {
      const durationMs = Math.round(performance.now() - this.#openedAt)
      this.log.info({ code: closeCodeOf(reason), reason: reason.type, durationMs }, 'WebSocket closed')
    }
    const registry = this.#route.registry
    const handler = this.#route.handler
    if (handler.terminate === undefined) {
      registry.remove(this)
      return
    }
    const failed = (error: unknown): void => {
      this.log.error({ err: error }, 'WebSocket terminate threw')
      registry.remove(this)
    }
    try {
      const settled = handler.terminate(reason, this.request, this.#state)
      if (settled !== undefined && typeof settled.then === 'function') {
        settled.then(() => registry.remove(this), failed)
        return
      }
    } catch (error) {
      failed(error)
      return
    }
    registry.remove(this)
  }

  // ---- options, flow control and timers -----------------------------------

  #setOptions (live: LiveOptions): void {
    this.#options = { ...this.#options }
    for (const [key, value] of Object.entries(live) as Array<[keyof LiveOptions, number | undefined]>) {
      if (value !== undefined) this.#options[key] = value
    }
    if (live.idleTimeout !== undefined || live.pingInterval !== undefined) this.#armIdleTimer()
    if (live.maxFrameSize !== undefined) this.#applyReceiverLimits()
  }

  #applyReceiverLimits (): void {
    const internals = internalsOf(this.#ws)
    const maxPayload = this.#options.maxFrameSize === Infinity ? 0 : this.#options.maxFrameSize
    internals._receiver._maxPayload = maxPayload
    internals._receiver._skipUTF8Validation = !this.#options.validateUtf8
    // permessage-deflate checks the inflated size against its own copy of the limit
    const deflate = internals._extensions['permessage-deflate']
    if (deflate !== undefined) deflate._maxPayload = maxPayload
  }

  #setActive (active: boolean): void {
    this.#setPaused(PAUSED_BY_HANDLER, !active)
    if (active) this.#releaseHeld() // we are inside a callback: the drain loop runs them next
  }

  /** Held frames go back to the head of the mailbox: they were read before what waits there. */
  #releaseHeld (): void {
    const held = this.#held
    if (held === undefined) return
    this.#held = undefined
    const items: unknown[] = []
    for (const frame of held) {
      items.push(FRAME, frame)
      this.#queuedBytes += sizeOf(frame)
    }
    ;(this.#queue ??= []).splice(this.#head, 0, ...items)
  }

  #setPaused (bit: number, on: boolean): void {
    const before = this.#paused
    this.#paused = on ? before | bit : before & ~bit
    if (before === 0 && this.#paused !== 0) this.#ws.pause()
    else if (before !== 0 && this.#paused === 0) this.#ws.resume()
  }

  /**
   * Cowboy's idle timeout, and our heartbeat, on one timer: only received bytes (socket data,
   * even a partial frame or a pong) count as life. After `pingInterval` ms of silence the server
   * pings (again every `pingInterval`); after `idleTimeout` ms of silence it closes.
   */
  #armIdleTimer (): void {
    clearTimeout(this.#idleTimer)
    this.#idleTimer = undefined
    this.#silentMs = 0
    const { idleTimeout, pingInterval } = this.#options
    const pinging = pingInterval > 0 && (idleTimeout === 0 || pingInterval < idleTimeout)
    this.#tickMs = pinging ? pingInterval : idleTimeout
    if (this.#tickMs === 0) return
    const socket = internalsOf(this.#ws)._socket
    if (socket.listeners('data').indexOf(Connection.#onSocketData) === -1) socket.on('data', Connection.#onSocketData)
    this.#idleTimer = setTimeout(Connection.#onSilence, this.#tickMs, this).unref()
  }

  static #onSilence (connection: Connection): void {
    const { idleTimeout, pingInterval } = connection.#options
    const silent = connection.#silentMs += connection.#tickMs
    if (idleTimeout !== 0 && silent >= idleTimeout) {
      connection.#close(CloseCode.NORMAL, '', { type: 'timeout' })
      return
    }
    connection.#ws.ping()
    // The last stretch may be shorter than pingInterval, so that the idle timeout stays exact.
    const next = idleTimeout === 0 ? pingInterval : Math.min(pingInterval, idleTimeout - silent)
    if (next === connection.#tickMs) {
      connection.#idleTimer!.refresh()
    } else {
      connection.#tickMs = next
      connection.#idleTimer = setTimeout(Connection.#onSilence, next, connection).unref()
    }
  }

  static #onSocketData (this: Slot): void {
    const connection = this[kConnection]!
    if (connection.#silentMs === 0) {
      connection.#idleTimer?.refresh()
    } else if (connection.#endReason === undefined) {
      connection.#armIdleTimer() // data after a ping: back to the full period
    }
  }

  #startTimer (ms: number, message: unknown, wrap: boolean): TimerRef {
    if (!(Number.isFinite(ms) && ms >= 0)) throw new InvalidTimerError(String(ms))
    const ref = ++lastTimerRef
    if (this.#closed) return ref
    this.#timers ??= new Map()
    this.#timers.set(ref, setTimeout(Connection.#onTimer, ms, this, ref, message, wrap))
    return ref
  }

  // ---- listeners, shared by every connection (no closure per connection) ----

  static #onTimer (connection: Connection, ref: TimerRef, message: unknown, wrap: boolean): void {
    connection.#timers?.delete(ref)
    connection.#deliver(INFO, wrap ? { type: 'timeout', ref, message } : message)
  }

  static #retryHibernate (connection: Connection, delay: number): void {
    connection.#hibernateTimer = undefined
    if (connection.#endReason !== undefined || releaseIdleResources(connection.#ws)) return
    // Still busy: ws's zlib queue runs 10 jobs at a time, so under load this can take a while.
    const next = Math.min(delay * 2, 1024)
    connection.#hibernateTimer = setTimeout(Connection.#retryHibernate, next, connection, next).unref()
  }

  static #received (ws: WebSocket, frame: InFrame<unknown>): void {
    const connection = (ws as Slot)[kConnection]!
    if (frameInChannel.hasSubscribers) frameInChannel.publish({ ctx: connection, frame })
    connection.#deliver(FRAME, frame)
  }

  static #onMessage (this: WebSocket, data: Buffer, isBinary: boolean): void {
    const json = (this as Slot)[kConnection]!.#route.json
    if (json === undefined) {
      Connection.#received(this, isBinary ? { type: 'binary', data } : { type: 'text', data: data.toString() })
      return
    }
    const read = json.read(isBinary ? undefined : data.toString())
    if ('type' in read) {
      Connection.#received(this, read)
      return
    }
    const connection = (this as Slot)[kConnection]!
    // Bad input, as the route chose: an error frame (in order, through the mailbox), or a close.
    if (json.onInvalid === 'error-frame') connection.#deliver(REFUSED, read)
    else connection.#close(read.code, read.reason, { type: 'error', code: read.code, error: new InvalidMessageError(read.reason) })
  }

  static #onPing (this: WebSocket, data: Buffer): void {
    Connection.#received(this, { type: 'ping', data })
  }

  static #onPong (this: WebSocket, data: Buffer): void {
    Connection.#received(this, { type: 'pong', data })
  }

  static #onConclude (this: Slot, code: number, reason: Buffer): void {
    const remote = { type: 'remote', code: code === CloseCode.NO_STATUS ? undefined : code, reason: reason.toString() } as const
    this[kConnection]!.#end(remote, true)
  }

  static #onClose (this: WebSocket): void {
    // Without a close frame before it (that ended the connection already), the socket just went away.
    const connection = (this as Slot)[kConnection]!
    connection.#end({ type: 'closed' }, true)
  }

  static #onError (this: WebSocket, error: Error): void {
    // ws has already sent the close frame with this code; frames queued before it still run.
    const connection = (this as Slot)[kConnection]!
    connection.#end({ type: 'error', code: closeCodeOfWsError(error), error }, true)
  }
}
