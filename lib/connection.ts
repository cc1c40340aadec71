/**
 * One upgraded connection: an actor with a mailbox, in the manner of a cowboy_websocket process.
 * Here: its phases, the loop that runs one callback at a time, and the command interpreter.
 * Its other parts have their own modules: what `ctx` offers (context.ts), the mailbox and flow
 * control (mailbox.ts), ws's events (listeners.ts), the idle timeout and heartbeat
 * (idle-timer.ts), the handler's timers (timers.ts), hibernate (hibernate.ts), frame checks
 * and writes (commands.ts).
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
import type WebSocket from 'ws'
import type { BroadcastFrame } from './adapter.js'
import { CloseCode } from './close-codes.js'
import { resultProblem, writeFrames, writeShared } from './commands.js'
import { ConnectionContext, kPhase, kRoute, kShutdown, kWriteShared, kWs } from './context.js'
import { frameOutChannel } from './diagnostics.js'
import { InvalidMessageError, InvalidResultError, OutboundOverflowError } from './errors.js'
import { json } from './frames.js'
import { Hibernation } from './hibernate.js'
import { IdleTimer, kIdleTimeout, type IdleTimerOwner } from './idle-timer.js'
import type { JsonProblem, JsonReader } from './json-messages.js'
import { kInvalidJson, kPeerEnded, kReceived, listen, type ConnectionEvents } from './listeners.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { resolveConnectionOptions, type ResolvedConnectionOptions } from './options.js'
import type { RouteContext, Upgrade } from './route-context.js'
import { kTimerFired } from './timers.js'
import type { Commands, InFrame, LiveOptions, OutFrame, TerminateReason } from './types.js'
import { applyReceiverLimits, internalsOf } from './ws-internals.js'

/** See the diagram above. */
export type Phase = 'open' | 'closing' | 'closed'

