/**
 * The connection as callbacks and the registry see it (`ctx`): who it is, its logger, the
 * handler's timers, its topics. The actor that runs the callbacks (connection.ts) extends it
 * with the mailbox (`post`), broadcast writes and shutdown.
 */
import type { IncomingMessage } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type WebSocket from 'ws'
import type { BroadcastFrame } from '../core/types.js'
import { closeChannel, closeLogFields, logsInfo, openChannel } from '../core/diagnostics.js'
import type { ResolvedConnectionOptions } from '../core/options.js'
import type { JsonReader } from './listeners.js'
import { Timers, kTimerFired, nextTimerRef, type TimerOwner } from './timers.js'
import type { JsonOptions, RequestSnapshot, SubscribeOptions, StreamRef, StreamTo, TerminateReason, TimerRef, Topic, WebSocketContext, WebSocketHandler } from '../core/types.js'
import { nameOf, topicName } from '../core/topics.js'
import { kStreamFailed, kStreamMessage, type Puller } from './streams.js'

// Symbol keys for what the actor (connection.ts) shares with this base: ctx stays what the
// typed API says, with nothing at `ctx.ws` or `ctx.phase` for JavaScript to reach around the actor.
export const kRoute = Symbol('fastify-ws-handlers.route')
export const kWs = Symbol('fastify-ws-handlers.ws')
export const kPhase = Symbol('fastify-ws-handlers.phase')
export const kShutdown = Symbol('fastify-ws-handlers.shutdown')
export const kWriteShared = Symbol('fastify-ws-handlers.write-shared')
/** Items waiting in the connection's mailbox. */
export const kQueued = Symbol('fastify-ws-handlers.queued')
/** The connection's number in its registry: its id is the registry's instance id and this (see `id`). */
export const kSerial = Symbol('fastify-ws-handlers.serial')

/** Where a connection is in its life: see the diagram in connection.ts. */
export type Phase = 'open' | 'closing' | 'closed'

/** What every connection of one route shares (built by the route, route/upgrade.ts). */
export interface RouteContext {
  readonly url: string
  readonly handler: WebSocketHandler<unknown, unknown>
  readonly log: FastifyBaseLogger
  readonly registry: ConnectionRegistry
  /** ms to wait for the peer's close reply before the socket is destroyed. */
  readonly closeTimeout: number
  /** JSON routes: how text becomes `json` frames, and what bad input gets. */
  readonly json?: { readonly read: JsonReader, readonly onInvalid: NonNullable<JsonOptions['onInvalid']> } | undefined
}

/** What a connection needs of the app-wide registry (registry/registry.ts implements it). */
export interface ConnectionRegistry {
  /** A number for the next connection: a small integer is stored inline, an id string would cost ≈ 32 B per connection. */
  nextSerial(): number
  /** The id of the connection with this number: `<instance id>-<serial in base 36>`. */
  idOf(serial: number): string
  add(connection: ConnectionContext): void
  subscribe(connection: ConnectionContext, topic: string, positioned?: SubscribeOptions): boolean
  unsubscribe(connection: ConnectionContext, topic: string): boolean
  /** The connection's terminate has settled (or it had none): it no longer counts. */
  remove(connection: ConnectionContext): void
}

/**
 * What the upgrade hands over: the state and options `init` produced, and the request snapshot
 * (the registry counts the connection by its routeUrl and ip from the 101 on).
 */
export interface Upgrade {
  readonly state: unknown
  readonly options: ResolvedConnectionOptions
  readonly request: RequestSnapshot
  /** The raw HTTP request, for the open channel's observers only (not kept). */
  readonly raw: IncomingMessage
}

const noTopics: readonly string[] = Object.freeze([])

export abstract class ConnectionContext implements WebSocketContext<unknown>, TimerOwner {
  readonly [kSerial]: number
  readonly request: RequestSnapshot
  protected readonly [kRoute]: RouteContext
  protected readonly [kWs]: WebSocket
  protected [kPhase]: Phase = 'open'
  #timers: Timers | undefined
  #log: FastifyBaseLogger | undefined
  /**
   * Few per connection: an array is the smallest. Replaced, never changed in place (and frozen),
   * so that `ctx.topics` can be iterated while the loop unsubscribes.
   */
  #topics: readonly string[] | undefined
  /** When it opened, in whole ms of performance.now(): a small integer is stored inline, a double would cost 16 B. */
  readonly #openedAt = Math.round(performance.now())

