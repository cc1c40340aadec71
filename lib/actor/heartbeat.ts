/**
 * Cowboy's idle timeout and our server pings, for every connection of the process on a few
 * shared timers instead of a timer per connection (a Node `Timeout` and its holder cost about
 * 370 B of heap per idle connection).
 *
 * Only received bytes (socket data, even a partial frame or a pong) count as life. After
 * `pingInterval` ms of silence the server pings (again every `pingInterval`); after
 * `idleTimeout` ms of silence the owner closes. Each connection has one next event, due `step`
 * ms after the event before it (data, or a ping). Connections wait in one list per step length,
 * linked through fields of their own (no object per connection): a list only ever grows at its
 * tail with `now + step`, so it stays sorted by due time and one timer, set for its head, serves
 * all of it. Data moves a connection to the tail of its full-step list; a timer that finds its
 * head moved on sets itself again. With the defaults (60 s, 30 s) every connection is in one
 * list; an idle timeout that is not a multiple of the ping interval adds the list of the last,
 * shorter stretch. Times are whole milliseconds of `performance.now()` (monotonic: a wall-clock
 * step cannot close every connection at once), so the schedule is as exact as a timer's.
 */

/** The owner's method for a due event: `silentMs` of silence so far; it pings or closes, and says when next (0: never). */
export const kHeartbeat = Symbol('fastify-ws-handlers.heartbeat')

/** The fields that link a waiting object into its list; the owner (the connection) declares them, 32 B. */
export const kPrev = Symbol('fastify-ws-handlers.beat-prev')
export const kNext = Symbol('fastify-ws-handlers.beat-next')
export const kDue = Symbol('fastify-ws-handlers.beat-due')
export const kSince = Symbol('fastify-ws-handlers.beat-since')

export interface Link {
  [kPrev]: Link | undefined
  [kNext]: Link | undefined
  /** When the next event is due (ms, performance.now()). */
  [kDue]: number
  /** When the silence began: the last data, or the start. */
  [kSince]: number
}

export interface Beating extends Link {
  [kHeartbeat](silentMs: number): number
}

/** The step to the first event: a ping after `pingInterval`, or the close after `idleTimeout` (0: nothing to wait for). */
export function firstStep (idleTimeout: number, pingInterval: number): number {
  return pingInterval > 0 && (idleTimeout === 0 || pingInterval < idleTimeout) ? pingInterval : idleTimeout
}

/** The step after a ping at `silentMs` of silence: the last stretch may be shorter, so that the idle timeout stays exact. */
export function stepAfterPing (idleTimeout: number, pingInterval: number, silentMs: number): number {
  return idleTimeout === 0 ? pingInterval : Math.min(pingInterval, idleTimeout - silentMs)
}

function now (): number {
  return Math.floor(performance.now())
}

/** The connections whose next event is `step` ms after their last one, sorted by due time; the list is its own sentinel. */
class BeatList implements Link {
  declare [kPrev]: Link
  declare [kNext]: Link
  declare [kDue]: number
  declare [kSince]: number
  readonly step: number
  #timer: NodeJS.Timeout | undefined
  #timerDue = 0

  constructor (step: number) {
    this.step = step
    this[kPrev] = this[kNext] = this
    this[kDue] = this[kSince] = 0
  }

  append (link: Link, at: number): void {
    link[kDue] = at + this.step
    const tail = this[kPrev]
    link[kPrev] = tail
    link[kNext] = this
    tail[kNext] = link
    this[kPrev] = link
    if (this.#timer === undefined) this.#setTimer(link[kDue], at)
  }

  /** The list emptied: its timer goes, so that no timer keeps running for nobody. */
  emptied (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #setTimer (due: number, at: number): void {
    this.#timerDue = due
    this.#timer = setTimeout(BeatList.#fire, Math.max(due - at, 1), this).unref()
  }

  /** Every event that is due, in order; then the timer for the new head. */
  static #fire (list: BeatList): void {
    list.#timer = undefined
    const at = Math.max(now(), list.#timerDue) // a timer never fires early; the clock may round down
    let head = list[kNext]
    while (head !== list && head[kDue] <= at) {
      unlink(head)
      beat(head as Beating, at)
      head = list[kNext]
    }
    // A beat may have appended to this very list (and set a timer for its own, later, due time).
    clearTimeout(list.#timer)
    list.#timer = undefined
    if (head !== list) list.#setTimer(head[kDue], at)
  }
}

/** The owner's event (it guards its own work, so nothing here throws into the timer), then its next. */
function beat (beating: Beating, at: number): void {
  const next = beating[kHeartbeat](beating[kDue] - beating[kSince])
  if (next > 0) listFor(next).append(beating, at)
}

/** The lists by step length: a handful in any app (one per distinct pingInterval/idleTimeout pair at most two). */
const lists = new Map<number, BeatList>()

function listFor (step: number): BeatList {
  let list = lists.get(step)
  if (list === undefined) lists.set(step, list = new BeatList(step))
  return list
}

function unlink (link: Link): void {
  const prev = link[kPrev]!
  const next = link[kNext]!
  prev[kNext] = next
  next[kPrev] = prev
  link[kPrev] = link[kNext] = undefined
  if (prev === next && prev instanceof BeatList) prev.emptied()
}

/** (Re)start the silence now: the next event comes `step` ms from now (0: none). */
export function restartSilence (link: Link, step: number): void {
  const at = now()
  if (link[kPrev] !== undefined) {
    // The common case on a busy connection: already last in its list, only the times move.
    if (link[kNext] instanceof BeatList && link[kNext].step === step) {
      link[kSince] = at
      link[kDue] = at + step
      return
    }
    unlink(link)
  }
  link[kSince] = at
  if (step > 0) listFor(step).append(link, at)
}

/** No more events for this one (the connection ends). */
export function stopBeating (link: Link): void {
  if (link[kPrev] !== undefined) unlink(link)
}
