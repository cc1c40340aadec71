/**
 * `ctx.stream(source, to)`: what an async (or plain) iterable yields reaches `info` in order,
 * one item at a time. The next item is pulled only when the previous one's `info` has run: the
 * owner queues a pull after each item (a `streamPull` item of the mailbox), so a stream holds
 * one item of memory and a slow handler slows its source. Stopped streams have their iterator's
 * `return()` called (a GraphQL subscription, a database cursor is released).
 */
import { InvalidStreamError } from '../core/errors.js'
import { show } from '../core/options.js'
import type { StreamRef, StreamTo } from '../core/types.js'

export const kStreamMessage = Symbol('fastify-ws-handlers.stream-message')
export const kStreamFailed = Symbol('fastify-ws-handlers.stream-failed')

/** What the connection asks for the next item once the previous one's `info` has run: a stream, a topic's replay (registry/followers.ts). */
export interface Puller { pull(): void }

/** What a stream hands its connection (symbol keys: nothing of it shows on `ctx`). */
export interface StreamOwner {
  /** Deliver `message` to `info`, then `pullAfter.pull()` once it has run (none after the last). */
  [kStreamMessage](message: unknown, pullAfter: Puller | undefined): void
  /** The source, or one of the handler's `to` functions, threw (without `to.error`): the handler's crash. */
  [kStreamFailed](error: unknown): void
}

let lastRef = 0

export class Stream implements Puller {
  readonly ref: StreamRef = ++lastRef
  readonly #owner: StreamOwner
  readonly #iterator: AsyncIterator<unknown> | Iterator<unknown>
  readonly #to: StreamTo<unknown, unknown>
  readonly #ended: (stream: Stream) => void
  #stopped = false

  constructor (owner: StreamOwner, source: AsyncIterable<unknown> | Iterable<unknown>, to: StreamTo<unknown, unknown>, ended: (stream: Stream) => void) {
    this.#owner = owner
    this.#to = to
    this.#ended = ended
    this.#iterator = iteratorOf(source)
  }

  /** Ask the source for its next item; it reaches the owner when it comes. */
  pull (): void {
    if (this.#stopped) return
    let next: unknown
    try {
      next = this.#iterator.next()
    } catch (error) {
      next = Promise.reject(error) // a plain iterator that throws: as an async one that rejects
    }
    Promise.resolve(next as Promise<IteratorResult<unknown>>).then((result) => {
      if (this.#stopped) return
      if (result.done === true) {
        this.#end()
        if (this.#to.complete !== undefined) this.#owner[kStreamMessage](this.#to.complete(), undefined)
        return
      }
      this.#owner[kStreamMessage](this.#to.next(result.value), this)
    }, (error: unknown) => {
      if (this.#stopped) return
      this.#end()
      if (this.#to.error === undefined) this.#owner[kStreamFailed](error)
      else this.#owner[kStreamMessage](this.#to.error(error), undefined)
    }).catch((error: unknown) => { this.#owner[kStreamFailed](error) }) // one of the handler's `to` functions threw
  }

  /** Stop pulling and release the source (only running streams are stopped: timers.ts keeps those). */
  stop (): void {
    this.#end()
    try {
      const returned = this.#iterator.return?.()
      if (returned !== undefined && typeof (returned as Promise<unknown>).then === 'function') (returned as Promise<unknown>).then(undefined, ignore)
    } catch {} // a source that fails to close is closed as far as we are concerned
  }

  #end (): void {
    this.#stopped = true
    this.#ended(this)
  }
}

function ignore (): void {}

/** The iterator of an async or plain iterable; anything else is refused with a coded error (thrown in the callback: a crash). */
export function iteratorOf (source: AsyncIterable<unknown> | Iterable<unknown>): AsyncIterator<unknown> | Iterator<unknown> {
  const iterable = source as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null
  const asyncIterator = iterable?.[Symbol.asyncIterator]
  if (typeof asyncIterator === 'function') return asyncIterator.call(iterable)
  const iterator = iterable?.[Symbol.iterator]
  if (typeof iterator === 'function') return iterator.call(iterable)
  throw new InvalidStreamError(show(source))
}