  constructor (route: RouteContext, ws: WebSocket, upgrade: Upgrade) {
    this[kSerial] = route.registry.nextSerial()
    this.request = upgrade.request
    this[kRoute] = route
    this[kWs] = ws
  }

  abstract post (message: unknown): boolean
  abstract [kTimerFired] (message: unknown): void
  abstract [kStreamMessage] (message: unknown, pullAfter: Puller | undefined): void
  abstract [kStreamFailed] (error: unknown): void
  /** A drain or app.close(): close with `code` (1012, or 1001). */
  abstract [kShutdown] (code: number): void
  abstract get [kQueued] (): number
  /** `broadcast`: write a frame encoded once for every subscriber; false when not written. */
  abstract [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean

  /** Made when asked for (logs, the app): most connections never need the string. */
  get id (): string {
    return this[kRoute].registry.idOf(this[kSerial])
  }

  get alive (): boolean {
    return this[kPhase] !== 'closed'
  }

  get bufferedAmount (): number {
    return this[kWs].bufferedAmount
  }

  get log (): FastifyBaseLogger {
    this.#log ??= this[kRoute].log.child({ reqId: this.request.id, wsId: this.id, wsRoute: this[kRoute].url })
    return this.#log
  }

  sendAfter (ms: number, message: unknown): TimerRef {
    return ConnectionContext.#startTimer(this, ms, message, false)
  }

  startTimer (ms: number, message: unknown): TimerRef {
    return ConnectionContext.#startTimer(this, ms, message, true)
  }

  cancelTimer (ref: TimerRef): boolean {
    return this.#timers?.cancel(ref) ?? false
  }

  stream (source: AsyncIterable<unknown> | Iterable<unknown>, to: StreamTo<unknown, unknown>): StreamRef {
    if (this[kPhase] === 'closed') return 0 // after terminate: nothing will run
    return (this.#timers ??= new Timers(this)).stream(source, to)
  }

  stopStream (ref: StreamRef): boolean {
    return this.#timers?.stopStream(ref) ?? false
  }

  get topics (): readonly string[] {
    return this.#topics ?? noTopics
  }

  subscribe (to: string | Topic<unknown>, options?: SubscribeOptions): boolean {
    const topic = topicName(to)
    if (this[kPhase] === 'closed' || !this[kRoute].registry.subscribe(this, topic, options)) return false
    // A literal: an empty array's first push reserves room for 17 (+136 B per connection).
    this.#topics = Object.freeze(this.#topics === undefined ? [topic] : [...this.#topics, topic])
    return true
  }

  unsubscribe (to: string | Topic<unknown>): boolean {
    const topic = nameOf(to)
    if (!this[kRoute].registry.unsubscribe(this, topic)) return false
    const left = this.#topics!.filter((subscribed) => subscribed !== topic)
    this.#topics = left.length === 0 ? undefined : Object.freeze(left)
    return true
  }

  /** Once wired: join the registry, log the open line, tell the open channel. */
  protected announceOpen (raw: IncomingMessage): void {
    this[kRoute].registry.add(this)
    if (logsInfo(this[kRoute].log)) this.log.info({ ip: this.request.ip, protocol: this.request.protocol }, 'WebSocket open')
    if (openChannel.hasSubscribers) openChannel.publish({ ctx: this, request: raw })
  }

  /** Before terminate: leave every topic, cancel every timer, tell the close channel, log the close line. */
  protected announceClose (reason: TerminateReason): void {
    for (const topic of this.#topics ?? noTopics) this[kRoute].registry.unsubscribe(this, topic)
    this.#topics = undefined
    this.#timers?.clear()
    if (closeChannel.hasSubscribers) closeChannel.publish({ ctx: this, reason })
    if (logsInfo(this[kRoute].log)) this.log.info(closeLogFields(reason, this.#openedAt), 'WebSocket closed')
  }

  // Static: a private instance method would cost every instance a brand slot (8 B).
  static #startTimer (self: ConnectionContext, ms: number, message: unknown, wrap: boolean): TimerRef {
    if (self[kPhase] === 'closed') return nextTimerRef(ms)
    return (self.#timers ??= new Timers(self)).start(ms, message, wrap)
  }
}
