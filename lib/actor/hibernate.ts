/**
 * What `hibernate` releases, as measured (shared/reference/hibernate-measurements.md and
 * `npm run bench`): an idle uncompressed connection holds nothing worth freeing, while
 * permessage-deflate holds two zlib contexts, ≈240 KB RSS per connection. Released contexts
 * are reset and pooled for the next connection that wakes (wire/zlib-pool.ts), so a wake costs a
 * reset, not a rebuild.
 *
 * - The deflater can always go: a fresh one writes a stream without back-references, which
 *   any peer inflater decodes (only the compression ratio of the next message suffers).
 * - The inflater can go only when `client_no_context_takeover` was negotiated; otherwise the
 *   peer's next message may refer to the window it holds.
 * - Neither may go while zlib works on it: ws crashes on a context closed mid-operation.
 *
 * These are ws private fields (wire/ws-internals.ts); test/hibernate.test.ts covers them.
 */
import type WebSocket from 'ws'
import type { OutFrame } from '../core/types.js'
import { RECEIVER_INFLATING, SENDER_DEFAULT, internalsOf } from '../wire/ws-internals.js'
import { recycle } from '../wire/zlib-pool.js'

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
 * One connection's `hibernate` requests. The release waits for zlib to be idle: when the reply
 * that came with `hibernate` has been sent (ws's send callback: compressed and written, no extra
 * wake-up of the process), or else by polling with a capped backoff (ws runs 10 zlib jobs at a
 * time, so under load this can take a while).
 */
export class Hibernation {
  readonly #ws: WebSocket
  #timer: NodeJS.Timeout | undefined
  #cancelled = false
  /** ws's send callback for the reply that comes with `hibernate`. */
  readonly #sent = (): void => { this.request(false) }

  constructor (ws: WebSocket) {
    this.#ws = ws
  }

  /** The send callback to give a reply's frames: only a text or binary frame goes through zlib. */
  callbackFor (reply: OutFrame | readonly OutFrame[] | undefined): (() => void) | undefined {
    return reply !== undefined && carriesData(reply) ? this.#sent : undefined
  }

  /** Release now if zlib is idle; else when the reply is sent (`afterSend`), or by polling. */
  request (afterSend: boolean): void {
    if (this.#cancelled || this.#timer !== undefined || releaseIdleResources(this.#ws)) return
    if (!afterSend) this.#timer = setTimeout(Hibernation.#retry, 1, this, 1).unref()
  }

  /** The connection is ending: ws closes its contexts itself. */
  cancel (): void {
    this.#cancelled = true
    clearTimeout(this.#timer)
  }

  static #retry (self: Hibernation, delay: number): void {
    self.#timer = undefined
    if (releaseIdleResources(self.#ws)) return
    const next = Math.min(delay * 2, 1024)
    self.#timer = setTimeout(Hibernation.#retry, next, self, next).unref()
  }
}

/** Whether a reply sends a text or binary frame (before any close frame): one that ws may compress. */
function carriesData (reply: OutFrame | readonly OutFrame[]): boolean {
  if (!Array.isArray(reply)) return isData(reply as OutFrame)
  for (const frame of reply as readonly OutFrame[]) {
    if (frame.type === 'close') return false
    if (isData(frame)) return true
  }
  return false
}

function isData (frame: OutFrame): boolean {
  return frame.type === 'text' || frame.type === 'binary'
}
