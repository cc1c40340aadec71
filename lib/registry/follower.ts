/**
 * One positioned subscriber ("follower") of a topic with history (its topic's `Feed` is in
 * followers.ts): every publication once, in order, as a `Publication`, or `resync` where the
 * history cannot serve it; never a silent gap. Recovery from `since` replays the history, then
 * what came live meanwhile. A follower is one state machine; every event goes through `#on`:
 *
 *   state      event                     → state      what it does
 *   ─────────  ────────────────────────  ──────────  ─────────────────────────────────────────────
 *   reading    read                      → replaying  the read's entries, then its event
 *                                                     (subscribed, or resync: epoch | trimmed |
 *                                                     ahead); held entries of another epoch that
 *                                                     came before the reply are of a lost history:
 *                                                     dropped
 *   reading    readFailed                → replaying  resync 'unavailable' (a valid `since`), then
 *                                                     adrift: the next publication, whatever it is
 *   reading    publication               → reading    held (bounded by the history's size)
 *   waiting    retry (the backoff's end) → reading    a read is issued
 *   waiting    publication               → waiting    held
 *   replaying  pulled                    → replaying  the next of the replay, else of `held`
 *                                        → live       both empty
 *                                        → reading    both empty, the adapter reconnected meanwhile;
 *                                                     or a gap in `held`: read back from `last`
 *                                        → waiting    a gap again with no progress: backoff
 *   replaying  publication               → replaying  held
 *   live       publication (the next)    → live       posted to the connection
 *   live       publication (a gap, or    → reading    held; read back from `last`
 *              the mailbox refused it)
 *   live       publication (other)       → replaying  held, pulled from here on (a new epoch's
 *                                                     resync first; adrift: taken as it is)
 *   live       reconnected               → reading    read back from `last` (what came meanwhile)
 *   other      reconnected               → (same)     remembered for the end of the replay
 *   any        unfollow                  → gone       a pending retry is cancelled
 *
 * The seam: a follower holds live publications from the moment it starts reading, and its read
 * is issued after that (followers.ts shares a read only among those that asked before it was
 * issued). On Redis the read also waits for the topic's subscription. So what a read misses is
 * held, and what is in both is dropped by offset. A hole that the history cannot fill is told
 * as `resync('trimmed')`; a re-read that made no progress waits, with a bound and jitter.
 *
 * Replay is pulled, one publication at a time, as `ctx.stream` is (each after the previous
 * one's `info` has run), so it bypasses `mailboxLimit` but holds no more than the read returned.
 */
import type { HistoryLimits, Position, Publication, Resync, ResyncReason, Subscribed } from '../core/types.js'
import { kStreamMessage, type Puller } from '../actor/streams.js'
import type { ConnectionContext } from '../actor/context.js'

/** One publication as followers take it; its `Publication` is made once, for all of them (it is read-only). */
export interface Entry { readonly offset: number, readonly epoch: string, readonly message: unknown, publication?: Publication }

/** A history read as followers take it (shared by the followers that asked for it). */
export interface Read { readonly epoch: string, readonly top: number, readonly entries: readonly Entry[] }

/** What a follower needs of its topic's feed. */
export interface FollowedTopic {
  readonly topic: string
  readonly limits: HistoryLimits
  /** Read the history after `after`, then call `follower.readSettled` (never on this stack). */
  read(follower: Follower, after: number): void
}

export type FollowerState = 'reading' | 'waiting' | 'replaying' | 'live' | 'gone'

type FollowerEvent = 'read' | 'readFailed' | 'retry' | 'pulled' | 'publication' | 'reconnected' | 'unfollow'

/** Backoff of re-reads that made no progress: 50 ms doubling to 5 s, each 50–100 % of it (jitter). */
const RETRY_MIN_MS = 50
const RETRY_MAX_MS = 5_000
/** Re-reads without progress before the hole is taken as lost (`resync('trimmed')`). */
const RETRIES_BEFORE_RESYNC = 3

const noEntries: readonly Entry[] = []

