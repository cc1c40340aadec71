/**
 * Positioned subscribers ("followers") of topics with history: each gets every publication
 * once, in order, as a `Publication`, or is told `resync` where the history cannot serve it;
 * never a silent gap. Recovery from `since` replays the history, then what came live meanwhile.
 *
 * Each follower is one state machine; every event goes through `Follower.#on`:
 *
 *   state      event                     → state      what it does
 *   ─────────  ────────────────────────  ──────────  ─────────────────────────────────────────────
 *   reading    read done                 → replaying  out = the read's entries and its event
 *                                                     (subscribed, or resync: epoch | trimmed |
 *                                                     ahead); held entries of another epoch that
 *                                                     came before the reply are of a lost history:
 *                                                     dropped
 *   reading    read failed               → replaying  out = resync 'unavailable' (a valid `since`);
 *                                                     then adrift: the next publication, whatever
 *   reading    live publication          → reading    held (bounded by the history's size)
 *   waiting    retry due                 → reading    a read is issued
 *   waiting    live publication          → waiting    held
 *   replaying  pulled                    → replaying  the next of `out`, else of `held`
 *                                        → live       both empty (→ reading if the adapter
 *                                                     reconnected meanwhile)
 *                                        → reading    a gap in `held`: read back from `last`
 *                                        → waiting    a gap again with no progress: backoff
 *   replaying  live publication          → replaying  held
 *   live       live publication (next)   → live       posted to the connection
 *   live       live publication (gap,    → reading    held; read back from `last`
 *              or the mailbox refused)
 *   live       live publication (epoch)  → replaying  out = resync 'epoch', then it
 *   live       adapter reconnected       → reading    read back from `last` (what came meanwhile)
 *   other      adapter reconnected       → (same)     remembered: read back from `last` once
 *                                                     replaying is through, instead of going live
 *   any        unfollow                  → gone       a pending retry is cancelled
 *
 * The seam: a follower holds live publications from the moment it starts reading, and a read
 * serves only followers that held before it was issued (reads are shared by the followers of
 * one offset that start in the same tick; a later one issues its own). On Redis the read also
 * waits for the topic's subscription. So what a read misses is held, and what is in both is
 * dropped by offset. A hole that the history cannot fill is told as `resync('trimmed')`; a
 * re-read that made no progress waits, with a bound and jitter, before the next one.
 *
 * Replay is pulled, one publication at a time, as `ctx.stream` is (each after the previous
 * one's `info` has run), so it bypasses `mailboxLimit` but holds no more than the read returned.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { HistoryLimits, HistoryRead, HistoryStore, Position, Publication, Resync, ResyncReason, Subscribed } from '../core/types.js'
import { kStreamMessage, type Puller } from '../actor/streams.js'
import type { ConnectionContext } from '../actor/context.js'

/** One publication as followers take it; its `Publication` is made once, for all of them (it is read-only). */
interface Entry { readonly offset: number, readonly epoch: string, readonly message: unknown, publication?: Publication }

/** An event of the subscription, and the offset the follower is at once it is handed over. */
interface Told { readonly event: Subscribed | Resync, readonly last: number }

/** A history read as followers take it. */
interface Read { readonly epoch: string, readonly top: number, readonly entries: readonly Entry[] }

export type FollowerState = 'reading' | 'waiting' | 'replaying' | 'live' | 'gone'

type FollowerEvent =
  | { readonly type: 'read', readonly read: Read }
  | { readonly type: 'readFailed' }
  | { readonly type: 'retry' }
  | { readonly type: 'pulled' }
  | { readonly type: 'publication', readonly entry: Entry }
  | { readonly type: 'reconnected' }
  | { readonly type: 'unfollow' }

/** Backoff of re-reads that made no progress: 50 ms doubling to 5 s, each 50–100 % of it (jitter). */
const RETRY_MIN_MS = 50
const RETRY_MAX_MS = 5_000
/** Re-reads without progress before the hole is taken as lost (`resync('trimmed')`). */
const RETRIES_BEFORE_RESYNC = 3

function publicationOf (topic: string, entry: Entry): Publication {
  entry.publication ??= { kind: 'publication', topic, message: entry.message, position: { offset: entry.offset, epoch: entry.epoch } }
  return entry.publication
}

const isEntry = (item: Entry | Told): item is Entry => (item as Entry).offset !== undefined

