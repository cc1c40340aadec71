/**
 * The adapter interface: how topics and posts by id reach other instances of the app. The
 * plugin always delivers locally itself (so local delivery never depends on a broker); an
 * adapter carries what must reach the other instances, and hands what arrives from them to
 * `LocalDelivery`. The default, `inProcessAdapter()`, connects the apps of one process that
 * share a bus (alone, it has no one to talk to); `redisAdapter()` (fastify-ws-handlers/redis)
 * connects processes and machines.
 */
import type { FastifyBaseLogger } from 'fastify'

/** A frame as `broadcast` carries it between instances. */
export interface BroadcastFrame { readonly binary: boolean, readonly data: Buffer }

/** What an adapter hands to this instance: deliver to its local connections only. */
export interface LocalDelivery {
  /** This instance's id: the prefix of its connection ids. */
  readonly instanceId: string
  /** Post `message` to every local subscriber of `topic`; the number that accepted it. */
  publish(topic: string, message: unknown): number
  /** Write `frame` to every local subscriber of `topic` but `except`; the number written to. */
  broadcast(topic: string, frame: BroadcastFrame, except: string | undefined): number
  /** Post to a local connection by id; false when it is not here (or refused). */
  post(id: string, message: unknown): boolean
}

/**
 * Carries publications and posts between instances. Every method but `start` and `close` is
 * called synchronously on the hot path: queue, never wait. Delivery is at most once.
 */
export interface PubSubAdapter {
  /**
   * How messages travel: 'json' when they cross a process boundary as JSON text. Then `publish`
   * and `post` by id give every subscriber, local ones too, the JSON copy (one rule on one
   * instance or many), and refuse what JSON cannot carry (FST_WS_NOT_SERIALIZABLE). Unset: messages
   * are passed as they are (the in-process adapter).
   */
  readonly wire?: 'json'
  /** Once, at registration (awaited): connect, and deliver what arrives through `local`. */
  start(local: LocalDelivery, log: FastifyBaseLogger): void | Promise<void>
  /** The first local connection joined `topic`: start receiving it. */
  subscribe(topic: string): void
  /** The last local connection left `topic`: stop receiving it. */
  unsubscribe(topic: string): void
  /** Deliver to the subscribers of `topic` on the other instances. */
  publish(topic: string, message: unknown): void
  /** Write to the subscribers of `topic` on the other instances (but `except`). */
  broadcast(topic: string, frame: BroadcastFrame, except: string | undefined): void
  /** Post to a connection of another instance; false when no instance can have this id. */
  post(id: string, message: unknown): boolean
  /**
   * At app.close(), after every connection has ended. `timeoutMs` (the plugin's `closeTimeout`)
   * bounds it: by then nothing of the adapter may be left (no socket, no timer, no
   * subscription), whatever its broker does; the plugin stops waiting then in any case.
   */
  close(timeoutMs: number): void | Promise<void>
}

/** Instances of one process that exchange publications: pass the same bus to each app's adapter. */
export class InProcessBus {
  readonly #members = new Map<string, { local: LocalDelivery, topics: Set<string> }>()

  join (local: LocalDelivery): Set<string> {
    const topics = new Set<string>()
    this.#members.set(local.instanceId, { local, topics })
    return topics
  }

  leave (instanceId: string): void {
    this.#members.delete(instanceId)
  }

  /** Each other member that listens to `topic`. */
  * others (instanceId: string, topic: string): Iterable<LocalDelivery> {
    for (const [id, member] of this.#members) if (id !== instanceId && member.topics.has(topic)) yield member.local
  }

  member (instanceId: string): LocalDelivery | undefined {
    return this.#members.get(instanceId)?.local
  }
}

/**
 * The default adapter. Alone (no bus given), an app is its only instance and this carries
 * nothing; apps that share an `InProcessBus` share topics and ids as instances sharing Redis
 * do, without serialising (messages are passed as they are).
 */
export function inProcessAdapter ({ bus = new InProcessBus() }: { bus?: InProcessBus } = {}): PubSubAdapter {
  let self: LocalDelivery
  let topics: Set<string>
  return {
    start (local) {
      self = local
      topics = bus.join(local)
    },
    subscribe: (topic) => { topics.add(topic) },
    unsubscribe: (topic) => { topics.delete(topic) },
    publish (topic, message) {
      for (const other of bus.others(self.instanceId, topic)) other.publish(topic, message)
    },
    broadcast (topic, frame, except) {
      for (const other of bus.others(self.instanceId, topic)) other.broadcast(topic, frame, except)
    },
    post (id, message) {
      return bus.member(instanceOf(id))?.post(id, message) ?? false
    },
    close () {
      bus.leave(self.instanceId)
    }
  }
}

/** The instance id in a connection id (`<instance>-<n>`). */
export function instanceOf (connectionId: string): string {
  return connectionId.slice(0, connectionId.indexOf('-'))
}