export function publicationOf (topic: string, entry: Entry): Publication {
  entry.publication ??= { kind: 'publication', topic, message: entry.message, position: { offset: entry.offset, epoch: entry.epoch } }
  return entry.publication
}

export class Follower implements Puller {
  #state: FollowerState = 'reading'
  /** Offset of the last publication handed to the connection (with `epoch`: where the client is). */
  #last: number
  /** undefined: adrift (after `unavailable`): the next publication is taken, whatever it is. */
  #epoch: string | undefined
  /** Live publications that came while reading, waiting or replaying, in arrival order. */
  #held: Entry[] = []
  /** The read being replayed (shared with the other followers of the read: never changed), and the next index. */
  #replay: readonly Entry[] = noEntries
  #next = 0
  /** After the replay: the event that says where the subscription is, and the offset it puts the client at. */
  #told: Subscribed | Resync | undefined
  #toldLast = 0
  /** Before the first read has settled: where the client said it was (undefined: from now). */
  #since: Position | undefined
  #first = true
  /** The offset the read in flight is from. */
  #after = 0
  /** Re-reads in a row that did not move `last`, and where `last` was when they began. */
  #retries = 0
  #retryFrom = -1
  #retryTimer: NodeJS.Timeout | undefined
  /** The adapter reconnected while this follower was not live: read back once the replay is through. */
  #missedLive = false
  readonly connection: ConnectionContext
  readonly #topic: FollowedTopic

  constructor (connection: ConnectionContext, topic: FollowedTopic, since: Position | undefined) {
    this.connection = connection
    this.#topic = topic
    this.#since = since
    this.#last = since?.offset ?? -1
    this.#epoch = since?.epoch
    this.#read(since === undefined ? Infinity : since.offset)
  }