/** One positioned subscriber of one topic. */
export class Follower implements Puller {
  #state: FollowerState = 'reading'
  /** Offset of the last publication handed to the connection (with `epoch`: where the client is). */
  #last: number
  /** undefined: adrift (after `unavailable`): the next publication is taken, whatever it is. */
  #epoch: string | undefined
  /** Live publications that came while reading, waiting or replaying, in arrival order. */
  #held: Entry[] = []
  /** What to hand over next, before `held`. */
  #out: Array<Entry | Told> = []
  /** The first read: from `since` (undefined: from now). */
  #first: { readonly since: Position | undefined } | undefined
  /** The offset the read in flight is from. */
  #after = 0
  /** Re-reads in a row that did not move `last`, and where `last` was when they began. */
  #retries = 0
  #retryFrom = -1
  #retryTimer: NodeJS.Timeout | undefined
  /** The adapter reconnected while this follower was not live: read back once it is through. */
  #missedLive = false
  readonly connection: ConnectionContext
  readonly #feed: Feed

  constructor (connection: ConnectionContext, feed: Feed, since: Position | undefined) {
    this.connection = connection
    this.#feed = feed
    this.#first = { since }
    this.#last = since?.offset ?? -1
    this.#epoch = since?.epoch
    this.#read(since === undefined ? Infinity : since.offset)
  }

  pull (): void {
    this.#on({ type: 'pulled' })
  }

  publication (entry: Entry): void {
    this.#on({ type: 'publication', entry })
  }

  reconnected (): void {
    this.#on({ type: 'reconnected' })
  }

  unfollow (): void {
    this.#on({ type: 'unfollow' })
  }

  /** The one transition function (the table is in the module's comment). */
  #on (event: FollowerEvent): void {
    const state = this.#state
    if (state === 'gone') return
    switch (event.type) {
      case 'unfollow':
        this.#state = 'gone'
        clearTimeout(this.#retryTimer)
        this.#held = []
        this.#out = []
        return
      case 'publication':
        if (state === 'live') this.#live(event.entry)
        else this.#hold(event.entry)
        return
      case 'reconnected':
        // What was published meanwhile never came live. Live followers read it back now; one
        // whose read or replay is under way does once it is through (its read may have run
        // before the outage); adrift ones take what comes.
        if (state === 'live') {
          if (this.#epoch !== undefined) this.#read(this.#last)
        } else {
          this.#missedLive = true
        }
        return
      case 'read':
        if (state === 'reading') this.#readDone(event.read)
        return
      case 'readFailed':
        if (state === 'reading') this.#readFailed()
        return
      case 'retry':
        if (state === 'waiting') this.#read(this.#last)
        return
      case 'pulled':
        if (state === 'replaying') this.#next()
    }
  }

  /** live: the next one is posted; a gap or a refusal reads back, a new epoch is told first. */
  #live (entry: Entry): void {
    if (entry.offset === this.#last + 1 && entry.epoch === this.#epoch) { // the common case, first
      if (this.connection.post(entry.publication ?? publicationOf(this.#feed.topic, entry))) {
        this.#last = entry.offset
        this.#retries = 0
        return
      }
      this.#held.push(entry) // the mailbox is full: it waits in the history
      this.#read(this.#last)
      return
    }
    this.#held.push(entry)
    // Pulled from here on, never on the publisher's stack: the follower's next `info` may run then.
    this.#state = 'replaying'
    queueMicrotask(() => { this.pull() })
  }

  #hold (entry: Entry): void {
    // Bounded by the history's size: what falls off is read back from the history (or, if it
    // is gone from there too, the follower is told to resync).
    if (this.#held.length >= this.#feed.limits.size) this.#held.shift()
    this.#held.push(entry)
  }

  #read (after: number): void {
    this.#state = 'reading'
    this.#after = after
    this.#feed.read(this, after)
  }

  #readDone (read: Read): void {
    // Held before the reply, of another epoch: published before the history was lost.
    if (this.#held.some((entry) => entry.epoch !== read.epoch)) this.#held = this.#held.filter((entry) => entry.epoch === read.epoch)
    const at: Position = { offset: read.top, epoch: read.epoch }
    const first = this.#first
    this.#first = undefined
    if (first !== undefined) {
      const { since } = first
      let problem: ResyncReason | undefined
      if (since !== undefined) {
        if (since.epoch !== read.epoch) problem = 'epoch'
        else if (since.offset > read.top) problem = 'ahead'
        else if (since.offset < read.top && read.entries[0]?.offset !== since.offset + 1) problem = 'trimmed'
      }
      this.#epoch = read.epoch
      if (problem === undefined && since !== undefined) {
        this.#out = [...read.entries, { event: this.#feed.subscribed(at, read.entries.length), last: read.top }]
      } else {
        this.#last = read.top
        this.#out = [{ event: problem === undefined ? this.#feed.subscribed(at, 0) : this.#feed.resync(problem, at), last: read.top }]
      }
    } else if (read.epoch !== this.#epoch) {
      this.#epoch = read.epoch
      this.#out = [{ event: this.#feed.resync('epoch', at), last: read.top }]
    } else if (this.#after < read.top && read.entries[0]?.offset !== this.#after + 1) {
      this.#out = [{ event: this.#feed.resync('trimmed', at), last: read.top }]
    } else {
      this.#out = [...read.entries]
    }
    this.#state = 'replaying'
    this.pull()
  }

  #readFailed (): void {
    // Live from the next publication on, whatever it is; the client is told it may have missed
    // some, with where it was (a valid `since`: it may send it back).
    const first = this.#first
    this.#first = undefined
    const at: Position = this.#epoch === undefined ? { offset: 0, epoch: '' } : { offset: Math.max(this.#last, 0), epoch: this.#epoch }
    if (first !== undefined && first.since !== undefined) Object.assign(at, first.since)
    this.#out = [{ event: this.#feed.resync('unavailable', at), last: -1 }]
    this.#epoch = undefined
    this.#state = 'replaying'
    this.pull()
  }

