/**
 * Positioned subscribers ("followers") of topics with history: each gets every publication
 * once, in order, as a `Publication`; recovery from `since` replays the history, then the live
 * publications that came meanwhile, with no gap and no duplicate at the seam.
 *
 * How the seam is kept: a follower is registered (live publications start to collect in its
 * `held` list) before its history is read, and the adapter's `read` comes after its
 * subscription to the topic is live. So what the read misses is held, and what is in both is
 * dropped by offset: everything after `since`, once. The same mechanism mends a gap in the live
 * stream (Redis pub/sub lost messages while it reconnected) and a mailbox that refused a
 * publication: the follower recovers from its last offset.
 *
 * Replay is pulled, one publication at a time, as `ctx.stream` is (each after the previous one's
 * `info` has run), so it bypasses `mailboxLimit` but holds no more than the read returned. Reads
 * of the same topic from the same offset (many followers after one Redis blip) are shared.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { HistoryLimits, HistoryRead, HistoryStore, Position, Publication, Resync, ResyncReason, Subscribed } from '../core/types.js'
import { kStreamMessage, type Puller } from '../actor/streams.js'
import type { ConnectionContext } from '../actor/context.js'

/** One publication as followers take it; its `Publication` is made once, for all of them (it is read-only). */
interface Entry { readonly offset: number, readonly epoch: string, readonly message: unknown, publication?: Publication }

/** One positioned subscriber of one topic. */
class Follower implements Puller {
  /** Offset of the last publication handed to the connection (-1 with no epoch: take the next, whatever it is). */
  last = -1
  epoch: string | undefined
  /** Recovering: live publications wait here (null: live, delivered as they come). */
  held: Entry[] | null = []
  /** The replay being pulled. */
  replay: readonly Entry[] = noEntries
  next = 0
  /** After the replay: the event that says where the subscription is. */
  afterReplay: Subscribed | Resync | undefined
  readonly connection: ConnectionContext
  readonly feed: Feed

  constructor (connection: ConnectionContext, feed: Feed) {
    this.connection = connection
    this.feed = feed
  }

  /** Hand the connection its next item: it comes back here once that item's `info` has run. */
  pull (): void {
    if (this.feed.followers.get(this.connection) !== this) return // unsubscribed meanwhile
    if (this.next < this.replay.length) {
      const entry = this.replay[this.next++]!
      this.last = entry.offset
      this.connection[kStreamMessage](publicationOf(this.feed.topic, entry), this)
      return
    }
    if (this.afterReplay !== undefined) {
      const event = this.afterReplay
      this.afterReplay = undefined
      this.connection[kStreamMessage](event, this)
      return
    }
    // Then what came live meanwhile, still pulled: it may be many.
    const held = this.held!
    for (let entry = held.shift(); entry !== undefined; entry = held.shift()) {
      const step = this.feed.stepOf(this, entry)
      if (step === SKIP) continue
      if (step !== DELIVER) {
        held.unshift(entry)
        if (step === GAP) this.feed.recover(this, this.last)
        else this.pull() // the new epoch's resync first, then this entry
        return
      }
      this.last = entry.offset
      this.connection[kStreamMessage](publicationOf(this.feed.topic, entry), this)
      return
    }
    this.held = null
    this.replay = noEntries
  }
}

const noEntries: readonly Entry[] = []

/** A history read as followers take it. */
interface Read { readonly epoch: string, readonly top: number, readonly entries: readonly Entry[] }
const DELIVER = 0
const SKIP = 1
const GAP = 2
const NEW_EPOCH = 3

function publicationOf (topic: string, entry: Entry): Publication {
  entry.publication ??= { kind: 'publication', topic, message: entry.message, position: { offset: entry.offset, epoch: entry.epoch } }
  return entry.publication
}

/** One topic's followers on this instance. */
export class Feed {
  readonly topic: string
  readonly followers = new Map<ConnectionContext, Follower>()
  readonly #limits: HistoryLimits
  readonly #store: HistoryStore
  readonly #log: FastifyBaseLogger
  /** Reads in flight, by offset: followers that recover from the same place share one. */
  readonly #reads = new Map<number, Promise<Read>>()

  constructor (topic: string, limits: HistoryLimits, store: HistoryStore, log: FastifyBaseLogger) {
    this.topic = topic
    this.#limits = limits
    this.#store = store
    this.#log = log
  }

  get size (): number {
    return this.followers.size
  }

