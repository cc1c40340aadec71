/**
 * One upgraded connection: an actor with a mailbox, in the manner of a cowboy_websocket process.
 * It is built in layers: its life (phases, what ends it, heartbeat and options: lifecycle.ts),
 * the command interpreter and writes (interpreter.ts), and here the loop that runs one callback
 * at a time and the inbound gate (the rate limit, a JSON route's refused messages, frames held
 * by `active: false`). Its other parts have their own modules: what `ctx` offers (context.ts),
 * the mailbox and flow control (mailbox.ts), ws's events (listeners.ts), the heartbeat lists
 * (heartbeat.ts), the handler's timers (timers.ts), hibernate (hibernate.ts), result checks
 * (results.ts), the run queue (run-queue.ts); socket writes are the wire's (wire/writes.ts).
 *
 * Where outside events enter (ws's events, the socket's data, timers, promises the handler
 * returned, queued posts), a throw is caught here or in listeners.ts and becomes a logged close
 * with 1011 of this one connection (`kFault`), never a process crash. Code the app hands us runs
 * on its own stack: on a ws event or timer of this connection, or from the run queue (a post,
 * the terminate that follows a close decided elsewhere), never inside the caller of `post`,
 * `publish`, `broadcast` or app.close().
 */
import type WebSocket from 'ws'
import type { BroadcastFrame, InFrame } from '../core/types.js'
import { CloseCode } from '../core/close-codes.js'
import { callbackChannel } from '../core/diagnostics.js'
import { InvalidMessageError, RateLimitedError } from '../core/errors.js'
import { applyReceiverLimits } from '../wire/ws-internals.js'
import { kPhase, kQueued, kRoute, kWs, type RouteContext, type Upgrade } from './context.js'
import { kFault, kInvalidJson, kReceived, listen, type ConnectionEvents, type JsonProblem, type JsonReader } from './listeners.js'
import { BUSY, IDLE, QUEUED, kClose, kCrash, kDrainOnly, kLoop, kMailbox, kOptions, kStartHeartbeat, kState, kTerminate } from './lifecycle.js'
import { CommandInterpreter, kAnswerInvalid, kDeliverBroadcast, kInterpret, kWriteSharedNow } from './interpreter.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { kRun, runSoon } from './run-queue.js'
import { kStreamFailed, kStreamMessage, type Puller } from './streams.js'
import { kTimerFired } from './timers.js'

/** Callbacks run in a row from the mailbox before the loop yields to the event loop (see #drain). */
const DRAIN_BUDGET = 128

interface AsyncReactions {
  /** The callback whose promise is pending, for the crash log line. */
  pending: MailKind
  /** When it began (performance.now()), or -1 when nobody observed the callback channel. */
  startedAt: number
  readonly fulfilled: (result: unknown) => void
  readonly rejected: (error: unknown) => void
}