export class Connection extends ConnectionContext implements ConnectionEvents, IdleTimerOwner {
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
  /** What `hibernate` released and when (hibernate.ts); made on the first `hibernate`. */
  #hibernation: Hibernation | undefined
  #onFulfilled: ((result: unknown) => void) | undefined
  #onRejected: ((error: unknown) => void) | undefined

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    super(route, ws, upgrade)
    this.#state = upgrade.state
    this.#options = upgrade.options
    internalsOf(ws)._closeTimeout = route.closeTimeout
    listen(ws, this)
    applyReceiverLimits(ws, this.#options.maxFrameSize, this.#options.validateUtf8)
    this.#armIdleTimer()
    this.announceOpen(upgrade.raw)
    if (this.#dispatch('websocketInit', undefined, 0)) this.#drain()
  }

  /** Refused (false) once the connection is ending or `mailboxLimit` items wait: the app's producers are bounded too. */
  post (message: unknown): boolean {
    if (this.#running && this.#mailbox?.refuses(this.#options.mailboxLimit, this) === true) return false
    return this.#deliver('info', message)
  }

  // ---- what reaches it from ws, timers and the app --------------------------

  get jsonReader (): JsonReader | undefined {
    return this[kRoute].json?.read
  }

  [kReceived] (frame: InFrame<unknown>, bytes: number): void {
    this.#deliver('handle', frame, bytes)
  }

  [kInvalidJson] (problem: JsonProblem): void {
    // As the route chose: an error frame (in order, through the mailbox), or a close.
    if (this[kRoute].json!.onInvalid === 'error-frame') this.#deliver('errorFrame', problem)
    else this.#close(problem.code, problem.reason, { type: 'error', code: problem.code, error: new InvalidMessageError(problem.reason) })
  }

  [kPeerEnded] (reason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this.#mailbox?.releaseHeld() // frames read before the handler paused reading still run
    this.#end(reason)
  }

  [kTimerFired] (message: unknown): void {
    this.#deliver('info', message)
  }

  [kIdleTimeout] (): void {
    this.#close(CloseCode.NORMAL, '', { type: 'timeout' })
  }

  /** Close with 1001 now; terminate follows the callback in progress. */
  [kShutdown] (): void {
    this.#close(CloseCode.GOING_AWAY, '', { type: 'shutdown' })
  }

  [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean {
    // readyState: the peer ended TCP and ws has not said 'close' yet.
    if (this[kPhase] !== 'open' || this[kWs].readyState !== this[kWs].OPEN || this.#closedForOverflow()) return false
    writeShared(this[kWs], encoded, frame)
    return true
  }

  // ---- the loop: one callback at a time --------------------------------------

  /** `bytes`: a frame's size as received, for the mailbox's byte bound (0 for other items). */
  #deliver (kind: MailKind, payload: unknown, bytes = 0): boolean {
    if (this[kPhase] !== 'open') return false
    if (this.#running) {
      (this.#mailbox ??= new Mailbox(this[kWs])).push(kind, payload, bytes, this.#options)
    } else {
      this.#running = true
      if (this.#dispatch(kind, payload, bytes)) this.#drain()
    }
    return true
  }

  /** Run what waits until the mailbox is empty or a callback goes async; then terminate if closing. */
  #drain (): void {
    // Re-read each turn: a callback may create the mailbox (a post).
    for (let mailbox = this.#mailbox; mailbox !== undefined && mailbox.size !== 0; mailbox = this.#mailbox) {
      const kind = mailbox.peekKind()
      const bytes = mailbox.peekBytes()
      if (!this.#dispatch(kind, mailbox.take(this.#options), bytes)) return
    }
    this.#running = false
    if (this[kPhase] === 'closing') this.#terminate()
  }

  /**
   * The one place that calls websocketInit, handle and info: a throw becomes close 1011 and a
   * `crash`, a promise makes the mailbox wait. Returns false while a callback is pending.
   */
  #dispatch (kind: MailKind, payload: unknown, bytes: number): boolean {
    if (kind === 'errorFrame') {
      const { code, reason } = payload as JsonProblem
      this.#write(json({ type: 'error', code, message: reason }))
      return true
    }
    if (kind === 'handle' && this[kPhase] === 'open' && this.#mailbox?.inactive === true) {
      // Read in the same TCP chunk before the handler paused: it waits for `active: true`
      // (unless the peer has ended the connection: then it runs, as queued frames do).
      this.#mailbox.hold(payload as InFrame<unknown>, bytes)
      return true
    }
    const handler = this[kRoute].handler
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
    if (commands.active !== undefined) (this.#mailbox ??= new Mailbox(this[kWs])).setActive(commands.active)
    const hibernation = commands.hibernate === true ? (this.#hibernation ??= new Hibernation(this[kWs])) : undefined
    const onSent = hibernation?.callbackFor(commands.reply)
    if (commands.reply !== undefined) this.#write(commands.reply, onSent)
    if (commands.stop === true) this.#close(CloseCode.NORMAL, '', { type: 'stop', code: CloseCode.NORMAL, reason: '' })
    if (hibernation !== undefined && this[kPhase] === 'open') hibernation.request(onSent !== undefined)
  }

  #crash (callback: MailKind, error: unknown): void {
    this.log.error({ err: error }, `WebSocket ${callback} threw; closing with 1011`)
    this.#close(CloseCode.INTERNAL_ERROR, '', { type: 'crash', error })
  }

  #write (reply: OutFrame | readonly OutFrame[], onSent?: () => void): void {
    // Nothing is sent once the connection is ending: after a close frame, or to a closed peer.
    if (this[kPhase] !== 'open' || this.#closedForOverflow()) return
    const closeFrame = writeFrames(this[kWs], reply, onSent)
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
    const backlog = this[kWs].bufferedAmount
    if (backlog <= this.#options.maxBufferedBytes) return false
    const error = new OutboundOverflowError(backlog, this.#options.maxBufferedBytes)
    this.#close(CloseCode.POLICY_VIOLATION, 'outbound buffer full', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return true
  }

  // ---- open → closing → closed ---------------------------------------------

  /** A close this side decides: the close frame goes out now and what waits is dropped. */
  #close (code: number, reason: string, terminateReason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this[kWs].close(code, reason)
    this.#mailbox?.dropForClose()
    this.#end(terminateReason)
  }

  /** Enter `closing`: terminate runs once the callback in progress and what waits are done. */
  #end (reason: TerminateReason): void {
    this[kPhase] = 'closing'
    this.#endReason = reason
    this.#idleTimer?.stop()
    this.#hibernation?.cancel()
    if (!this.#running) {
      this.#running = true
      this.#drain()
    }
  }

  #terminate (): void {
    this[kPhase] = 'closed'
    const reason = this.#endReason!
    this.announceClose(reason)
    const done = (): void => { this[kRoute].registry.remove(this) }
    const failed = (error: unknown): void => {
      this.log.error({ err: error }, 'WebSocket terminate threw')
      done()
    }
    let settled: Promise<void> | void
    try {
      settled = this[kRoute].handler.terminate?.(reason, this.request, this.#state)
    } catch (error) {
      failed(error)
      return
    }
    if (settled !== undefined && typeof settled.then === 'function') settled.then(done, failed)
    else done()
  }

  // ---- options ---------------------------------------------------------------

  #setOptions (live: LiveOptions): void {
    this.#options = resolveConnectionOptions(this.#options, live)
    if (live.idleTimeout !== undefined || live.pingInterval !== undefined) this.#armIdleTimer()
    if (live.maxFrameSize !== undefined) applyReceiverLimits(this[kWs], this.#options.maxFrameSize, this.#options.validateUtf8)
  }

  #armIdleTimer (): void {
    const { idleTimeout, pingInterval } = this.#options
    if (this.#idleTimer === undefined && idleTimeout === 0 && pingInterval === 0) return
    (this.#idleTimer ??= new IdleTimer(this, this[kWs])).arm(idleTimeout, pingInterval)
  }
}