  // The events, from the feed and the connection; no object is made per event (a publication
  // reaches every follower of its topic).
  pull (): void { this.#on('pulled') }
  publication (entry: Entry): void { this.#on('publication', entry) }
  reconnected (): void { this.#on('reconnected') }
  unfollow (): void { this.#on('unfollow') }
  /** The read this follower asked for (undefined: it failed). */
  readSettled (read: Read | undefined): void { this.#on(read === undefined ? 'readFailed' : 'read', read) }

  /** The one transition function (the table is in the module's comment). */
  #on (event: FollowerEvent, payload?: Entry | Read): void {
    const state = this.#state
    if (state === 'gone') return
    switch (event) {
      case 'unfollow':
        this.#state = 'gone'
        clearTimeout(this.#retryTimer)
        this.#held = []
        this.#replay = noEntries
        return
      case 'publication':
        if (state === 'live') this.#live(payload as Entry)
        else this.#hold(payload as Entry)
        return
      case 'reconnected':
        // What was published meanwhile never came live. A live follower reads it back now; one
        // whose read or replay is under way, once it is through (its read may have run before
        // the outage); an adrift one takes what comes.
        if (state !== 'live') this.#missedLive = true
        else if (this.#epoch !== undefined) this.#read(this.#last)
        return
      case 'read':
        if (state === 'reading') this.#readDone(payload as Read)
        return
      case 'readFailed':
        if (state === 'reading') this.#readFailed()
        return
      case 'retry':
        if (state === 'waiting') this.#read(this.#last)
        return
      case 'pulled':
        if (state === 'replaying') this.#handNext()
    }
  }

  /** live: the next one is posted; a gap or a refusal reads back; anything else is pulled. */
  #live (entry: Entry): void {
    if (entry.offset === this.#last + 1 && entry.epoch === this.#epoch) { // the common case, first
      if (this.connection.post(entry.publication ?? publicationOf(this.#topic.topic, entry))) {
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
    if (this.#held.length >= this.#topic.limits.size) this.#held.shift()
    this.#held.push(entry)
  }

  #read (after: number): void {
    this.#state = 'reading'
    this.#after = after
    this.#topic.read(this, after)
  }

  #readDone (read: Read): void {
    // Held before the reply, of another epoch: published before the history was lost.
    if (this.#held.some((entry) => entry.epoch !== read.epoch)) this.#held = this.#held.filter((entry) => entry.epoch === read.epoch)
    const at: Position = { offset: read.top, epoch: read.epoch }
    let replay = read.entries
    let told: Subscribed | Resync | undefined
    if (this.#first) {
      const since = this.#since
      let problem: ResyncReason | undefined
      if (since === undefined) replay = noEntries
      else if (since.epoch !== read.epoch) problem = 'epoch'
      else if (since.offset > read.top) problem = 'ahead'
      else if (since.offset < read.top && read.entries[0]?.offset !== since.offset + 1) problem = 'trimmed'
      told = problem === undefined ? this.#subscribed(at, replay.length) : this.#resync(problem, at)
    } else if (read.epoch !== this.#epoch) {
      told = this.#resync('epoch', at)
    } else if (this.#after < read.top && read.entries[0]?.offset !== this.#after + 1) {
      told = this.#resync('trimmed', at)
    }
    if (told?.kind === 'resync') replay = noEntries
    this.#first = false
    this.#since = undefined
    this.#epoch = read.epoch
    this.#startReplay(replay, told, read.top)
  }

  #readFailed (): void {
    // Live from the next publication on, whatever it is; the client is told it may have missed
    // some, with where it was (a valid `since`: it may send it back).
    const at = this.#since ?? (this.#epoch === undefined ? { offset: 0, epoch: '' } : { offset: this.#last, epoch: this.#epoch })
    this.#first = false
    this.#since = undefined
    this.#epoch = undefined
    this.#startReplay(noEntries, this.#resync('unavailable', at), -1)
  }

  #startReplay (replay: readonly Entry[], told: Subscribed | Resync | undefined, toldLast: number): void {
    this.#replay = replay
    this.#next = 0
    this.#told = told
    this.#toldLast = toldLast
    this.#state = 'replaying'
    this.#handNext()
  }

  /** replaying: hand over the next of the replay, then its event, then what was held; live when all is through. */
  #handNext (): void {
    const replay = this.#replay
    while (this.#next < replay.length) {
      const entry = replay[this.#next]!
      if (entry.offset <= this.#last) { // already handed over (a read overlapping what was held)
        this.#next++
        continue
      }
      if (entry.offset > this.#last + 1) {
        // A hole in what the history returned: told, never silent; then on from this entry.
        this.#last = entry.offset - 1
        this.#hand(this.#resync('trimmed', { offset: this.#last, epoch: entry.epoch }))
        return
      }
      this.#next++
      this.#last = entry.offset
      this.#hand(publicationOf(this.#topic.topic, entry))
      return
    }
    this.#replay = noEntries
    const told = this.#told
    if (told !== undefined) {
      this.#told = undefined
      this.#last = this.#toldLast
      this.#hand(told)
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
        this.#hand(this.#resync('epoch', { offset: this.#last, epoch: entry.epoch }))
        return
      }
      if (entry.offset <= this.#last) continue
      if (entry.offset > this.#last + 1) {
        held.unshift(entry)
        this.#gap(entry)
        return
      }
      this.#last = entry.offset
      this.#hand(publicationOf(this.#topic.topic, entry))
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
      this.#last = this.#retryFrom = entry.offset - 1
      this.#hand(this.#resync('trimmed', { offset: this.#last, epoch: entry.epoch }))
      return
    }
    const bound = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.#retries - 1))
    this.#retries++
    this.#state = 'waiting'
    this.#retryTimer = setTimeout(Follower.#retry, bound * (0.5 + Math.random() / 2), this).unref()
  }

  /** The backoff's timer: nothing in a transition throws (a read is only queued). */
  static #retry (self: Follower): void {
    self.#on('retry')
  }

  #hand (message: Publication | Subscribed | Resync): void {
    this.connection[kStreamMessage](message, this)
  }

  #subscribed (position: Position, recovered: number): Subscribed {
    return { kind: 'subscribed', topic: this.#topic.topic, position, recovered }
  }

  #resync (reason: ResyncReason, position: Position): Resync {
    return { kind: 'resync', topic: this.#topic.topic, reason, position }
  }
}