export class Connection extends CommandInterpreter implements ConnectionEvents {
  /** An async handler's promise reactions, made on its first promise (one slot for sync handlers, not three). */
  #async: AsyncReactions | undefined

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    super(route, ws, upgrade)
    listen(ws, this)
    applyReceiverLimits(ws, this[kOptions].maxFrameSize, this[kOptions].validateUtf8)
    this[kStartHeartbeat]()
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
    if (this[kLoop] === IDLE) {
      this[kLoop] = QUEUED
      runSoon(this, message)
      return true
    }
    if (this[kMailbox]?.refuses(this[kOptions].mailboxLimit, this) === true) return false
    return this.#deliver('info', message)
  }

  /** The queued run: the posted message, then what waits; or, after a close, only the drain. */
  [kRun] (payload: unknown): void {
    const deliver = this[kLoop] === QUEUED && payload !== kDrainOnly
    this[kLoop] = BUSY
    try {
      if (!deliver || this.#dispatch('info', payload, 0)) this.#drain()
      /* c8 ignore start -- dispatch and drain catch what the app's code throws: this is for a bug of
         ours, which must not stop the run queue (every other connection's deliveries) */
    } catch (error) {
      this[kFault](error)
    }
    /* c8 ignore stop */
  }

  // ---- the inbound gate: what reaches it from ws, timers and streams ------------

  get jsonReader (): JsonReader | undefined {
    return this[kRoute].json?.read
  }

  [kReceived] (frame: InFrame<unknown>, bytes: number): void {
    if (this[kMailbox]?.rate !== undefined && !this.#withinRate(this[kMailbox], bytes)) return
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
    this[kClose](CloseCode.POLICY_VIOLATION, 'rate limit exceeded', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return false
  }

  [kInvalidJson] (problem: JsonProblem, bytes: number): void {
    if (this[kMailbox]?.rate !== undefined && !this.#withinRate(this[kMailbox], bytes)) return
    // As the route chose: a close now, or its answer (in order, through the mailbox).
    if (this[kRoute].json!.onInvalid === 'close') this[kClose](problem.code, problem.reason, { type: 'error', code: problem.code, error: new InvalidMessageError(problem.reason) })
    else this.#deliver('errorFrame', problem)
  }

  [kTimerFired] (message: unknown): void {
    this.#deliver('info', message)
  }

  /** A stream's item (then, once its `info` has run, the pull of the next one), its end or its failure. */
  [kStreamMessage] (message: unknown, pullAfter: Puller | undefined): void {
    if (this.#deliver('info', message) && pullAfter !== undefined) this.#deliver('streamPull', pullAfter)
  }

  [kStreamFailed] (error: unknown): void {
    this[kCrash]('info', error)
  }

  protected [kDeliverBroadcast] (encoded: Buffer, frame: BroadcastFrame): boolean {
    return this.#deliver('broadcast', [encoded, frame])
  }

  /** Items waiting in the mailbox (metrics). */
  get [kQueued] (): number {
    return this[kMailbox]?.size ?? 0
  }

  // ---- the loop: one callback at a time --------------------------------------

  /** `bytes`: a frame's size as received, for the mailbox's byte bound (0 for other items). */
  #deliver (kind: MailKind, payload: unknown, bytes = 0): boolean {
    if (this[kPhase] !== 'open') return false
    if (this[kLoop] !== IDLE) {
      (this[kMailbox] ??= new Mailbox(this[kWs])).push(kind, payload, bytes, this[kOptions])
    } else {
      this[kLoop] = BUSY
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
    for (let mailbox = this[kMailbox]; mailbox !== undefined && mailbox.size !== 0; mailbox = this[kMailbox]) {
      if (budget-- === 0) {
        setImmediate(Connection.#drainSafely, this)
        return
      }
      const kind = mailbox.peekKind()
      const bytes = mailbox.peekBytes()
      if (!this.#dispatch(kind, mailbox.take(this[kOptions]), bytes)) return
    }
    this[kLoop] = IDLE
    if (this[kPhase] === 'closing') this[kTerminate]()
  }

  /**
   * #drain where no caller of ours is below to catch (a timer, a promise's reaction): it must not
   * throw, even for a bug of ours (a promise's would be an unhandled rejection: a crash).
   */
  static #drainSafely (self: Connection): void {
    try {
      self.#drain()
      /* c8 ignore start -- #dispatch and kTerminate catch what the app's code throws */
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
    if ((kind === 'handle' || kind === 'errorFrame') && this[kPhase] === 'open' && this[kMailbox]?.inactive === true) {
      // Read in the same TCP chunk before the handler paused: it waits for `active: true`
      // (unless the peer has ended the connection: then it runs, as queued frames do). A JSON
      // route's error frame waits with the frames around it, so replies keep the client's order.
      this[kMailbox].hold(kind, payload, bytes)
      return true
    }
    if (kind === 'errorFrame') {
      this[kAnswerInvalid](payload as JsonProblem)
      return true
    }
    if (kind === 'streamPull') {
      (payload as Puller).pull()
      return true
    }
    if (kind === 'broadcast') {
      const [encoded, frame] = payload as [Buffer, BroadcastFrame]
      this[kWriteSharedNow](encoded, frame)
      return true
    }
    const handler = this[kRoute].handler
    // Observed (metrics): how long the callback ran, an async one until it settled.
    const startedAt = callbackChannel.hasSubscribers && handler[kind] !== undefined ? performance.now() : -1
    try {
      let result: unknown
      if (kind === 'handle') result = handler.handle?.(payload as InFrame, this[kState], this)
      else if (kind === 'info') result = handler.info?.(payload, this[kState], this)
      else result = handler.websocketInit?.(this[kState], this)
      if (result !== undefined && result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
        const reactions = (this.#async ??= this.#reactions())
        reactions.pending = kind
        reactions.startedAt = startedAt
        ;(result as PromiseLike<unknown>).then(reactions.fulfilled, reactions.rejected)
        return false
      }
      if (result !== undefined) this[kInterpret](kind, result)
    } catch (error) {
      this.#ran(kind, startedAt, true)
      this[kCrash](kind, error)
      return true
    }
    this.#ran(kind, startedAt, false)
    return true
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
          if (settled !== undefined) this[kInterpret](reactions.pending, settled)
        } catch (error) {
          failed = true
          this[kCrash](reactions.pending, error)
        }
        this.#ran(reactions.pending, reactions.startedAt, failed)
        Connection.#drainSafely(this)
      },
      rejected: (error) => {
        this.#ran(reactions.pending, reactions.startedAt, true)
        this[kCrash](reactions.pending, error)
        Connection.#drainSafely(this)
      }
    }
    return reactions
  }
}
