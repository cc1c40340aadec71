/**
 * A connection's life (the actor of connection.ts, in layers: this one, the command interpreter
 * of interpreter.ts, the loop and inbound gate of connection.ts). Here: its phases, what ends it,
 * its heartbeat and its options.
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
 * The loop's own state (IDLE, BUSY, QUEUED, QUEUED_DROPPED) lives here too: a close decided
 * while a run is queued drops its message, and an end reached while nothing runs queues the
 * terminate (never on the stack of whoever decided the close).
 */
import type WebSocket from 'ws'
import { CloseCode, fitCloseReason } from '../core/close-codes.js'
import { InternalError } from '../core/errors.js'
import { resolveConnectionOptions, type ResolvedConnectionOptions } from '../core/options.js'
import type { LiveOptions, TerminateReason } from '../core/types.js'
import { applyReceiverLimits, internalsOf } from '../wire/ws-internals.js'
import { ConnectionContext, kPhase, kRoute, kShutdown, kWs, type RouteContext, type Upgrade } from './context.js'
import { type Beating, firstStep, kDue, kHeartbeat, kNext, kPrev, kSince, type Link, restartSilence, stepAfterPing, stopBeating } from './heartbeat.js'
import type { Hibernation } from './hibernate.js'
import { kDataReceived, kFault, kPeerEnded, listenForData } from './listeners.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { InboundRate } from './rate-limit.js'
import { kRun, runSoon, type Runnable } from './run-queue.js'

// What the loop is doing (a small integer: one field, stored inline).
/** Nothing runs or waits: the next item runs at once. */
export const IDLE = 0
/** A callback is running or its promise is pending: what arrives waits in the mailbox. */
export const BUSY = 1
/** A run is queued (run-queue.ts): what arrives waits behind it. */
export const QUEUED = 2
/** A run is queued, and this side closed meanwhile: its message is dropped, as the mailbox's are. */
export const QUEUED_DROPPED = 3

/** The queued run's payload when it only drains (and terminates): no message to deliver. */
export const kDrainOnly = Symbol('fastify-ws-handlers.drain-only')

// What the layers share (symbol keys: nothing of it shows on `ctx`).
export const kState = Symbol('fastify-ws-handlers.state')
export const kOptions = Symbol('fastify-ws-handlers.options')
export const kMailbox = Symbol('fastify-ws-handlers.mailbox')
export const kLoop = Symbol('fastify-ws-handlers.loop')
export const kHibernation = Symbol('fastify-ws-handlers.hibernation')
export const kClose = Symbol('fastify-ws-handlers.close')
export const kCrash = Symbol('fastify-ws-handlers.crash')
export const kTerminate = Symbol('fastify-ws-handlers.terminate')
export const kSetOptions = Symbol('fastify-ws-handlers.set-options')
export const kStartHeartbeat = Symbol('fastify-ws-handlers.start-heartbeat')

/** The callback a mailbox item ran, for log lines and errors: a JSON route's error frame runs its `onInvalid`. */
export function callbackName (kind: MailKind): string {
  return kind === 'errorFrame' ? 'onInvalid' : kind
}

