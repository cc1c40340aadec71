/**
 * A connection's mailbox and its flow control: what waits while a callback runs, oldest first,
 * and when to stop reading the socket. Cowboy's process mailbox, with two bounds Erlang does not
 * need (a count and the bytes of waiting frames) so that a fast peer cannot grow it without
 * limit, and Cowboy's `active` command (frames already read while inactive are held back).
 */
import type { FastifyBaseLogger } from 'fastify'
import type WebSocket from 'ws'
import type { InboundRate } from './rate-limit.js'
import { kDataReceived } from './listeners.js'
import { MAX_TIMER_MS } from '../core/options.js'

/** The connection, told when reading resumes after a rate-limit pause (its silence counts from then). */
export interface RateHeld { [kDataReceived](): void }

/**
 * What an item is for, named after the callback that takes it; `errorFrame` is a JSON message
 * the route refused, whose error frame goes out in order with the replies; `broadcast` a
 * broadcast frame that waits behind what was posted before it; `streamPull` asks a stream for
 * its next item once the previous one's `info` has run.
 */
export type MailKind = 'websocketInit' | 'handle' | 'info' | 'errorFrame' | 'broadcast' | 'streamPull'

/** The two bounds, read live from the connection's options. */
export interface MailboxLimits { readonly mailboxLimit: number, readonly maxFrameSize: number }

// Why reading is paused: bits, so the handler's `active: false` and a full mailbox do not undo each other.
const PAUSED_BY_HANDLER = 1
const PAUSED_BY_MAILBOX = 2
const PAUSED_BY_RATE = 4

export class Mailbox {
  readonly #ws: WebSocket
  /**
   * (kind, payload, bytes) triples from `#head` on: no wrapper object per item, and taking one
   * moves the head (O(1)) instead of shifting the array. `bytes` is a frame's size as received
   * (0 for other items), for the byte bound.
   */
  readonly #items: unknown[] = []
  #head = 0
  /** Received bytes of the frames waiting. */
  #bytes = 0
  #paused = 0
  /** (kind, payload, bytes) triples read while the handler said `active: false`; they run first on `active: true`. */
  #held: unknown[] | undefined
  /** A post was refused since the mailbox was last below half its limit. */
  #refusing = false
  /** The connection's inbound rate limit, if it has one (its mailbox is then made at the upgrade). */
  rate: InboundRate | undefined
  /** Reading resumes when it fires: the rate limit's bucket has refilled. */
  #rateTimer: NodeJS.Timeout | undefined
  /** Who is told when that moment comes (the connection: its idle timeout counts again from it). */
  #rateHeld: RateHeld | undefined

  constructor (ws: WebSocket) {
    this.#ws = ws
  }

  get size (): number {
    return (this.#items.length - this.#head) / 3
  }

  /** A post while `limit` items wait is refused; the first refusal of an episode is logged. */
  refuses (limit: number, owner: { readonly log: FastifyBaseLogger }): boolean {
    if (this.size < limit) return false
    if (!this.#refusing) {
      this.#refusing = true
      owner.log.warn({ code: 'FST_WS_MAILBOX_FULL', mailboxLimit: limit }, 'WebSocket mailbox full: posts are refused until it drains')
    }
    return true
  }

  /** The handler said `active: false`: frames read since wait. */
  get inactive (): boolean {
    return (this.#paused & PAUSED_BY_HANDLER) !== 0
  }

  push (kind: MailKind, payload: unknown, bytes: number, limits: MailboxLimits): void {
    this.#items.push(kind, payload, bytes)
    this.#bytes += bytes
    // Stop reading past either bound: many small items, or a few large frames
    // (mailboxLimit × maxFrameSize would be a gigabyte with the defaults).
    if ((this.#paused & PAUSED_BY_MAILBOX) === 0 && (this.size > limits.mailboxLimit || this.#bytes > limits.maxFrameSize)) {
      this.#setPaused(PAUSED_BY_MAILBOX, true)
    }
  }

  /** The oldest item's kind and size; `take` next removes it and returns its payload. */
  peekKind (): MailKind {
    return this.#items[this.#head] as MailKind
  }

  peekBytes (): number {
    return this.#items[this.#head + 2] as number
  }

  take (limits: MailboxLimits): unknown {
    const items = this.#items
    const head = this.#head
    const payload = items[head + 1]
    this.#bytes -= items[head + 2] as number
    items[head + 1] = undefined // let the payload go
    if (head + 3 === items.length) {
      items.length = 0
      this.#head = 0
    } else if (head >= 3072 && head * 2 >= items.length) {
      items.splice(0, head + 3) // compact now and then: still O(1) per item, amortised
      this.#head = 0
    } else {
      this.#head = head + 3
    }
    if (this.size <= limits.mailboxLimit >> 1) {
      this.#refusing = false
      if ((this.#paused & PAUSED_BY_MAILBOX) !== 0 && this.#bytes <= limits.maxFrameSize / 2) this.#setPaused(PAUSED_BY_MAILBOX, false)
    }
    return payload
  }

  /** A frame (or a JSON route's error frame) read while inactive. */
  hold (kind: MailKind, payload: unknown, bytes: number): void {
    (this.#held ??= []).push(kind, payload, bytes)
  }

  /** Cowboy's `active` command: stop or resume reading; resuming puts held frames first. */
  setActive (active: boolean): void {
    this.#setPaused(PAUSED_BY_HANDLER, !active)
    if (active) this.releaseHeld()
  }

  /** Held frames go back to the front: they were read before what waits now. */
  releaseHeld (): void {
    const held = this.#held
    if (held === undefined) return
    this.#held = undefined
    for (let i = 2; i < held.length; i += 3) this.#bytes += held[i] as number
    this.#items.splice(this.#head, 0, ...held)
  }

  /**
   * Over the rate limit: stop reading the socket for `ms` (again from now, if it was paused
   * already); `held` is told when the bucket has refilled and reading goes on.
   */
  pauseForRate (ms: number, held: RateHeld): void {
    clearTimeout(this.#rateTimer)
    this.#setPaused(PAUSED_BY_RATE, true)
    this.#rateHeld = held
    this.#rateTimer = setTimeout(Mailbox.#rateRefilled, Math.min(ms, MAX_TIMER_MS), this)
  }

  /** Reading is paused by the rate limit. */
  get pausedForRate (): boolean {
    return (this.#paused & PAUSED_BY_RATE) !== 0
  }

  /** The connection is ending: no timer of the rate limit stays behind. */
  stopRate (): void {
    clearTimeout(this.#rateTimer)
  }

  static #rateRefilled (self: Mailbox): void {
    self.#rateTimer = undefined
    self.#setPaused(PAUSED_BY_RATE, false)
    self.#rateHeld?.[kDataReceived]()
  }

  /**
   * This side closes: drop what waits, frames held by `active: false` too, and read again so
   * that the peer's close reply ends the socket.
   */
  dropForClose (): void {
    this.#items.length = 0
    this.#head = 0
    this.#bytes = 0
    this.#held = undefined
    if (this.#paused !== 0) this.#ws.resume()
  }

  #setPaused (bit: number, on: boolean): void {
    const before = this.#paused
    this.#paused = on ? before | bit : before & ~bit
    if (before === 0 && this.#paused !== 0) this.#ws.pause()
    else if (before !== 0 && this.#paused === 0) this.#ws.resume()
  }
}
