/**
 * What reaches `info` later: the handler's timers (`ctx.sendAfter`, `ctx.startTimer`: Erlang's
 * `erlang:send_after` and `erlang:start_timer`, whose messages arrive in `info` through the
 * mailbox like any other) and its streams (streams.ts). One object per connection, made when the
 * handler first starts either; all cancelled and stopped at once when the connection ends.
 */
import { InvalidTimerError } from '../core/errors.js'
import { MAX_TIMER_MS } from '../core/options.js'
import type { StreamRef, StreamTo, TimerRef } from '../core/types.js'
import { Stream, type StreamOwner } from './streams.js'

/** The owner's method that delivers a fired timer's message to `info`. */
export const kTimerFired = Symbol('fastify-ws-handlers.timer-fired')

export interface TimerOwner extends StreamOwner {
  [kTimerFired](message: unknown): void
}

let lastRef = 0

/** A fresh reference; refs are unique in the process, so a stale ref never cancels another timer. */
export function nextTimerRef (ms: number): TimerRef {
  // Node fires a longer timer after 1 ms: refused, never clamped.
  if (!(Number.isFinite(ms) && ms >= 0 && ms <= MAX_TIMER_MS)) throw new InvalidTimerError(String(ms))
  return ++lastRef
}

export class Timers {
  readonly #owner: TimerOwner
  readonly #running = new Map<TimerRef, NodeJS.Timeout>()
  #streams: Map<StreamRef, Stream> | undefined

  constructor (owner: TimerOwner) {
    this.#owner = owner
  }

  /** `wrap`: deliver `{ type: 'timeout', ref, message }` (startTimer) rather than the message (sendAfter). */
  start (ms: number, message: unknown, wrap: boolean): TimerRef {
    const ref = nextTimerRef(ms)
    this.#running.set(ref, setTimeout(Timers.#fire, ms, this, ref, message, wrap))
    return ref
  }

  cancel (ref: TimerRef): boolean {
    const timer = this.#running.get(ref)
    if (timer === undefined) return false
    clearTimeout(timer)
    this.#running.delete(ref)
    return true
  }

  /** Start feeding `source` to `info` (streams.ts); its first item is asked for now. */
  stream (source: AsyncIterable<unknown> | Iterable<unknown>, to: StreamTo<unknown, unknown>): StreamRef {
    const streams = (this.#streams ??= new Map())
    const stream = new Stream(this.#owner, source, to, (ended) => { streams.delete(ended.ref) })
    streams.set(stream.ref, stream)
    stream.pull()
    return stream.ref
  }

  stopStream (ref: StreamRef): boolean {
    const stream = this.#streams?.get(ref)
    if (stream === undefined) return false
    stream.stop()
    return true
  }

  clear (): void {
    for (const timer of this.#running.values()) clearTimeout(timer)
    this.#running.clear()
    for (const stream of this.#streams?.values() ?? []) stream.stop()
  }

  static #fire (self: Timers, ref: TimerRef, message: unknown, wrap: boolean): void {
    self.#running.delete(ref)
    self.#owner[kTimerFired](wrap ? { type: 'timeout', ref, message } : message)
  }
}