  /** A connection follows from `since` (or from now). */
  follow (connection: ConnectionContext, since: Position | undefined): void {
    const follower = new Follower(connection, this)
    this.followers.set(connection, follower)
    this.#read(follower, since === undefined ? Infinity : since.offset, (read) => {
      follower.epoch = read.epoch
      const at: Position = { offset: read.top, epoch: read.epoch }
      let problem: ResyncReason | undefined
      if (since !== undefined) {
        if (since.epoch !== read.epoch) problem = 'epoch'
        else if (since.offset > read.top) problem = 'ahead'
        else if (since.offset < read.top && read.entries[0]?.offset !== since.offset + 1) problem = 'trimmed'
      }
      if (problem === undefined && since !== undefined) {
        follower.last = since.offset // where the client is: the replay moves it on
        follower.replay = read.entries
        follower.afterReplay = this.#subscribed(at, read.entries.length)
      } else {
        follower.last = read.top
        follower.afterReplay = problem === undefined ? this.#subscribed(at, 0) : this.#resync(problem, at)
      }
      follower.next = 0
      follower.pull()
    })
  }

  unfollow (connection: ConnectionContext): void {
    this.followers.delete(connection)
  }

  /** A live publication (in position order, from the adapter). */
  publish (message: unknown, position: Position): void {
    const entry: Entry = { offset: position.offset, epoch: position.epoch, message }
    for (const follower of this.followers.values()) {
      if (follower.held !== null) {
        // Bounded by the history's size: what falls off is read back from the history (or, if
        // it is gone from there too, the follower is told to resync).
        if (follower.held.length >= this.#limits.size) follower.held.shift()
        follower.held.push(entry)
        continue
      }
      // The common case first, without a call: the next one of the same epoch, taken.
      const next = entry.offset === follower.last + 1 && entry.epoch === follower.epoch
      const step = next ? DELIVER : this.stepOf(follower, entry)
      if (step === SKIP) continue
      if (step === DELIVER && follower.connection.post(entry.publication ?? publicationOf(this.topic, entry))) {
        follower.last = entry.offset
        continue
      }
      // A gap (live messages were lost: Redis reconnected), a full mailbox (this publication
      // waits in the history), or a new epoch (its resync goes first): pulled from here on.
      follower.held = [entry]
      follower.replay = noEntries
      follower.next = 0
      // Never on the publisher's stack: the follower's next `info` may run when it is pulled.
      if (step === NEW_EPOCH) queueMicrotask(() => { follower.pull() })
      else this.recover(follower, follower.last)
    }
  }

  /** What to do with the next entry for this follower; a new epoch is taken, and its resync made the follower's next event. */
  stepOf (follower: Follower, entry: Entry): number {
    if (follower.epoch === undefined) { // after `unavailable`: from the next one on, whatever it is
      follower.epoch = entry.epoch
      follower.last = entry.offset - 1
    } else if (entry.epoch !== follower.epoch) {
      // The history was lost (a new epoch): what came before this cannot be recovered.
      follower.epoch = entry.epoch
      follower.last = entry.offset - 1
      follower.afterReplay = this.#resync('epoch', { offset: follower.last, epoch: entry.epoch })
      return NEW_EPOCH
    }
    if (entry.offset <= follower.last) return SKIP
    return entry.offset === follower.last + 1 ? DELIVER : GAP
  }

  /** Live publications may have been lost (the adapter was cut off): every live follower reads back from where it is. */
  catchUp (): void {
    for (const follower of this.followers.values()) {
      if (follower.held !== null || follower.epoch === undefined) continue // recovering already, or taking the next one whatever it is
      follower.replay = noEntries
      follower.next = 0
      this.recover(follower, follower.last)
    }
  }

  /** Read the history after `after` and replay it (then what is held) to this follower. */
  recover (follower: Follower, after: number): void {
    this.#read(follower, after, (read) => {
      if (read.epoch !== follower.epoch || (after < read.top && read.entries[0]?.offset !== after + 1)) {
        const reason = read.epoch !== follower.epoch ? 'epoch' : 'trimmed'
        // What was held of another epoch came before this read: it is of the history that was lost.
        if (reason === 'epoch') follower.held = follower.held!.filter((entry) => entry.epoch === read.epoch)
        follower.epoch = read.epoch
        follower.last = read.top
        follower.replay = noEntries
        follower.afterReplay = this.#resync(reason, { offset: read.top, epoch: read.epoch })
      } else {
        follower.replay = read.entries
        follower.afterReplay = undefined
      }
      follower.next = 0
      follower.pull()
    })
  }

  #subscribed (position: Position, recovered: number): Subscribed {
    return { kind: 'subscribed', topic: this.topic, position, recovered }
  }

  #resync (reason: ResyncReason, position: Position): Resync {
    return { kind: 'resync', topic: this.topic, reason, position }
  }

  /**
   * Read (shared with the followers reading from the same offset), then `then` unless the
   * follower left. Always after this call returns, never on the caller's stack (a subscriber's
   * or a publisher's): `then` hands the connection its first item.
   */
  #read (follower: Follower, after: number, then: (read: Read) => void): void {
    follower.held ??= []
    let read = this.#reads.get(after)
    if (read === undefined) {
      let stored: Promise<HistoryRead>
      try {
        stored = Promise.resolve(this.#store.read(this.topic, after, this.#limits))
      } catch (error) {
        stored = Promise.reject(error)
      }
      // Made into entries once, for every follower that shares the read (and their `Publication`s with them).
      const shared = read = stored.then(({ epoch, top, entries }) =>
        ({ epoch, top, entries: entries.map(({ offset, message }) => ({ offset, epoch, message })) }))
      this.#reads.set(after, shared)
      const forget = (): void => { if (this.#reads.get(after) === shared) this.#reads.delete(after) }
      shared.then(forget, (error: unknown) => {
        forget()
        this.#log.error({ err: error, topic: this.topic }, 'WebSocket topic history could not be read: its followers resync')
      })
    }
    read.then((result) => {
      if (this.followers.get(follower.connection) === follower) then(result)
    }, () => {
      if (this.followers.get(follower.connection) !== follower) return
      // Live from the next publication on, whatever it is; the client is told it may have missed some.
      follower.replay = noEntries
      follower.afterReplay = this.#resync('unavailable', { offset: follower.last, epoch: follower.epoch ?? '' })
      follower.last = -1
      follower.epoch = undefined
      follower.next = 0
      follower.pull()
    })
  }
}
