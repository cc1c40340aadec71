/**
 * What `hibernate` releases, as measured (shared/reference/hibernate-measurements.md and
 * `npm run bench`): an idle uncompressed connection holds nothing worth freeing, while
 * permessage-deflate holds two zlib contexts, ≈240 KB RSS per connection. Released contexts
 * are reset and pooled for the next connection that wakes (zlib-pool.ts), so a wake costs a
 * reset, not a rebuild.
 *
 * - The deflater can always go: a fresh one writes a stream without back-references, which
 *   any peer inflater decodes (only the compression ratio of the next message suffers).
 * - The inflater can go only when `client_no_context_takeover` was negotiated; otherwise the
 *   peer's next message may refer to the window it holds.
 * - Neither may go while zlib works on it: ws crashes on a context closed mid-operation.
 *
 * These are ws private fields (ws-internals.ts); test/hibernate.test.ts covers them.
 */
import type WebSocket from 'ws'
import { RECEIVER_INFLATING, SENDER_DEFAULT, internalsOf } from './ws-internals.js'
import { recycle } from './zlib-pool.js'

/** Release what this connection can rebuild. False when zlib is busy: try again later. */
export function releaseIdleResources (ws: WebSocket): boolean {
  const { _extensions: extensions, _sender: sender, _receiver: receiver } = internalsOf(ws)
  const deflate = extensions['permessage-deflate']
  if (deflate === undefined) return true
  // Busy even before a context exists: ws queues zlib jobs (10 at a time), and a queued job
  // creates its context when it runs. Releasing now would miss it.
  if (sender._state !== SENDER_DEFAULT || sender._queue.length !== 0) return false
  if (receiver._state === RECEIVER_INFLATING || receiver._fragmented !== 0) return false
  if (deflate._deflate !== null) {
    recycle(deflate, 'deflate', deflate._deflate)
    deflate._deflate = null
  }
  if (deflate._inflate !== null && deflate.params.client_no_context_takeover === true) {
    recycle(deflate, 'inflate', deflate._inflate)
    deflate._inflate = null
  }
  return true
}

/**
 * A release that waits for zlib: retried with a capped backoff until the connection is idle
 * (ws runs 10 zlib jobs at a time, so under load this can take a while).
 */
export class DeferredRelease {
  readonly #ws: WebSocket
  #timer: NodeJS.Timeout | undefined

  constructor (ws: WebSocket) {
    this.#ws = ws
    this.#timer = setTimeout(DeferredRelease.#retry, 1, this, 1).unref()
  }

  get pending (): boolean {
    return this.#timer !== undefined
  }

  cancel (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  static #retry (self: DeferredRelease, delay: number): void {
    self.#timer = undefined
    if (releaseIdleResources(self.#ws)) return
    const next = Math.min(delay * 2, 1024)
    self.#timer = setTimeout(DeferredRelease.#retry, next, self, next).unref()
  }
}