  /** replaying: hand over the next item of `out`, then of `held`; live when both are empty. */
  #next (): void {
    const item = this.#out.shift()
    if (item !== undefined) {
      if (!isEntry(item)) {
        this.#last = item.last
        this.#hand(item.event)
      } else if (item.offset <= this.#last) {
        this.#next() // already handed over (a read overlapping what was held)
      } else if (item.offset > this.#last + 1) {
        // A hole in what the history returned: told, never silent; then on from the entry.
        this.#out.unshift(item)
        this.#last = item.offset - 1
        this.#hand(this.#feed.resync('trimmed', { offset: this.#last, epoch: item.epoch }))
      } else {
        this.#last = item.offset
        this.#hand(publicationOf(this.#feed.topic, item))
      }
      return
    }
    const held = this.#held
    for (let entry = held.shift(); entry !== undefined; entry = held.shift()) {
      if (this.#epoch === undefined) { // adrift: this one, whatever it is
        this.#epoch = entry.epoch
        this.#last = entry.offset - 1
      } else if (entry.epoch !== this.#epoch) { // the history was lost: what came before cannot be recovered
        held.unshift(entry)
        this.#epoch = entry.epoch
        this.#last = entry.offset - 1
        this.#hand(this.#feed.resync('epoch', { offset: this.#last, epoch: entry.epoch }))
        return
      }
      if (entry.offset <= this.#last) continue
      if (entry.offset > this.#last + 1) {
        held.unshift(entry)
        this.#gap(entry)
        return
      }
      this.#last = entry.offset
      this.#hand(publicationOf(this.#feed.topic, entry))
      return
    }
    if (this.#missedLive && this.#epoch !== undefined) {
      this.#missedLive = false
      this.#read(this.#last)
      return
    }
    this.#state = 'live'
  }

  /** A gap before `entry`: read it back; again with no progress, after a backoff; at last, told as lost. */
  #gap (entry: Entry): void {
    if (this.#last !== this.#retryFrom) {
      this.#retries = 0
      this.#retryFrom = this.#last
    }
    if (this.#retries === 0) {
      this.#retries = 1
      this.#read(this.#last)
      return
    }
    if (this.#retries >= RETRIES_BEFORE_RESYNC) {
      this.#retries = 0
      this.#last = entry.offset - 1
      this.#retryFrom = this.#last
      this.#hand(this.#feed.resync('trimmed', { offset: this.#last, epoch: entry.epoch }))
      return
    }
    const bound = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.#retries - 1))
    this.#retries++
    this.#state = 'waiting'
    this.#retryTimer = setTimeout(() => { this.#on({ type: 'retry' }) }, bound * (0.5 + Math.random() / 2))
    this.#retryTimer.unref()
  }

  #hand (message: Publication | Subscribed | Resync): void {
    this.connection[kStreamMessage](message, this)
  }

  /** Called by the feed with the read it was given (shared or not). */
  readSettled (read: Read | undefined): void {
    this.#on(read === undefined ? { type: 'readFailed' } : { type: 'read', read })
  }
}

/** One topic's followers on this instance. */
export class Feed {
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

  /** A connection follows from `since` (or from now). */
  follow (connection: ConnectionContext, since: Position | undefined): void {
    this.followers.get(connection)?.unfollow()
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

  /** Live publications may have been lost (the adapter was cut off): every live follower reads back from where it is. */
  catchUp (): void {
    for (const follower of this.followers.values()) follower.reconnected()
  }

  subscribed (position: Position, recovered: number): Subscribed {
    return { kind: 'subscribed', topic: this.topic, position, recovered }
  }

  resync (reason: ResyncReason, position: Position): Resync {
    return { kind: 'resync', topic: this.topic, reason, position }
  }

  /**
   * A read for `follower` from `after`. Issued at the end of this tick, for every follower that
   * asked from the same offset in it: each of them held from before the read was issued, so the
   * read's seam is theirs too. Settled after this call returns, never on the caller's stack.
   */
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
