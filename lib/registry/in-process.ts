/**
 * The default adapter, `inProcessAdapter()`: it connects the apps of one process that share a
 * bus (alone, it has no one to talk to), passing messages as they are. The adapter interface
 * (`PubSubAdapter`) is in core/types.ts; `redisAdapter()` (redis.ts) connects processes and
 * machines.
 */
import type { LocalDelivery, PubSubAdapter } from '../core/types.js'
import { MemoryHistory } from './history.js'

/** Instances of one process that exchange publications: pass the same bus to each app's adapter. */
export class InProcessBus {
  readonly #members = new Map<string, { local: LocalDelivery, topics: Set<string> }>()
  /** Every member's delivery, for the history (which delivers each publication to all): kept as an array, not made per publication. */
  #locals: LocalDelivery[] = []
  /** The history of topics that keep one, shared by the bus's apps (as Redis is by instances). */
  readonly history = new MemoryHistory(() => this.#locals)

  join (local: LocalDelivery): Set<string> {
    const topics = new Set<string>()
    this.#members.set(local.instanceId, { local, topics })
    this.#locals = Array.from(this.#members.values(), (member) => member.local)
    return topics
  }

  leave (instanceId: string): void {
    this.#members.delete(instanceId)
    this.#locals = Array.from(this.#members.values(), (member) => member.local)
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
    history: bus.history,
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
