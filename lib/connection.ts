/**
 * One upgraded connection: an actor with a mailbox, in the manner of a cowboy_websocket process.
 * Its parts, each in its own module: the mailbox (mailbox.ts), ws's events (listeners.ts), the
 * idle timeout and heartbeat (idle-timer.ts), the handler's timers (timers.ts), hibernate
 * (hibernate.ts), frame checks and writes (commands.ts). Here: the phases, the loop that runs
 * one callback at a time, and the command interpreter.
 *
 *             upgrade ── websocketInit is the mailbox's first item
 *                ▼
 *   ┌────────── open ──────────┐  frames and infos: one callback at a time, in arrival order
 *   │ peer close, protocol     │ stop, close command, crash, bad result,
 *   │ error, socket dropped    │ idle timeout, outbound overflow, app.close()
 *   │ (what is queued still    │ (a close frame goes out now; what is queued
 *   │  runs, replies dropped)  │  is dropped)
 *   ▼                          ▼
 *   └───────► closing ◄────────┘  nothing new enters the mailbox, nothing is written
 *                │  after the callback in progress (and what is kept of the queue)
 *                ▼
 *             closed              terminate(reason) ran exactly once; timers are cancelled
 */
import type { FastifyBaseLogger } from 'fastify'
import type WebSocket from 'ws'
import type { BroadcastFrame } from './adapter.js'
import { CloseCode } from './close-codes.js'
import { resultProblem, writeFrames, writeShared } from './commands.js'
import { closeChannel, closeLogFields, frameOutChannel, logsInfo, openChannel } from './diagnostics.js'
import { InvalidMessageError, InvalidResultError, OutboundOverflowError } from './errors.js'
import { json } from './frames.js'
import { DeferredRelease, releaseIdleResources } from './hibernate.js'
import { IdleTimer, kIdleTimeout, type IdleTimerOwner } from './idle-timer.js'
import type { JsonProblem, JsonReader } from './json-messages.js'
import { kInvalidJson, kPeerEnded, kReceived, listen, type ConnectionEvents } from './listeners.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { resolveConnectionOptions, type ResolvedConnectionOptions } from './options.js'
import type { Lease } from './registry.js'
import type { RouteContext, Upgrade } from './route-context.js'
import { Timers, kTimerFired, nextTimerRef, type TimerOwner } from './timers.js'
import type { Commands, InFrame, LiveOptions, OutFrame, RequestSnapshot, TerminateReason, TimerRef, WebSocketContext } from './types.js'
import { applyReceiverLimits, internalsOf } from './ws-internals.js'

export const kShutdown = Symbol('fastify-ws-handlers.shutdown')
export const kWriteShared = Symbol('fastify-ws-handlers.write-shared')
export const kLease = Symbol('fastify-ws-handlers.lease')

/** See the diagram above. */
type Phase = 'open' | 'closing' | 'closed'

const noTopics: readonly string[] = Object.freeze([])

/** The interpreter applies every command; this stops compiling when `Commands` gains one it does not. */
type Interpreted = 'state' | 'options' | 'active' | 'reply' | 'stop' | 'hibernate'
export const everyCommandInterpreted: [keyof Commands<unknown>] extends [Interpreted] ? true : never = true

