/**
 * The followers of a topic with history on this instance (`Feed`): each is a state machine of
 * its own (follower.ts); the feed hands them live publications in position order, tells them
 * when the adapter is back from an outage, and reads the history for them.
 *
 * Reads are shared, but only by followers that held live publications before the read was
 * issued: those that ask from one offset in one tick (many clients back from one position
 * after a drain) share one read issued at the end of the tick; a follower that asks later
 * issues its own, since a read already under way may have run before what it missed came live.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { HistoryLimits, HistoryRead, HistoryStore, Position } from '../core/types.js'
import type { ConnectionContext } from '../actor/context.js'
import { Follower, type Entry, type FollowedTopic, type Read } from './follower.js'

export class Feed implements FollowedTopic {
  readonly topic: string
  readonly followers = new Map<ConnectionContext, Follower>()
  readonly limits: HistoryLimits
  readonly #store: HistoryStore
  readonly #log: FastifyBaseLogger
  /** Followers waiting for a read from an offset that is issued at the end of this tick: they share it. */
  readonly #batches = new Map<number, Follower[]>()

  constructor (topic: string, limits: HistoryLimits, store: HistoryStore, log: FastifyBaseLogger) {
    this.topic = topic
    this.limits = limits
    this.#store = store
    this.#log = log
  }

  get size (): number {
    return this.followers.size
  }

  /** A connection follows from `since` (or from now); the registry calls this once per subscription. */
  follow (connection: ConnectionContext, since: Position | undefined): void {
    this.followers.set(connection, new Follower(connection, this, since))
  }

  unfollow (connection: ConnectionContext): void {
    this.followers.get(connection)?.unfollow()
    this.followers.delete(connection)
  }

  /** A live publication (in position order, from the adapter). */
  publish (message: unknown, position: Position): void {
    const entry: Entry = { offset: position.offset, epoch: position.epoch, message }
    for (const follower of this.followers.values()) follower.publication(entry)
  }

  /** Live publications may have been lost (the adapter was cut off): every follower reads back from where it is. */
  catchUp (): void {
    for (const follower of this.followers.values()) follower.reconnected()
  }

  read (follower: Follower, after: number): void {
    const batch = this.#batches.get(after)
    if (batch !== undefined) {
      batch.push(follower)
      return
    }
    this.#batches.set(after, [follower])
    queueMicrotask(() => { this.#issue(after) })
  }

  #issue (after: number): void {
    const batch = this.#batches.get(after)!
    this.#batches.delete(after)
    let stored: Promise<HistoryRead>
    try {
      stored = Promise.resolve(this.#store.read(this.topic, after, this.limits))
    } catch (error) {
      stored = Promise.reject(error)
    }
    // Made into entries once, for every follower that shares the read (and their `Publication`s with them).
    stored.then(({ epoch, top, entries }) => {
      const read: Read = { epoch, top, entries: entries.map(({ offset, message }) => ({ offset, epoch, message })) }
      for (const follower of batch) this.#settle(follower, read)
    }, (error: unknown) => {
      this.#log.error({ err: error, topic: this.topic }, 'WebSocket topic history could not be read: its followers resync')
      for (const follower of batch) this.#settle(follower, undefined)
    })
  }

  /** A promise's reaction: nothing may throw out of it (an unhandled rejection). */
  #settle (follower: Follower, read: Read | undefined): void {
    try {
      follower.readSettled(read)
      /* c8 ignore start -- the follower hands items to its connection, which guards its own work */
    } catch (error) {
      this.#log.error({ err: error, topic: this.topic }, 'WebSocket follower failed')
    }
    /* c8 ignore stop */
  }
}
