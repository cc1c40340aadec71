/**
 * The app-wide table of connections and topics (decorated as `app.wsConnections`): look-up and
 * post by id, iteration and counts per route, topics with publish and broadcast, the adapter
 * that carries them to other instances, and the drain that app.close() runs (1012 in batches,
 * then wait for every terminate to settle). The connection limits and the upgrades under way
 * are admission.ts's.
 *
 * Fan-out runs no app code: `publish` posts (an idle subscriber's `info` is queued, run-queue.ts)
 * and `broadcast` writes bytes (a slow reader's close and its `terminate` are queued too). So no
 * handler runs inside these loops, none can subscribe, unsubscribe, publish or broadcast in the
 * middle of one, and every subscriber sees publications in the order they were made.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { instanceOf } from './in-process.js'
import { kSerial, kShutdown, kWriteShared, type ConnectionContext, type ConnectionRegistry } from '../actor/context.js'
import { encodeFrame } from '../wire/writes.js'
import { Admission, type ConnectionLimits, type Destroyable, type Lease } from './admission.js'
import { definedOnly, drainOptionsProblem, show } from '../core/options.js'
import { nameOf, topicName } from '../core/topics.js'
import { deliverChannel } from '../core/diagnostics.js'
import { CloseCode } from '../core/close-codes.js'
import { InvalidBroadcastError, InvalidOptionError, InvalidPositionError, MessageNotSerializableError, NoHistoryError, ShuttingDownError } from '../core/errors.js'
import type {
  BroadcastFrame, BroadcastOptions, DrainOptions, HistoryLimits, LocalDelivery, OutFrame, Position, PubSubAdapter, SubscribeOptions, Topic,
  WebSocketConnections, WebSocketContext
} from '../core/types.js'
import type { HistoryConfig } from './history.js'
import { Feed } from './followers.js'
import { DRAIN_DEFAULTS, drainInBatches } from './drain.js'

export class Registry implements ConnectionRegistry, WebSocketConnections {
  /** The prefix of this instance's connection ids; other instances route posts by it. */
  readonly instanceId = randomBytes(4).toString('hex')
  readonly #live = new Map<number, ConnectionContext>()
  /** The limits, counted from admission, and the upgrades under way (admission.ts). */
  readonly #admission: Admission
  readonly #topics = new Map<string, Set<ConnectionContext>>()
  /** Topics with history that have positioned subscribers here: their followers. */
  readonly #feeds = new Map<string, Feed>()
  readonly #history: HistoryConfig | undefined
  readonly #adapter: PubSubAdapter
  /** The adapter carries messages as JSON: every subscriber, local ones too, gets the JSON copy. */
  readonly #overJson: boolean
  readonly #log: FastifyBaseLogger
  #lastId = 0
  /** Made when the first drain begins, resolved when the last connection is gone: every drain waits on the same one. */
  #emptied: Promise<void> | undefined
  #onEmpty: (() => void) | undefined
  #draining = false
  /** The close code of the drain under way (late connections get it too). */
  #drainCode: number = CloseCode.SERVICE_RESTART

  readonly #drainDefaults: DrainOptions
  /** The plugin's closeTimeout: how long a drain waits for terminates after its last batch. */
  readonly #closeTimeout: number

  constructor (adapter: PubSubAdapter, log: FastifyBaseLogger, limits: ConnectionLimits = {}, history?: HistoryConfig, drain: DrainOptions = {}, closeTimeout = 5000) {
    this.#adapter = adapter
    this.#history = history
    this.#drainDefaults = drain
    this.#closeTimeout = closeTimeout
    this.#overJson = adapter.wire === 'json'
    this.#log = log
    this.#admission = new Admission(limits, log)
  }

  get size (): number {
    return this.#live.size
  }

  /** A drain or app.close() has begun: new upgrades are refused (503), late ones closed at once. */
  get draining (): boolean {
    return this.#draining
  }

  nextSerial (): number {
    return ++this.#lastId
  }

  idOf (serial: number): string {
    return `${this.instanceId}-${serial.toString(36)}`
  }

  /** The serial of one of this instance's ids (which may be gone), or undefined for another instance's or a malformed one. */
  #serialOf (id: string): number | undefined {
    if (instanceOf(id) !== this.instanceId) return undefined
    const serial = parseInt(id.slice(this.instanceId.length + 1), 36)
    return Number.isSafeInteger(serial) && this.idOf(serial) === id ? serial : undefined
  }

  /** Count an upgrade from its admission to its terminate, or refuse it: 503, draining (to another instance) or over a limit (admission.ts). */
  admit (route: string, ip: string, routeLimit: number | undefined, socket: Destroyable): Lease {
    if (this.#draining) throw new ShuttingDownError()
    return this.#admission.admit(route, ip, routeLimit, socket)
  }

  /** The upgrade failed: it no longer counts. Idempotent. */
  release (lease: Lease): void {
    this.#admission.release(lease)
  }

  /** The upgrade became a connection, which counts from now on, until `remove`. */
  handOver (lease: Lease): void {
    this.#admission.handOver(lease)
  }

  add (connection: ConnectionContext): void {
    this.#live.set(connection[kSerial], connection)
    // init refuses upgrades once app.close() began (503); one that was already between that
    // check and the 101 (a microtask's gap) opens, then closes with the drain's code.
    /* c8 ignore next */
    if (this.#draining) queueMicrotask(() => connection[kShutdown](this.#drainCode))
  }

  remove (connection: ConnectionContext): void {
    this.#live.delete(connection[kSerial])
    this.#admission.uncount(connection.request.routeUrl, connection.request.ip)
    if (this.#live.size === 0) this.#onEmpty?.()
  }

  get (id: string): ConnectionContext | undefined {
    const serial = this.#serialOf(id)
    return serial === undefined ? undefined : this.#live.get(serial)
  }

  values (): IterableIterator<WebSocketContext> {
    return this.#live.values()
  }

  [Symbol.iterator] (): IterableIterator<WebSocketContext> {
    return this.#live.values()
  }

  * ofRoute (url: string): IterableIterator<WebSocketContext> {
    for (const connection of this.#live.values()) if (connection.request.routeUrl === url) yield connection
  }

  countOfRoute (url: string): number {
    return this.#admission.countOfRoute(url)
  }

  post (id: string, message: unknown): boolean {
    const [json, carried] = this.#carried(message)
    const connection = this.get(id)
    const delivered = connection !== undefined ? connection.post(carried) : instanceOf(id) !== this.instanceId && this.#adapter.post(id, carried, json)
    if (deliverChannel.hasSubscribers) deliverChannel.publish({ operation: 'post', delivered: delivered ? 1 : 0, instanceId: this.instanceId })
    return delivered
  }

  /**
   * With a JSON adapter, the text the wire carries and what every subscriber, local ones too,
   * gets: what it parses to (a Date becomes a string), so that code that works on one instance
   * works on two. Otherwise the message as it is.
   */
  #carried (message: unknown): [json: string | undefined, carried: unknown] {
    const json = this.#jsonOf(message)
    return [json, json === undefined ? message : JSON.parse(json)]
  }

  /** The JSON text of `message` for a JSON adapter (what JSON cannot carry is refused here); encoded once, for the adapter too. */
  #jsonOf (message: unknown): string | undefined {
    if (!this.#overJson) return undefined
    let json: string | undefined
    try {
      json = JSON.stringify(message)
    } catch (error) {
      throw new MessageNotSerializableError((error as Error).message)
    }
    if (json !== undefined) return json
    if (message === undefined) return 'null' // travels as null, as it always did
    throw new MessageNotSerializableError(`a ${typeof message} is not JSON`)
  }

  // ---- topics ---------------------------------------------------------------

  /**
   * Called by the connection (ctx.subscribe); true when it was not subscribed yet. `topic`: a
   * name that `topicName` accepted. With `positioned`, the connection follows the topic's
   * history (followers.ts): refused, before anything changes, for a topic without one.
   */
  subscribe (connection: ConnectionContext, topic: string, positioned?: SubscribeOptions): boolean {
    let limits: HistoryLimits | undefined
    if (positioned !== undefined) {
      limits = this.#limitsOf(topic)
      checkPosition(positioned)
    }
    let subscribers = this.#topics.get(topic)
    if (subscribers === undefined) {
      this.#adapter.subscribe(topic) // first: if the adapter throws (in the handler: a crash), nothing changed here
      subscribers = new Set()
      this.#topics.set(topic, subscribers)
    }
    const before = subscribers.size
    if (subscribers.add(connection).size === before) return false
    if (limits !== undefined) {
      let feed = this.#feeds.get(topic)
      if (feed === undefined) this.#feeds.set(topic, feed = new Feed(topic, limits, this.#adapter.history!, this.#log))
      feed.follow(connection, positioned!.since)
    }
    return true
  }

  #limitsOf (topic: string): HistoryLimits {
    const limits = this.#history?.limitsOf(topic)
    if (limits === undefined) throw new NoHistoryError(topic)
    return limits
  }

  unsubscribe (connection: ConnectionContext, topic: string): boolean {
    const subscribers = this.#topics.get(topic)
    if (subscribers === undefined || !subscribers.delete(connection)) return false
    const feed = this.#feeds.get(topic)
    if (feed !== undefined) {
      feed.unfollow(connection)
      if (feed.size === 0) this.#feeds.delete(topic)
    }
    if (subscribers.size === 0) {
      this.#topics.delete(topic)
      try {
        this.#adapter.unsubscribe(topic)
      } catch (error) { // this runs on every connection's way out: an adapter's fault must not stop it
        this.#log.error({ err: error, topic }, 'WebSocket adapter failed to unsubscribe')
      }
    }
    return true
  }

  subscribers (topic: string | Topic<unknown>): IterableIterator<WebSocketContext> {
    return (this.#topics.get(nameOf(topic)) ?? noSubscribers).values()
  }

  subscriberCount (topic: string | Topic<unknown>): number {
    return this.#topics.get(nameOf(topic))?.size ?? 0
  }

  topics (): IterableIterator<string> {
    return this.#topics.keys()
  }

  publish (to: string | Topic<unknown>, message: unknown): number {
    const topic = topicName(to)
    const [json, carried] = this.#carried(message)
    const limits = this.#history?.limitsOf(topic)
    if (limits === undefined) {
      this.#adapter.publish(topic, carried, json)
      return this.#published(this.#publishHere(topic, carried))
    }
    // Kept: the history gives it its position and delivers it everywhere, here too, in order.
    let kept: Position | Promise<Position>
    try {
      kept = this.#adapter.history!.append(topic, carried, json, limits)
    } catch (error) {
      this.#notKept(topic, error)
      return this.#published(0)
    }
    if (!(kept instanceof Promise)) return this.#published(this.subscriberCount(topic)) // delivered already (in process)
    // Kept later (Redis): delivered only then, if at all, so nothing is counted now.
    kept.then(() => { this.#published(this.subscriberCount(topic)) }, (error: unknown) => {
      this.#notKept(topic, error)
      this.#published(0)
    })
    return 0
  }

  async publishConfirmed (to: string | Topic<unknown>, message: unknown): Promise<Position> {
    const topic = topicName(to)
    const limits = this.#limitsOf(topic)
    const [json, carried] = this.#carried(message)
    const position = await this.#adapter.history!.append(topic, carried, json, limits)
    this.#published(this.subscriberCount(topic))
    return position
  }

  /** Observed (the deliveries metric): a publication reached `delivered` local subscribers. */
  #published (delivered: number): number {
    if (deliverChannel.hasSubscribers) deliverChannel.publish({ operation: 'publish', delivered, instanceId: this.instanceId })
    return delivered
  }

  /** A publication the history could not keep (Redis is down): not delivered anywhere, and said so. */
  #notKept (topic: string, error: unknown): void {
    this.#log.error({ err: error, topic }, 'WebSocket publication lost: its topic\'s history could not keep it (publishConfirmed() reports this to the caller)')
  }

  broadcast (to: string | Topic<unknown>, frame: OutFrame, options: BroadcastOptions = {}): number {
    const topic = topicName(to)
    const shared = toBroadcastFrame(frame)
    this.#adapter.broadcast(topic, shared, options.except)
    // A topic with history whose publications are delivered once kept (Redis): its broadcasts are
    // written here when they come back too, in the order in which both were made.
    const comesBack = this.#adapter.ownBroadcastsComeBack === true && this.#history?.limitsOf(topic) !== undefined
    const delivered = comesBack ? 0 : this.#broadcastHere(topic, shared, options.except)
    if (deliverChannel.hasSubscribers) deliverChannel.publish({ operation: 'broadcast', delivered, instanceId: this.instanceId })
    return delivered
  }

  // ---- LocalDelivery: what the adapter brings from other instances ----------

  readonly local: LocalDelivery = {
    instanceId: this.instanceId,
    publish: (topic, message) => this.#publishHere(topic, message),
    publication: (topic, message, position) => { this.#publicationHere(topic, message, position) },
    reconnected: () => { for (const feed of this.#feeds.values()) feed.catchUp() },
    broadcast: (topic, frame, except, own = false) => own && this.#history?.limitsOf(topic) === undefined ? 0 : this.#broadcastHere(topic, frame, except),
    post: (id, message) => this.get(id)?.post(message) ?? false
  }

  #publishHere (topic: string, message: unknown): number {
    const subscribers = this.#topics.get(topic)
    if (subscribers === undefined) return 0
    let accepted = 0
    for (const connection of subscribers) if (connection.post(message)) accepted++
    return accepted
  }

  /** A publication with its position: plain subscribers get the message, followers a `Publication`. */
  #publicationHere (topic: string, message: unknown, position: Position): void {
    const subscribers = this.#topics.get(topic)
    if (subscribers === undefined) return
    const feed = this.#feeds.get(topic)
    if (feed === undefined || feed.size !== subscribers.size) {
      for (const connection of subscribers) if (feed?.followers.has(connection) !== true) connection.post(message)
    }
    feed?.publish(message, position)
  }

  /** One frame, encoded once: the same header and payload buffers go to every socket. */
  #broadcastHere (topic: string, frame: BroadcastFrame, except: string | undefined): number {
    const subscribers = this.#topics.get(topic)
    if (subscribers === undefined) return 0
    const encoded = encodeFrame(frame)
    const skipped = except === undefined ? undefined : this.#serialOf(except)
    let written = 0
    for (const connection of subscribers) {
      if (connection[kSerial] !== skipped && connection[kWriteShared](encoded, frame)) written++
    }
    return written
  }

  // ---- lifecycle --------------------------------------------------------------

  /**
   * Take this instance out of service: upgrades are refused from now on (503), and connections
   * are closed in batches (drain.ts), each with `code` (1012 by default). Waits, at most
   * `timeoutMs` after the last batch, for their terminates. Upgrades whose `init` is running are
   * refused with 503 when it settles; one still pending `closeTimeout` after the drain began has
   * its socket destroyed: an `init` that never settles must not hold app.close() (the HTTP
   * server waits for that socket).
   */
  async drain (options: DrainOptions = {}, timeoutMs = this.#closeTimeout): Promise<void> {
    const problem = drainOptionsProblem(options)
    if (problem !== undefined) throw new InvalidOptionError('drain', problem)
    // A key given as undefined is not given (exactOptionalPropertyTypes users write `x: undefined`).
    const settings: DrainOptions = { ...this.#drainDefaults, ...definedOnly(options) }
    if (!this.#draining) this.#admission.endPendingAfter(this.#closeTimeout)
    this.#draining = true
    const code = this.#drainCode = settings.code ?? CloseCode.SERVICE_RESTART
    // One wait for every drain: a second drain() must not leave the first waiting for nothing.
    const emptied = this.#emptied ??= new Promise<void>((resolve) => {
      this.#onEmpty = resolve
      if (this.#live.size === 0) resolve()
    })
    await drainInBatches([...this.#live.values()], (connection) => connection[kShutdown](code), settings, emptied)
    if (this.#live.size === 0) return
    // A terminate or callback that never settles must not hold app.close() forever.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([emptied, new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })])
    clearTimeout(timer)
  }

  /** app.close(): the drain, within `closeTimeout` as a whole (its batches in at most half of it). */
  async shutdown (): Promise<void> {
    const maxWindowMs = Math.min(this.#drainDefaults.maxWindowMs ?? DRAIN_DEFAULTS.maxWindowMs, Math.floor(this.#closeTimeout / 2))
    await this.drain({ maxWindowMs }, this.#closeTimeout - maxWindowMs)
  }
}

/** The options of a positioned subscription, and `since` a position (a bad one is the app's bug: thrown in its callback). */
function checkPosition (options: SubscribeOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('subscribe', `expected { since? }, got ${show(options)}`)
  const { since } = options
  if (since === undefined) return
  if (since === null || typeof since !== 'object' || typeof since.epoch !== 'string' || !Number.isSafeInteger(since.offset) || since.offset < 0) {
    throw new InvalidPositionError(show(since))
  }
}

const noSubscribers: ReadonlySet<ConnectionContext> = new Set()

/**
 * As strict as `reply`: text takes a string, binary a Buffer or Uint8Array. Binary data is read
 * during the call and never kept (a Buffer or a Uint8Array alike: a view, not a copy), so the
 * caller may reuse its buffer once `broadcast` returns; adapters copy what they send later.
 */
function toBroadcastFrame (frame: OutFrame): BroadcastFrame {
  const data = (frame as { data?: unknown } | undefined)?.data
  if (frame?.type === 'text' && typeof data === 'string') return { binary: false, data: Buffer.from(data) }
  if (frame?.type === 'binary' && data instanceof Uint8Array) return { binary: true, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) }
  throw new InvalidBroadcastError(show(frame))
}
