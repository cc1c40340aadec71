/**
 * One upgraded connection: an actor with a mailbox, in the manner of a cowboy_websocket process.
 * Here: its phases, the loop that runs one callback at a time, and the command interpreter.
 * Its other parts have their own modules: what `ctx` offers (context.ts), the mailbox and flow
 * control (mailbox.ts), ws's events (listeners.ts), the idle timeout and heartbeat
 * (heartbeat.ts), the handler's timers (timers.ts), hibernate (hibernate.ts), result checks
 * (results.ts), the run queue (run-queue.ts); socket writes are the wire's (wire/writes.ts).
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
 *
 * Where outside events enter (ws's events, the socket's data, timers, promises the handler
 * returned, queued posts), a throw is caught here or in listeners.ts and becomes a logged close
 * with 1011 of this one connection (`kFault`), never a process crash. Code the app hands us runs
 * on its own stack: on a ws event or timer of this connection, or from the run queue (a post,
 * the terminate that follows a close decided elsewhere), never inside the caller of `post`,
 * `publish`, `broadcast` or app.close().
 */
import type WebSocket from 'ws'
import type { BroadcastFrame } from '../core/types.js'
import { CloseCode, fitCloseReason } from '../core/close-codes.js'
import { resultProblem } from './results.js'
import { backlogOf, writeFrames, writeShared } from '../wire/writes.js'
import { ConnectionContext, kPhase, kQueued, kRoute, kShutdown, kWriteShared, kWs, type RouteContext, type Upgrade } from './context.js'
import { callbackChannel, frameOutChannel } from '../core/diagnostics.js'
import { InternalError, InvalidMessageError, InvalidResultError, OutboundOverflowError, RateLimitedError } from '../core/errors.js'
import { json } from '../core/frames.js'
import { Hibernation } from './hibernate.js'
import { type Beating, firstStep, kDue, kHeartbeat, kNext, kPrev, kSince, type Link, restartSilence, stepAfterPing, stopBeating } from './heartbeat.js'
import { kDataReceived, kFault, kInvalidJson, kPeerEnded, kReceived, listen, listenForData, type ConnectionEvents, type JsonProblem, type JsonReader } from './listeners.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { InboundRate } from './rate-limit.js'
import { resolveConnectionOptions, type ResolvedConnectionOptions } from '../core/options.js'
import { kRun, runSoon, type Runnable } from './run-queue.js'
import { kStreamFailed, kStreamMessage, type Puller } from './streams.js'
import { kTimerFired } from './timers.js'
import type { Commands, InFrame, LiveOptions, OutFrame, TerminateReason } from '../core/types.js'
import { applyReceiverLimits, internalsOf } from '../wire/ws-internals.js'

// What the loop is doing (a small integer: one field, stored inline).
/** Nothing runs or waits: the next item runs at once. */
const IDLE = 0
/** A callback is running or its promise is pending: what arrives waits in the mailbox. */
const BUSY = 1
/** A run is queued (run-queue.ts): what arrives waits behind it. */
const QUEUED = 2
/** A run is queued, and this side closed meanwhile: its message is dropped, as the mailbox's are. */
const QUEUED_DROPPED = 3

/** Callbacks run in a row from the mailbox before the loop yields to the event loop (see #drain). */
const DRAIN_BUDGET = 128

/** The queued run's payload when it only drains (and terminates): no message to deliver. */
const kDrainOnly = Symbol('fastify-ws-handlers.drain-only')

/** The callback a mailbox item ran, for log lines and errors: a JSON route's error frame runs its `onInvalid`. */
function callbackName (kind: MailKind): string {
  return kind === 'errorFrame' ? 'onInvalid' : kind
}

interface AsyncReactions {
  /** The callback whose promise is pending, for the crash log line. */
  pending: MailKind
  /** When it began (performance.now()), or -1 when nobody observed the callback channel. */
  startedAt: number
  readonly fulfilled: (result: unknown) => void
  readonly rejected: (error: unknown) => void
}