export abstract class ConnectionLifecycle extends ConnectionContext implements Beating, Runnable {
  /** The handler's state, threaded from one callback to the next. */
  protected [kState]: unknown
  protected [kOptions]: ResolvedConnectionOptions
  /** Allocated when something first has to wait (most connections are idle). */
  protected [kMailbox]: Mailbox | undefined
  /** IDLE, BUSY, QUEUED or QUEUED_DROPPED (above). */
  protected [kLoop] = BUSY
  /** What `hibernate` released and when (hibernate.ts); made on the first `hibernate`. */
  protected [kHibernation]: Hibernation | undefined
  // Its place among the connections waiting for a ping or the idle timeout (heartbeat.ts);
  // set in the constructor, so that every connection has the same shape.
  declare [kPrev]: Link | undefined
  declare [kNext]: Link | undefined
  declare [kDue]: number
  declare [kSince]: number
  /** Set on leaving `open`: what terminate will be told. */
  #endReason: TerminateReason | undefined

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    super(route, ws, upgrade)
    this[kState] = upgrade.state
    this[kOptions] = upgrade.options
    this[kMailbox] = undefined
    this[kHibernation] = undefined
    this[kPrev] = this[kNext] = undefined
    this[kDue] = this[kSince] = 0
    // A rate-limited connection keeps its bucket in its mailbox (no field for the others).
    if (upgrade.options.rateLimit !== false) (this[kMailbox] = new Mailbox(ws)).rate = new InboundRate(upgrade.options.rateLimit)
    internalsOf(ws)._closeTimeout = route.closeTimeout
  }

  /** The queued run (the loop's, connection.ts). */
  abstract [kRun] (payload: unknown): void

  /**
   * Something of the plugin's own threw where an outside event entered (listeners.ts, the run
   * queue): this connection closes with 1011, the process goes on.
   */
  [kFault] (cause: unknown): void {
    const error = new InternalError(cause instanceof Error ? cause.message : String(cause), { cause })
    this.log.error({ err: error }, 'WebSocket event failed; closing with 1011')
    this[kClose](CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
  }

  [kPeerEnded] (reason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this[kMailbox]?.releaseHeld() // frames read before the handler paused reading still run
    this.#end(reason)
  }

  /** A drain or app.close(): close with `code` now (1012, or 1001); terminate follows the callback in progress. */
  [kShutdown] (code: number): void {
    this[kClose](code, '', { type: 'shutdown', code })
  }

  protected [kCrash] (callback: MailKind, error: unknown): void {
    this.log.error({ err: error }, `WebSocket ${callbackName(callback)} threw; closing with 1011`)
    this[kClose](CloseCode.INTERNAL_ERROR, '', { type: 'crash', error })
  }

  // ---- open → closing → closed ---------------------------------------------

  /** A close this side decides: the close frame goes out now and what waits is dropped. */
  protected [kClose] (code: number, reason: string, terminateReason: TerminateReason): void {
    if (this[kPhase] !== 'open') return
    this[kWs].close(code, fitCloseReason(reason))
    this[kMailbox]?.dropForClose()
    if (this[kLoop] === QUEUED) this[kLoop] = QUEUED_DROPPED
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
    this[kHibernation]?.cancel()
    this[kMailbox]?.stopRate()
    if (this[kLoop] === IDLE) {
      this[kLoop] = QUEUED
      runSoon(this, kDrainOnly)
    }
  }

  protected [kTerminate] (): void {
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
      settled = this[kRoute].handler.terminate?.(reason, this.request, this[kState])
    } catch (error) {
      failed(error)
      return
    }
    if (settled !== undefined && typeof settled.then === 'function') settled.then(done, failed)
    else done()
  }

  // ---- the heartbeat and the options ------------------------------------------

  [kDataReceived] (): void {
    if (this[kPhase] === 'open') restartSilence(this, firstStep(this[kOptions].idleTimeout, this[kOptions].pingInterval))
  }

  /** `silentMs` of silence: the idle timeout closes, else a ping; then the next step (0: none). */
  [kHeartbeat] (silentMs: number): number {
    const { idleTimeout, pingInterval } = this[kOptions]
    // Reading paused by the rate limit: the client may be talking, unheard; never idle-closed for it.
    if (this[kMailbox]?.pausedForRate === true) return firstStep(idleTimeout, pingInterval)
    if (idleTimeout !== 0 && silentMs >= idleTimeout) {
      this[kClose](CloseCode.NORMAL, '', { type: 'timeout' })
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

  protected [kSetOptions] (live: LiveOptions): void {
    this[kOptions] = resolveConnectionOptions(this[kOptions], live)
    if (live.idleTimeout !== undefined || live.pingInterval !== undefined) this[kStartHeartbeat]()
    if (live.maxFrameSize !== undefined) applyReceiverLimits(this[kWs], this[kOptions].maxFrameSize, this[kOptions].validateUtf8)
  }

  /** (Re)start counting silence from now with the current periods; both 0: no heartbeat. */
  protected [kStartHeartbeat] (): void {
    const step = firstStep(this[kOptions].idleTimeout, this[kOptions].pingInterval)
    if (step !== 0) listenForData(this[kWs])
    restartSilence(this, step)
  }
}