export class Connection implements WebSocketContext<unknown>, ConnectionEvents, IdleTimerOwner, TimerOwner {
  readonly id: string
  readonly request: RequestSnapshot
  readonly [kLease]: Lease
  readonly #route: RouteContext
  readonly #ws: WebSocket
  #phase: Phase = 'open'
  /** Set on leaving `open`: what terminate will be told. */
  #endReason: TerminateReason | undefined
  #state: unknown
  #options: ResolvedConnectionOptions
  /** Allocated when something first has to wait (most connections are idle). */
  #mailbox: Mailbox | undefined
  /** A callback is running or its promise is pending: what arrives waits in the mailbox. */
  #running = true
  /** The callback whose promise is pending, for the crash log line. */
  #pending: MailKind = 'websocketInit'
  #idleTimer: IdleTimer | undefined
  #timers: Timers | undefined
  #release: DeferredRelease | undefined
  #log: FastifyBaseLogger | undefined
  readonly #openedAt = performance.now()
  /** Few per connection: an array is the smallest. */
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
    internalsOf(ws)._closeTimeout = route.closeTimeout
    listen(ws, this)
    applyReceiverLimits(ws, this.#options.maxFrameSize, this.#options.validateUtf8)
    this.#armIdleTimer()
    route.registry.add(this)
    if (logsInfo(route.log)) this.log.info({ ip: this.request.ip, protocol: this.request.protocol }, 'WebSocket open')
    if (openChannel.hasSubscribers) openChannel.publish({ ctx: this, request: upgrade.raw })
    if (this.#dispatch('websocketInit', undefined)) this.#drain()
  }

  // ---- the context callbacks see (ctx) --------------------------------------

  get alive (): boolean {
    return this.#phase !== 'closed'
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
    const mailbox = this.#mailbox
    if (this.#phase === 'open' && this.#running && mailbox !== undefined && mailbox.size >= this.#options.mailboxLimit) {
      if (!mailbox.refusing) {
        mailbox.refusing = true
        this.log.warn({ code: 'FST_WS_MAILBOX_FULL', mailboxLimit: this.#options.mailboxLimit }, 'WebSocket mailbox full: posts are refused until it drains')
      }
      return false
    }
    return this.#deliver('info', message)
  }

  sendAfter (ms: number, message: unknown): TimerRef {
    return this.#phase === 'closed' ? nextTimerRef(ms) : (this.#timers ??= new Timers(this)).start(ms, message, false)
  }

  startTimer (ms: number, message: unknown): TimerRef {
    return this.#phase === 'closed' ? nextTimerRef(ms) : (this.#timers ??= new Timers(this)).start(ms, message, true)
  }

  cancelTimer (ref: TimerRef): boolean {
    return this.#timers?.cancel(ref) ?? false
  }

  get topics (): readonly string[] {
    return this.#topics ?? noTopics
  }

  subscribe (topic: string): boolean {
    if (this.#phase === 'closed' || !this.#route.registry.subscribe(this, topic)) return false
    // A literal: an empty array's first push reserves room for 17 (+136 B per connection).
    if (this.#topics === undefined) this.#topics = [topic]
    else this.#topics.push(topic)
    return true
  }

  unsubscribe (topic: string): boolean {
    if (!this.#route.registry.unsubscribe(this, topic)) return false
    this.#topics!.splice(this.#topics!.indexOf(topic), 1)
    return true
  }

  // ---- what reaches it from ws, timers and the app --------------------------

  get jsonReader (): JsonReader | undefined {
    return this.#route.json?.read
  }

  [kReceived] (frame: InFrame<unknown>): void {
    this.#deliver('handle', frame)
  }

  [kInvalidJson] (problem: JsonProblem): void {
    // As the route chose: an error frame (in order, through the mailbox), or a close.
    if (this.#route.json!.onInvalid === 'error-frame') this.#deliver('errorFrame', problem)
    else this.#close(problem.code, problem.reason, { type: 'error', code: problem.code, error: new InvalidMessageError(problem.reason) })
  }

  [kPeerEnded] (reason: TerminateReason): void {
    if (this.#phase !== 'open') return
    this.#mailbox?.releaseHeld() // frames read before the handler paused reading still run
    this.#end(reason)
  }

  [kTimerFired] (message: unknown): void {
    this.#deliver('info', message)
  }

  [kIdleTimeout] (): void {
    this.#close(CloseCode.NORMAL, '', { type: 'timeout' })
  }

  /** app.close(): close with 1001 now; terminate follows the callback in progress. */
  [kShutdown] (): void {
    this.#close(CloseCode.GOING_AWAY, '', { type: 'shutdown' })
  }

  /** `broadcast`: a frame encoded once for every subscriber, without running the handler. False when not written. */
  [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean {
    // readyState: the peer ended TCP and ws has not said 'close' yet.
    if (this.#phase !== 'open' || this.#ws.readyState !== this.#ws.OPEN || this.#closedForOverflow()) return false
    writeShared(this.#ws, encoded, frame)
    return true
  }

  // ---- the loop: one callback at a time --------------------------------------

  #deliver (kind: MailKind, payload: unknown): boolean {
    if (this.#phase !== 'open') return false
    if (this.#running) {
      (this.#mailbox ??= new Mailbox(this.#ws)).push(kind, payload, this.#options)
    } else {
      this.#running = true
      if (this.#dispatch(kind, payload)) this.#drain()
    }
    return true
  }

  /** Run what waits until the mailbox is empty or a callback goes async; then terminate if closing. */
  #drain (): void {
    // Re-read each turn: a callback may create the mailbox (a post).
    for (let mailbox = this.#mailbox; mailbox !== undefined && mailbox.size !== 0; mailbox = this.#mailbox) {
      const kind = mailbox.peekKind()
      if (!this.#dispatch(kind, mailbox.take(this.#options))) return
    }
    this.#running = false
    if (this.#phase === 'closing') this.#terminate()
  }

  /**
   * The one place that calls websocketInit, handle and info: a throw becomes close 1011 and a
   * `crash`, a promise makes the mailbox wait. Returns false while a callback is pending.
   */
  #dispatch (kind: MailKind, payload: unknown): boolean {
    if (kind === 'errorFrame') {
      const { code, reason } = payload as JsonProblem
      this.#write(json({ type: 'error', code, message: reason }))
      return true
    }
    if (kind === 'handle' && this.#phase === 'open' && this.#mailbox?.inactive === true) {
      // Read in the same TCP chunk before the handler paused: it waits for `active: true`
      // (unless the peer has ended the connection: then it runs, as queued frames do).
      this.#mailbox.hold(payload as InFrame<unknown>)
      return true
    }
    const handler = this.#route.handler
    let result: unknown
    try {
      if (kind === 'handle') result = handler.handle?.(payload as InFrame, this.#state, this)
      else if (kind === 'info') result = handler.info?.(payload, this.#state, this)
      else result = handler.websocketInit?.(this.#state, this)
    } catch (error) {
      this.#crash(kind, error)
      return true
    }
    if (result === undefined) return true
    if (result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
      this.#pending = kind
      this.#onFulfilled ??= (settled) => {
        if (settled !== undefined) this.#interpret(this.#pending, settled)
        this.#drain()
      }
      this.#onRejected ??= (error) => {
        this.#crash(this.#pending, error)
        this.#drain()
      }
      ;(result as PromiseLike<unknown>).then(this.#onFulfilled, this.#onRejected)
      return false
    }
    this.#interpret(kind, result)
    return true
  }

  /**
   * The command interpreter: the whole result is checked first (nothing of an invalid one
   * applies), then each command present applies, in the order documented on `Commands`.
   */
  #interpret (callback: MailKind, result: unknown): void {
    const problem = resultProblem(result)
    if (problem !== undefined) {
      const error = new InvalidResultError(callback, problem)
      this.log.error({ err: error }, `WebSocket ${callback} returned an invalid result; closing with 1011`)
      this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
      return
    }
    const commands = result as Commands<unknown>
    if (commands.state !== undefined) this.#state = commands.state
    if (commands.options !== undefined) this.#setOptions(commands.options)
    if (commands.active !== undefined) (this.#mailbox ??= new Mailbox(this.#ws)).setActive(commands.active)
    if (commands.reply !== undefined) this.#write(commands.reply)
    if (commands.stop === true) this.#close(CloseCode.NORMAL, '', { type: 'stop', code: CloseCode.NORMAL, reason: '' })
    if (commands.hibernate === true) this.#hibernate()
  }

  #crash (callback: MailKind, error: unknown): void {
    this.log.error({ err: error }, `WebSocket ${callback} threw; closing with 1011`)
    this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'crash', error })
  }

  #write (reply: OutFrame | readonly OutFrame[]): void {
    // Nothing is sent once the connection is ending: after a close frame, or to a closed peer.
    if (this.#phase !== 'open' || this.#closedForOverflow()) return
    const closeFrame = writeFrames(this.#ws, reply)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: reply })
    if (closeFrame !== undefined) {
      const code = closeFrame.code ?? CloseCode.NORMAL
      const reason = closeFrame.reason ?? ''
      this.#close(code, reason, { type: 'stop', code, reason })
    }
  }

  /**
   * A slow reader has not taken what was sent before: the backlog before a write counts (replies
   * and broadcasts alike), so one large reply is not mistaken for it. Over the limit: close 1008.
   */
  #closedForOverflow (): boolean {
    const backlog = this.#ws.bufferedAmount
    if (backlog <= this.#options.maxBufferedBytes) return false
    const error = new OutboundOverflowError(backlog, this.#options.maxBufferedBytes)
    this.#close(CloseCode.POLICY_VIOLATION, 'outbound buffer full', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return true
  }

  // ---- open → closing → closed ---------------------------------------------

  /** A close this side decides: the close frame goes out now and what waits is dropped. */
  #close (code: number, reason: string, terminateReason: TerminateReason): void {
    if (this.#phase !== 'open') return
    this.#ws.close(code, reason)
    this.#mailbox?.dropForClose()
    this.#end(terminateReason)
  }

  /** Enter `closing`: terminate runs once the callback in progress and what waits are done. */
  #end (reason: TerminateReason): void {
    this.#phase = 'closing'
    this.#endReason = reason
    this.#idleTimer?.stop()
    this.#release?.cancel()
    if (!this.#running) {
      this.#running = true
      this.#drain()
    }
  }

  #terminate (): void {
    this.#phase = 'closed'
    const reason = this.#endReason!
    const registry = this.#route.registry
    for (const topic of this.#topics ?? noTopics) registry.unsubscribe(this, topic)
    this.#topics = undefined
    this.#timers?.clear()
    if (closeChannel.hasSubscribers) closeChannel.publish({ ctx: this, reason })
    if (logsInfo(this.#route.log)) this.log.info(closeLogFields(reason, this.#openedAt), 'WebSocket closed')
    const done = (): void => { registry.remove(this) }
    const failed = (error: unknown): void => {
      this.log.error({ err: error }, 'WebSocket terminate threw')
      done()
    }
    let settled: Promise<void> | void
    try {
      settled = this.#route.handler.terminate?.(reason, this.request, this.#state)
    } catch (error) {
      failed(error)
      return
    }
    if (settled !== undefined && typeof settled.then === 'function') settled.then(done, failed)
    else done()
  }

  // ---- options and hibernate -------------------------------------------------

  #setOptions (live: LiveOptions): void {
    this.#options = resolveConnectionOptions(this.#options, live)
    if (live.idleTimeout !== undefined || live.pingInterval !== undefined) this.#armIdleTimer()
    if (live.maxFrameSize !== undefined) applyReceiverLimits(this.#ws, this.#options.maxFrameSize, this.#options.validateUtf8)
  }

  #armIdleTimer (): void {
    const { idleTimeout, pingInterval } = this.#options
    if (this.#idleTimer === undefined && idleTimeout === 0 && pingInterval === 0) return
    (this.#idleTimer ??= new IdleTimer(this, this.#ws)).arm(idleTimeout, pingInterval)
  }

  /** Release what can be rebuilt on the next message (hibernate.ts), once zlib is idle. */
  #hibernate (): void {
    if (this.#phase !== 'open' || this.#release?.pending === true) return
    if (!releaseIdleResources(this.#ws)) this.#release = new DeferredRelease(this.#ws)
  }
}
