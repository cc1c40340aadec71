/**
 * Topics with history: which topics keep one (the plugin's `history` option), and the history
 * of the in-process adapter (`MemoryHistory`, one per bus). The Redis adapter keeps its own in
 * Redis Streams (redis-history.ts); what subscribers do with positions is followers.ts.
 */
import { randomBytes } from 'node:crypto'
import type { HistoryLimits, HistoryRead, HistoryStore, LocalDelivery, Position } from '../core/types.js'
import { MAX_TIMER_MS } from '../core/options.js'

/** The limits of each topic, from the plugin's `history` option: an exact name wins, then the longest `prefix*`. */
export class HistoryConfig {
  readonly #exact = new Map<string, HistoryLimits>()
  /** Longest prefix first. */
  readonly #patterns: Array<[prefix: string, limits: HistoryLimits]> = []
  /** Topics are looked up on every publish: remember the answer (bounded, topics may be made per user). */
  readonly #cache = new Map<string, HistoryLimits | undefined>()

  constructor (spec: Readonly<Record<string, HistoryLimits>>) {
    for (const [key, limits] of Object.entries(spec)) {
      if (key.endsWith('*')) this.#patterns.push([key.slice(0, -1), limits])
      else this.#exact.set(key, limits)
    }
    this.#patterns.sort(([a], [b]) => b.length - a.length)
  }

  limitsOf (topic: string): HistoryLimits | undefined {
    if (this.#cache.has(topic)) return this.#cache.get(topic)
    const limits = this.#exact.get(topic) ?? this.#patterns.find(([prefix]) => topic.startsWith(prefix))?.[1]
    if (this.#cache.size >= 10_000) this.#cache.clear()
    this.#cache.set(topic, limits)
    return limits
  }
}

/** One topic's history in memory: a ring of the last `size` messages (and their times when `maxAgeMs` is set). */
interface Ring {
  /** The newest publication's offset (0: none yet). */
  top: number
  readonly messages: unknown[]
  readonly times: number[] | undefined
  /** Index in `messages` of the oldest kept. */
  start: number
  count: number
  readonly size: number
  /** With `times`: how long an entry is kept. */
  readonly maxAgeMs: number
}

/**
 * The in-process adapter's history (shared by the apps on one `InProcessBus`). Its epoch is
 * made when the bus is: a restarted process starts a new one, so a client that recovers from
 * before the restart is told to resync. Appending delivers at once to every member of the bus.
 */
export class MemoryHistory implements HistoryStore {
  readonly epoch = randomBytes(6).toString('hex')
  readonly #rings = new Map<string, Ring>()
  readonly #members: () => readonly LocalDelivery[]
  /** Expires what is older than its topic's maxAgeMs, whether or not the topic is used again (unref'd). */
  #sweep: NodeJS.Timeout | undefined

  constructor (members: () => readonly LocalDelivery[]) {
    this.#members = members
  }

  append (topic: string, message: unknown, _json: string | undefined, limits: HistoryLimits): Position {
    let ring = this.#rings.get(topic)
    if (ring === undefined || ring.size !== limits.size || ring.maxAgeMs !== (limits.maxAgeMs ?? 0)) {
      ring = resized(ring, limits)
      this.#rings.set(topic, ring)
    }
    let now = 0
    if (ring.times !== undefined) expire(ring, (now = Date.now()) - limits.maxAgeMs!)
    const at = (ring.start + ring.count) % ring.size
    ring.messages[at] = message
    if (ring.times !== undefined) ring.times[at] = now
    if (ring.count === ring.size) ring.start = (ring.start + 1) % ring.size
    else ring.count++
    const position = { offset: ++ring.top, epoch: this.epoch }
    if (ring.times !== undefined && this.#sweep === undefined) this.#sweepIn(limits.maxAgeMs!)
    for (const member of this.#members()) member.publication(topic, message, position)
    return position
  }

  #sweepIn (ms: number): void {
    this.#sweep = setTimeout(MemoryHistory.#swept, Math.min(ms, MAX_TIMER_MS), this).unref()
  }

  /**
   * The sweep's timer: every ring with an age limit drops what expired, and lets go of its slots
   * once empty (its offset counter stays); then again when the oldest entry left expires.
   */
  static #swept (self: MemoryHistory): void {
    self.#sweep = undefined
    const now = Date.now()
    let next = Infinity
    for (const ring of self.#rings.values()) {
      if (ring.times === undefined) continue
      expire(ring, now - ring.maxAgeMs)
      if (ring.count > 0) next = Math.min(next, ring.times[ring.start]! + ring.maxAgeMs - now)
    }
    if (next !== Infinity) self.#sweepIn(Math.max(next, 1))
  }

  read (topic: string, after: number, limits: HistoryLimits): HistoryRead {
    const ring = this.#rings.get(topic)
    if (ring === undefined) return { epoch: this.epoch, top: 0, entries: [] }
    if (limits.maxAgeMs !== undefined) expire(ring, Date.now() - limits.maxAgeMs)
    const entries: Array<{ offset: number, message: unknown }> = []
    const oldest = ring.top - ring.count + 1
    for (let offset = Math.max(after + 1, oldest); offset <= ring.top; offset++) {
      entries.push({ offset, message: ring.messages[(ring.start + offset - oldest) % ring.size] })
    }
    return { epoch: this.epoch, top: ring.top, entries }
  }

  /** Messages kept in all topics (tests: the bound holds under a flood). */
  get kept (): number {
    let kept = 0
    for (const ring of this.#rings.values()) kept += ring.count
    return kept
  }
}

/**
 * A ring with the new limits, keeping the newest of what the old one held (the `history` option
 * is fixed, but two apps on one bus may differ); their age counts from now.
 */
function resized (old: Ring | undefined, limits: HistoryLimits): Ring {
  const ring: Ring = { top: old?.top ?? 0, messages: [], times: limits.maxAgeMs === undefined ? undefined : [], start: 0, count: 0, size: limits.size, maxAgeMs: limits.maxAgeMs ?? 0 }
  if (old === undefined) return ring
  const keep = Math.min(old.count, limits.size)
  for (let i = old.count - keep; i < old.count; i++) {
    const from = (old.start + i) % old.size
    ring.messages.push(old.messages[from])
    ring.times?.push(Date.now())
  }
  ring.count = keep
  return ring
}

/** Drop what is older than `before` (the oldest first: times only grow); an emptied ring lets go of its slots. */
function expire (ring: Ring, before: number): void {
  while (ring.count > 0 && ring.times![ring.start]! < before) {
    ring.messages[ring.start] = undefined
    ring.start = (ring.start + 1) % ring.size
    ring.count--
  }
  if (ring.count === 0) {
    ring.messages.length = 0
    ring.times!.length = 0
    ring.start = 0
  }
}