export class Connection extends ConnectionContext implements ConnectionEvents, Beating, Runnable {
  /** Set on leaving `open`: what terminate will be told. */
  #endReason: TerminateReason | undefined
  #state: unknown
  #options: ResolvedConnectionOptions
  /** Allocated when something first has to wait (most connections are idle). */
  #mailbox: Mailbox | undefined
  /** IDLE, BUSY, QUEUED or QUEUED_DROPPED (above). */
  #loop = BUSY
  // Its place among the connections waiting for a ping or the idle timeout (heartbeat.ts);
  // set in the constructor, so that every connection has the same shape.
  declare [kPrev]: Link | undefined
  declare [kNext]: Link | undefined
  declare [kDue]: number
  declare [kSince]: number
  /** What `hibernate` released and when (hibernate.ts); made on the first `hibernate`. */
  #hibernation: Hibernation | undefined
  /** An async handler's promise reactions, made on its first promise (one slot for sync handlers, not three). */
  #async: AsyncReactions | undefined

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    super(route, ws, upgrade)
    this.#state = upgrade.state
    this.#options = upgrade.options
    this[kPrev] = this[kNext] = undefined
    this[kDue] = this[kSince] = 0
    // A rate-limited connection keeps its bucket in its mailbox (no field for the others).
    if (upgrade.options.rateLimit !== false) (this.#mailbox = new Mailbox(ws)).rate = new InboundRate(upgrade.options.rateLimit)
    internalsOf(ws)._closeTimeout = route.closeTimeout
    listen(ws, this)
    applyReceiverLimits(ws, this.#options.maxFrameSize, this.#options.validateUtf8)
    this.#startHeartbeat()
    this.announceOpen(upgrade.raw)
    if (this.#dispatch('websocketInit', undefined, 0)) this.#drain()
  }

  /**
   * Refused (false) once the connection is ending or `mailboxLimit` items wait: the app's
   * producers are bounded too. `info` never runs on the caller's stack: an idle connection's run
   * is queued (run-queue.ts), a busy one's message waits in its mailbox.
   */
  post (message: unknown): boolean {
    if (this[kPhase] !== 'open') return false
    if (this.#loop === IDLE) {
      this.#loop = QUEUED
      runSoon(this, message)
      return true
    }
    if (this.#mailbox?.refuses(this.#options.mailboxLimit, this) === true) return false
    return this.#deliver('info', message)
  }

  /** The queued run: the posted message, then what waits; or, after a close, only the drain. */
  [kRun] (payload: unknown): void {
    const deliver = this.#loop === QUEUED && payload !== kDrainOnly
    this.#loop = BUSY
    try {
      if (!deliver || this.#dispatch('info', payload, 0)) this.#drain()
      /* c8 ignore start -- dispatch and drain catch what the app's code throws: this is for a bug of
         ours, which must not stop the run queue (every other connection's deliveries) */
    } catch (error) {
      this[kFault](error)
    }
    /* c8 ignore stop */
  }

  /**
   * Something of the plugin's own threw where an outside event entered (listeners.ts, the run
   * queue): this connection closes with 1011, the process goes on.
   */
  [kFault] (cause: unknown): void {
    const error = new InternalError(cause instanceof Error ? cause.message : String(cause), { cause })
    this.log.error({ err: error }, 'WebSocket event failed; closing with 1011')
    this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
  }

  // ---- what reaches it from ws, timers and the app --------------------------

  get jsonReader (): JsonReader | undefined {
    return this[kRoute].json?.read
  }

  [kReceived] (frame: InFrame<unknown>, bytes: number): void {
    if (this.#mailbox?.rate !== undefined && !this.#withinRate(this.#mailbox, bytes)) return
    this.#deliver('handle', frame, bytes)
  }

  /**
   * The rate limit takes each frame received: over it, reading pauses until the bucket refills
   * (the frame still runs: it was read), or the connection closes with 1008 (false: it does not).
   */
  #withinRate (mailbox: Mailbox, bytes: number): boolean {
    const rate = mailbox.rate!
    const wait = rate.take(bytes)
    if (wait === 0) return true
    if (rate.limit.onExceeded !== 'close') {
      // While this side holds the client back, its silence is ours: the idle timeout counts
      // again from the moment reading resumes (its pongs were waiting, unread).
      mailbox.pauseForRate(wait, this)
      return true
    }
    const error = new RateLimitedError(rate.describe())
    this.#close(CloseCode.POLICY_VIOLATION, 'rate limit exceeded', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return false
  }

  [kInvalidJson] (problem: JsonProblem, bytes: number): void {
    if (this.#mailbox?.rate !== undefined && !this.#withinRate(this.#mailbox, bytes)) return
    // As the route chose: a close now, or its answer (in order, through the mailbox).
    if (this[kRoute].json!.onInvalid === 'close') this.#close(problem.code, problem.reason, { type: 'error', code: problem.code, error: new InvalidMessageError(problem.reason) })
    else this.#deliver('errorFrame', problem)
  }

  [kPeerEnded] (reason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this.#mailbox?.releaseHeld() // frames read before the handler paused reading still run
    this.#end(reason)
  }

  [kTimerFired] (message: unknown): void {
    this.#deliver('info', message)
  }

  /** A stream's item (then, once its `info` has run, the pull of the next one), its end or its failure. */
  [kStreamMessage] (message: unknown, pullAfter: Puller | undefined): void {
    if (this.#deliver('info', message) && pullAfter !== undefined) this.#deliver('streamPull', pullAfter)
  }

  [kStreamFailed] (error: unknown): void {
    this.#crash('info', error)
  }

  /** Items waiting in the mailbox (metrics). */
  get [kQueued] (): number {
    return this.#mailbox?.size ?? 0
  }

  [kDataReceived] (): void {
    if (this[kPhase] === 'open') restartSilence(this, firstStep(this.#options.idleTimeout, this.#options.pingInterval))
  }

  /** `silentMs` of silence: the idle timeout closes, else a ping; then the next step (0: none). */
  [kHeartbeat] (silentMs: number): number {
    const { idleTimeout, pingInterval } = this.#options
    // Reading paused by the rate limit: the client may be talking, unheard; never idle-closed for it.
    if (this.#mailbox?.pausedForRate === true) return firstStep(idleTimeout, pingInterval)
    if (idleTimeout !== 0 && silentMs >= idleTimeout) {
      this.#close(CloseCode.NORMAL, '', { type: 'timeout' })
      return 0
    }
    try {
      this[kWs].ping()
    } catch (error) { // ws refuses a ping only before the open: a bug of ours, not a reason to stop the others' heartbeats
      this[kFault](error)
      return 0
    }
    return stepAfterPing(idleTimeout, pingInterval, silentMs)
  }

  /** A drain or app.close(): close with `code` now (1012, or 1001); terminate follows the callback in progress. */
  [kShutdown] (code: number): void {
    this.#close(code, '', { type: 'shutdown', code })
  }

  /**
   * A broadcast frame: written now when nothing runs or waits; else it waits in the mailbox
   * behind what was posted before it (publications and broadcasts keep their order for each
   * subscriber), or is missed when the mailbox is full, as a publication would be.
   */
  [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean {
    if (this[kPhase] !== 'open') return false
    if (this.#loop === IDLE) return this.#writeShared(encoded, frame)
    if (this.#mailbox?.refuses(this.#options.mailboxLimit, this) === true) return false
    return this.#deliver('broadcast', [encoded, frame])
  }

  #writeShared (encoded: Buffer, frame: BroadcastFrame): boolean {
    // readyState: the peer ended TCP and ws has not said 'close' yet.
    if (this[kPhase] !== 'open' || this[kWs].readyState !== this[kWs].OPEN || this.#closedForOverflow()) return false
    writeShared(this[kWs], encoded, frame)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: [{ type: frame.binary ? 'binary' : 'text', data: frame.data }] })
    return true
  }

  // ---- the loop: one callback at a time --------------------------------------

  /** `bytes`: a frame's size as received, for the mailbox's byte bound (0 for other items). */
  #deliver (kind: MailKind, payload: unknown, bytes = 0): boolean {
    if (this[kPhase] !== 'open') return false
    if (this.#loop !== IDLE) {
      (this.#mailbox ??= new Mailbox(this[kWs])).push(kind, payload, bytes, this.#options)
    } else {
      this.#loop = BUSY
      if (this.#dispatch(kind, payload, bytes)) this.#drain()
    }
    return true
  }

  /**
   * Run what waits until the mailbox is empty or a callback goes async; then terminate if
   * closing. At most DRAIN_BUDGET callbacks in a row: then the rest waits for the event loop's
   * next turn, so that a handler that keeps posting to itself neither starves the process
   * (sockets, timers, other connections) nor writes without bound before its socket can push
   * back (this tick's batch is written at its end, and maxBufferedBytes judges what is left).
   */
  #drain (): void {
    let budget = DRAIN_BUDGET
    // Re-read each turn: a callback may create the mailbox (a post).
    for (let mailbox = this.#mailbox; mailbox !== undefined && mailbox.size !== 0; mailbox = this.#mailbox) {
      if (budget-- === 0) {
        setImmediate(Connection.#drainSafely, this)
        return
      }
      const kind = mailbox.peekKind()
      const bytes = mailbox.peekBytes()
      if (!this.#dispatch(kind, mailbox.take(this.#options), bytes)) return
    }
    this.#loop = IDLE
    if (this[kPhase] === 'closing') this.#terminate()
  }

  /**
   * #drain where no caller of ours is below to catch (a timer, a promise's reaction): it must not
   * throw, even for a bug of ours (a promise's would be an unhandled rejection: a crash).
   */
  static #drainSafely (self: Connection): void {
    try {
      self.#drain()
      /* c8 ignore start -- #dispatch and #terminate catch what the app's code throws */
    } catch (error) {
      self[kFault](error)
    }
    /* c8 ignore stop */
  }

  /**
   * The one place that calls websocketInit, handle and info: a throw (of the callback, or of
   * reading its result) becomes close 1011 and a `crash`, a promise makes the mailbox wait.
   * Returns false while a callback is pending.
   */
  #dispatch (kind: MailKind, payload: unknown, bytes: number): boolean {
    if ((kind === 'handle' || kind === 'errorFrame') && this[kPhase] === 'open' && this.#mailbox?.inactive === true) {
      // Read in the same TCP chunk before the handler paused: it waits for `active: true`
      // (unless the peer has ended the connection: then it runs, as queued frames do). A JSON
      // route's error frame waits with the frames around it, so replies keep the client's order.
      this.#mailbox.hold(kind, payload, bytes)
      return true
    }
    if (kind === 'errorFrame') {
      this.#answerInvalid(payload as JsonProblem)
      return true
    }
    if (kind === 'streamPull') {
      (payload as Puller).pull()
      return true
    }
    if (kind === 'broadcast') {
      const [encoded, frame] = payload as [Buffer, BroadcastFrame]
      this.#writeShared(encoded, frame)
      return true
    }
    const handler = this[kRoute].handler
    // Observed (metrics): how long the callback ran, an async one until it settled.
    const startedAt = callbackChannel.hasSubscribers && handler[kind] !== undefined ? performance.now() : -1
    try {
      let result: unknown
      if (kind === 'handle') result = handler.handle?.(payload as InFrame, this.#state, this)
      else if (kind === 'info') result = handler.info?.(payload, this.#state, this)
      else result = handler.websocketInit?.(this.#state, this)
      if (result !== undefined && result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
        const reactions = (this.#async ??= this.#reactions())
        reactions.pending = kind
        reactions.startedAt = startedAt
        ;(result as PromiseLike<unknown>).then(reactions.fulfilled, reactions.rejected)
        return false
      }
      if (result !== undefined) this.#interpret(kind, result)
    } catch (error) {
      this.#ran(kind, startedAt, true)
      this.#crash(kind, error)
      return true
    }
    this.#ran(kind, startedAt, false)
    return true
  }

  /** A JSON route's answer to a message it refused: the standard error frame, or the route's own frames. */
  #answerInvalid (problem: JsonProblem): void {
    const onInvalid = this[kRoute].json!.onInvalid
    if (onInvalid === 'error-frame') {
      this.#write(json({ type: 'error', code: problem.code, message: problem.reason }))
      return
    }
    let reply: unknown
    try {
      reply = (onInvalid as Exclude<typeof onInvalid, string>)(problem)
    } catch (error) {
      this.#crash('errorFrame', error)
      return
    }
    // Checked as a callback's reply is: a bad one closes with 1011 and says what was expected.
    this.#interpret('errorFrame', { reply })
  }

  /**
   * The command interpreter: the whole result is checked first (nothing of an invalid one
   * applies), then each command present applies, in the order documented on `Commands`.
   */
  #interpret (callback: MailKind, result: unknown): void {
    const problem = resultProblem(result)
    if (problem !== undefined) {
      const name = callbackName(callback)
      const error = new InvalidResultError(name, problem)
      this.log.error({ err: error }, `WebSocket ${name} returned an invalid result; closing with 1011`)
      this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
      return
    }
    const commands = result as Commands<unknown>
    if (commands.state !== undefined) this.#state = commands.state
    // The gate: once the connection is ending (a callback that settles after the peer left or
    // after a close), only its state is kept, for terminate. Options would re-arm the heartbeat
    // of a closed socket, `active: true` would run held frames, and nothing may be written.
    if (this[kPhase] !== 'open') return
    if (commands.options !== undefined) this.#setOptions(commands.options)
    if (commands.active !== undefined) (this.#mailbox ??= new Mailbox(this[kWs])).setActive(commands.active)
    const hibernation = commands.hibernate === true ? (this.#hibernation ??= new Hibernation(this[kWs])) : undefined
    const onSent = hibernation?.callbackFor(commands.reply)
    if (commands.reply !== undefined) this.#write(commands.reply, onSent)
    if (commands.stop === true) this.#close(CloseCode.NORMAL, '', { type: 'stop', code: CloseCode.NORMAL, reason: '' })
    if (hibernation !== undefined && this[kPhase] === 'open') hibernation.request(onSent !== undefined)
  }

  #crash (callback: MailKind, error: unknown): void {
    this.log.error({ err: error }, `WebSocket ${callbackName(callback)} threw; closing with 1011`)
    this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'crash', error })
  }

  #write (reply: OutFrame | readonly OutFrame[], onSent?: () => void): void {
    // Nothing is sent once the connection is ending: after a close frame, or to a closed peer.
    if (this[kPhase] !== 'open' || this.#closedForOverflow()) return
    const closeFrame = writeFrames(this[kWs], reply, onSent)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: reply })
    if (closeFrame !== undefined) {
      const code = closeFrame.code ?? CloseCode.NORMAL
      const reason = fitCloseReason(closeFrame.reason ?? '') // terminate is told what was sent
      this.#close(code, reason, { type: 'stop', code, reason })
    }
  }

  /**
   * A slow reader has not taken what was sent before: the backlog before a write counts (replies
   * and broadcasts alike), so one large reply is not mistaken for it. Over the limit: close 1008.
   */
  #closedForOverflow (): boolean {
    const backlog = backlogOf(this[kWs]) // this tick's batched replies are not a backlog
    if (backlog <= this.#options.maxBufferedBytes) return false
    const error = new OutboundOverflowError(backlog, this.#options.maxBufferedBytes)
    this.#close(CloseCode.POLICY_VIOLATION, 'outbound buffer full', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return true
  }

  // ---- open → closing → closed ---------------------------------------------

  /** A close this side decides: the close frame goes out now and what waits is dropped. */
  #close (code: number, reason: string, terminateReason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this[kWs].close(code, fitCloseReason(reason))
    this.#mailbox?.dropForClose()
    if (this.#loop === QUEUED) this.#loop = QUEUED_DROPPED
    this.#end(terminateReason)
  }

  /**
   * Enter `closing`: terminate runs once the callback in progress and what waits are done; when
   * nothing runs, from the run queue (a close decided in a broadcast loop or by app.close() does
   * not run terminate on that caller's stack).
   */
  #end (reason: TerminateReason): void {
    this[kPhase] = 'closing'
    this.#endReason = reason
    stopBeating(this)
    this.#hibernation?.cancel()
    this.#mailbox?.stopRate()
    if (this.#loop === IDLE) {
      this.#loop = QUEUED
      runSoon(this, kDrainOnly)
    }
  }

  #terminate (): void {
    this[kPhase] = 'closed'
    const reason = this.#endReason!
    const done = (): void => { this[kRoute].registry.remove(this) }
    const failed = (error: unknown): void => {
      this.log.error({ err: error }, 'WebSocket terminate threw')
      done()
    }
    let settled: Promise<void> | void
    try {
      this.announceClose(reason)
    } catch (error) { // the app's logger: terminate runs all the same
      this.log.error({ err: error }, 'WebSocket close line failed')
    }
    try {
      settled = this[kRoute].handler.terminate?.(reason, this.request, this.#state)
    } catch (error) {
      failed(error)
      return
    }
    if (settled !== undefined && typeof settled.then === 'function') settled.then(done, failed)
    else done()
  }

  /** Tell the callback channel's observers (`startedAt` -1: nobody observed when it began). */
  #ran (callback: MailKind, startedAt: number, failed: boolean): void {
    if (startedAt >= 0 && callbackChannel.hasSubscribers) callbackChannel.publish({ ctx: this, callback, durationMs: performance.now() - startedAt, failed })
  }

  /** Made once per connection, not per promise. */
  #reactions (): AsyncReactions {
    const reactions: AsyncReactions = {
      pending: 'websocketInit',
      startedAt: -1,
      fulfilled: (settled) => {
        let failed = false
        try {
          if (settled !== undefined) this.#interpret(reactions.pending, settled)
        } catch (error) {
          failed = true
          this.#crash(reactions.pending, error)
        }
        this.#ran(reactions.pending, reactions.startedAt, failed)
        Connection.#drainSafely(this)
      },
      rejected: (error) => {
        this.#ran(reactions.pending, reactions.startedAt, true)
        this.#crash(reactions.pending, error)
        Connection.#drainSafely(this)
      }
    }
    return reactions
  }

  // ---- options ---------------------------------------------------------------

  #setOptions (live: LiveOptions): void {
    this.#options = resolveConnectionOptions(this.#options, live)
    if (live.idleTimeout !== undefined || live.pingInterval !== undefined) this.#startHeartbeat()
    if (live.maxFrameSize !== undefined) applyReceiverLimits(this[kWs], this.#options.maxFrameSize, this.#options.validateUtf8)
  }

  /** (Re)start counting silence from now with the current periods; both 0: no heartbeat. */
  #startHeartbeat (): void {
    const step = firstStep(this.#options.idleTimeout, this.#options.pingInterval)
    if (step !== 0) listenForData(this[kWs])
    restartSilence(this, step)
  }
}
