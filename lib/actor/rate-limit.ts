/**
 * The inbound rate limit of one connection (the `rateLimit` option): a token bucket per
 * dimension (frames, bytes) that refills continuously at its rate and holds at most one second
 * of it. Time is read when a frame arrives (performance.now()): no timer runs while the client
 * stays under its rate.
 */
import type { RateLimit } from '../core/types.js'

export class InboundRate {
  readonly limit: RateLimit
  #messages: number
  #bytes: number
  #at = performance.now()

  constructor (limit: RateLimit) {
    this.limit = limit
    this.#messages = limit.messagesPerSecond ?? 0
    this.#bytes = limit.bytesPerSecond ?? 0
  }

  /** Take one frame of `size` bytes: 0 while within the limit, else how many ms until the bucket is back to empty. */
  take (size: number): number {
    const now = performance.now()
    const seconds = (now - this.#at) / 1000
    this.#at = now
    const { messagesPerSecond: messageRate, bytesPerSecond: byteRate } = this.limit
    let wait = 0
    if (messageRate !== undefined) {
      this.#messages = Math.min(messageRate, this.#messages + seconds * messageRate) - 1
      if (this.#messages < 0) wait = -this.#messages / messageRate
    }
    if (byteRate !== undefined) {
      this.#bytes = Math.min(byteRate, this.#bytes + seconds * byteRate) - size
      if (this.#bytes < 0) wait = Math.max(wait, -this.#bytes / byteRate)
    }
    return Math.ceil(wait * 1000)
  }

  /** For the close reason and the error: what the limit is. */
  describe (): string {
    const { messagesPerSecond, bytesPerSecond } = this.limit
    return [messagesPerSecond === undefined ? '' : `${messagesPerSecond} messages/s`, bytesPerSecond === undefined ? '' : `${bytesPerSecond} bytes/s`]
      .filter((part) => part !== '').join(', ')
  }
}
