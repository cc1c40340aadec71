/**
 * The Redis adapter (`fastify-ws-handlers/redis`): several instances of an app share topics and
 * posts by connection id over Redis pub/sub (sharded pub/sub on a Redis Cluster), on ioredis.
 *
 * - Each instance subscribes to a topic's channel only while one of its own connections is in
 *   the topic, and to one channel of its own for posts by id (ids start with the instance id).
 * - Without history, delivery is at most once, as Redis pub/sub is: a message published while
 *   an instance is disconnected is not replayed to it. Topics with history keep their
 *   publications in Redis Streams (redis-history.ts), and followers recover what they missed.
 *   Messages travel as JSON (and local subscribers get the same JSON copy: `wire: 'json'`);
 *   broadcast frames as bytes.
 * - What arrives is checked before it is used; what cannot be read is dropped and logged.
 * - app.close() is bounded by the plugin's closeTimeout whatever Redis does, and leaves nothing.
 * - The plugin delivers to local subscribers itself, so local delivery never waits for Redis and
 *   goes on while Redis is away. Losing Redis is logged with the code FST_WS_REDIS (once per
 *   outage); ioredis reconnects and resubscribes; publishing meanwhile reaches this instance only
 *   (nothing queues up in memory). Nothing throws into the app.
 */
import type { FastifyBaseLogger } from 'fastify'
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { BroadcastFrame, HistoryLimits, HistoryRead, HistoryStore, LocalDelivery, Position, PubSubAdapter } from '../core/types.js'
import { InvalidOptionError, RedisAdapterError } from '../core/errors.js'
import { APPEND_SCRIPT, READ_SCRIPT, hashTagOf, historyReadOf, newEpoch, readArgs } from './redis-history.js'
import { settledWithin } from '../core/timeout.js'
import { adapterChannel } from '../core/diagnostics.js'
import { watchCluster, clusterDefaults, type ClusterWatch } from './redis-cluster.js'
import { BINARY, POST, PUBLISH, TEXT, decodeWire, encodeWire, keptHead } from './redis-wire.js'

export { decodeWire, encodeWire, keptHead, type WireMessage } from './redis-wire.js'

/**
 * How long a history read waits for its topic's SUBSCRIBE to be confirmed, and then for the
 * reading connection to be back (a reconnect under way), before it fails.
 */
const READ_WAIT_MS = 2_000

export interface RedisAdapterOptions {
  /** Default: `REDIS_URL`, else redis://127.0.0.1:6379. */
  url?: string
  /** ioredis options for both connections (the adapter sets `lazyConnect`, `connectionName`, and no offline queue for publishing). */
  redisOptions?: RedisOptions
  /** Prefix of the channel and key names, so that apps sharing one Redis do not hear each other. Default `fws:`. */
  channelPrefix?: string
  /**
   * A Redis Cluster (Redis >= 7): its seed nodes. Topics then travel on sharded pub/sub
   * (SPUBLISH, SSUBSCRIBE), each on the shard that holds its history, so topics spread over
   * the shards. `url` is not used then; `redisOptions` apply to every node.
   */
  cluster?: ClusterNode[]
  /** ioredis Cluster options (with `cluster`). */
  clusterOptions?: ClusterOptions
}

/** The Redis adapter, with what a health check asks. */
export interface RedisPubSubAdapter extends PubSubAdapter {
  /**
   * Redis is there for this instance: both connections up (on a Redis Cluster, a connection to
   * every master that holds slots) and, after an outage, every topic subscribed again: publishing
   * reaches other instances and subscriptions are live. For a `/health` route.
   */
  readonly connected: boolean
}

/** What the adapter runs its scripts with (ioredis's `defineCommand`). */
interface Scripted {
  fwsAppend(stream: string, meta: string, head: Buffer, json: string, size: number, maxAgeMs: number, epoch: string, channel: string, command: string): Promise<[number, string]>
  fwsRead(stream: string, meta: string, ...args: Array<string | number>): Promise<unknown[]>
}

type Connection = (Redis | Cluster) & Partial<Scripted>

/** Whether `connection` is ready, or becomes so within `ms`. */
async function readyWithin (connection: Connection, ms: number): Promise<boolean> {
  let onReady!: () => void
  const ready = new Promise<boolean>((resolve) => {
    onReady = () => { resolve(true) }
    connection.once('ready', onReady)
  })
  try {
    return await settledWithin(ready, ms) === true
  } finally {
    connection.off('ready', onReady)
  }
}

export function redisAdapter (options: RedisAdapterOptions = {}): RedisPubSubAdapter {
  const url = options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const prefix = options.channelPrefix ?? 'fws:'
  // Hash tags in the prefix would put every topic in one slot of a cluster.
  if (/[{}]/.test(prefix)) throw new InvalidOptionError('channelPrefix', `no { or } (they are Redis Cluster hash tags), got "${prefix}"`)
  const sharded = options.cluster !== undefined
  const where = sharded ? `the Redis Cluster at ${JSON.stringify(options.cluster)}` : url
  /** A topic's channel, stream and hash share its hash tag: one slot on a cluster. */
  const channels = new Map<string, string>()
  const channelTopics = new Map<string, string>()
  const topicChannel = (topic: string): string => {
    let channel = channels.get(topic)
    if (channel === undefined) {
      channel = `${prefix}t:{${hashTagOf(topic)}}`
      if (channels.size >= 10_000) channels.clear()
      channels.set(topic, channel)
    }
    return channel
  }
  const keysOf = (topic: string): [string, string] => {
    const tag = hashTagOf(topic)
    return [`${prefix}h:{${tag}}`, `${prefix}m:{${tag}}`]
  }
  /**
   * SUBSCRIBEs (SSUBSCRIBEs) not yet confirmed: a history read waits for its topic's, so that what
   * it misses arrives live; at most READ_WAIT_MS, and one that failed fails the read (its
   * followers are told `unavailable`, never given a seam that is not live).
   */
  const subscribing = new Map<string, Promise<void>>()
  let local: LocalDelivery
  let origin: Buffer
  let publisher: Connection
  let subscriber: Connection
  let log: FastifyBaseLogger
  let closing = false
  let down = false
  /** Connected once: a later 'ready' is a reconnect. */
  let started = false
  /** On a Redis Cluster: its masters and shard subscribers, watched (redis-cluster.ts). */
  let cluster: ClusterWatch | undefined
  /** The subscriber connection (or a shard's) came back since every topic was last subscribed again. */
  let resubscribeDue = false
  /** The last error a connection reported: what a failed start names. */
  let lastError: Error | undefined
  const drops = { lastLoggedAt: -Infinity, since: 0 }

  function lost (what: string, error?: Error): void {
    if (error !== undefined) lastError = error
    if (closing) return
    if (adapterChannel.hasSubscribers) adapterChannel.publish({ event: 'error', what, error, instanceId: local.instanceId })
    if (down) return
    down = true
    log.error({ err: new RedisAdapterError(`${what} (${where})${error === undefined ? '' : `: ${error.message}`}; reconnecting, local delivery goes on`) },
      'Redis adapter lost Redis')
  }

  function send (channel: string, payload: Buffer): void {
    (sharded ? publisher.spublish(channel, payload) : publisher.publish(channel, payload)).catch((error: Error) => lost('publishing failed', error))
  }

  /** A message that cannot be read is dropped: logged at most once a second (with the count), so a flood cannot fill the logs. */
  function drop (channel: Buffer, problem: string): void {
    drops.since++
    if (adapterChannel.hasSubscribers) adapterChannel.publish({ event: 'dropped', problem, instanceId: local.instanceId })
    const now = performance.now()
    if (now - drops.lastLoggedAt < 1000) return
    log.warn({ code: 'FST_WS_REDIS', channel: channel.toString(), problem, dropped: drops.since }, 'Redis adapter dropped a message it cannot read')
    drops.lastLoggedAt = now
    drops.since = 0
  }

  // ioredis's event: nothing may throw out of here (a process crash). Any bytes can arrive on a
  // channel under the prefix: another app, an older version, a bug.
  function receive (channel: Buffer, payload: Buffer): void {
    try {
      const decoded = decodeWire(payload)
      if (typeof decoded === 'string') {
        drop(channel, decoded)
        return
      }
      const { message } = decoded
      // Our own was delivered locally already, but for a kept publication (it comes back with its
      // position) and a broadcast (the registry writes one to a topic with history only now).
      const own = decoded.origin.equals(origin)
      if (own && (message.kind === 'publish' || message.kind === 'post')) return
      if (adapterChannel.hasSubscribers && !own) adapterChannel.publish({ event: 'delivery', kind: message.kind, lagMs: Date.now() - decoded.sentAt, instanceId: local.instanceId })
      if (message.kind === 'post') {
        local.post(message.id, message.message)
        return
      }
      const topic = channelTopics.get(channel.toString())
      if (topic === undefined) return // a channel left a moment ago
      if (message.kind === 'kept') local.publication(topic, message.message, message.position)
      else if (message.kind === 'publish') local.publish(topic, message.message)
      else local.broadcast(topic, message.frame, message.except, own)
    } catch (error) {
      drop(channel, (error as Error).message) // its JSON does not parse, or delivering it failed
    }
  }

  /** One wait for the reading connection, shared by the reads that need it (not a listener each). */
  let publisherBack: Promise<boolean> | undefined
  function publisherReady (): Promise<boolean> {
    if (publisher.status === 'ready') return Promise.resolve(true)
    return (publisherBack ??= readyWithin(publisher, READ_WAIT_MS).finally(() => { publisherBack = undefined }))
  }

  const history: HistoryStore = {
    async append (topic: string, message: unknown, json = JSON.stringify(message), limits: HistoryLimits): Promise<Position> {
      const [stream, meta] = keysOf(topic)
      try {
        const [offset, epoch] = await publisher.fwsAppend!(stream, meta, keptHead(origin), json, limits.size, limits.maxAgeMs ?? 0, newEpoch(),
          topicChannel(topic), sharded ? 'SPUBLISH' : 'PUBLISH')
        return { offset: Number(offset), epoch: String(epoch) }
      } catch (error) {
        lost('keeping a publication failed', error as Error)
        throw new RedisAdapterError(`a publication to "${topic}" was not kept (${where}): ${(error as Error).message}`)
      }
    },
    async read (topic: string, after: number, limits: HistoryLimits): Promise<HistoryRead> {
      const pending = subscribing.get(topic) // what this read misses must arrive live
      if (pending !== undefined && await settledWithin(pending.then(() => true), READ_WAIT_MS) === undefined) {
        throw new RedisAdapterError(`the subscription to "${topic}" is not confirmed after ${READ_WAIT_MS} ms (${where})`)
      }
      // The subscriber may be back before the publishing connection, which reads: a gap seen
      // live then waits for it, rather than failing (its followers told `unavailable`).
      if (!await publisherReady()) {
        throw new RedisAdapterError(`the history of "${topic}" cannot be read: the connection to Redis is not back after ${READ_WAIT_MS} ms (${where})`)
      }
      const [stream, meta] = keysOf(topic)
      return historyReadOf(await publisher.fwsRead!(stream, meta, ...readArgs(after, limits)))
    }
  }

  /**
   * Subscribe `topic`'s channel. A SUBSCRIBE that Redis never confirmed (rejected while it was
   * down) is not in what ioredis subscribes again on its own: every topic is subscribed anew when
   * the subscriber connection is back (resubscribe), so no topic stays deaf.
   */
  function listen (topic: string): void {
    const channel = topicChannel(topic)
    channelTopics.set(channel, topic)
    const confirmed: Promise<void> = (sharded ? subscriber.ssubscribe(channel) : subscriber.subscribe(channel)).then(() => {
      if (subscribing.get(topic) === confirmed) subscribing.delete(topic)
    }, (error: Error) => {
      lost('subscribing failed', error)
      throw error // the read that waits for it fails (and is told why); resubscribe() tries again
    })
    confirmed.catch(() => {}) // waited on by reads only: not an unhandled rejection
    subscribing.set(topic, confirmed)
  }

  /** Every topic subscribed again (what the subscriber connection lost or a moved slot took); resolves with whether Redis confirmed them all. */
  async function resubscribe (): Promise<boolean> {
    for (const topic of channelTopics.values()) listen(topic)
    const confirmations = await Promise.allSettled(subscribing.values())
    return confirmations.every((confirmation) => confirmation.status === 'fulfilled')
  }

  /** Both connections up, and on a cluster every master that holds slots. */
  const healthy = (): boolean => publisher.status === 'ready' && subscriber.status === 'ready' && (cluster?.healthy() ?? true)

  /**
   * Back from an outage, or the cluster changed: once every topic is subscribed again (if
   * `subscriptions` may have been lost) and the cluster is whole, the outage's end is logged and
   * followers read back what never came live. While something is still missing this waits for
   * the next change (the loss was logged already).
   */
  async function comeBack (subscriptions: boolean): Promise<void> {
    resubscribeDue ||= subscriptions
    if (!resubscribeDue && !down) return // nothing was lost (a cluster's routine slots refresh)
    if (!started || closing || !healthy()) return
    if (resubscribeDue) {
      resubscribeDue = false
      if (!await resubscribe()) {
        resubscribeDue = true // one was rejected (and logged): the next return tries again
        return
      }
    }
    /* c8 ignore next -- a race: Redis went again (or the app closed) while the topics were confirmed; the next return completes */
    if (closing || !healthy()) return
    if (down) {
      down = false
      log.warn({ code: 'FST_WS_REDIS' }, 'Redis adapter reconnected and resubscribed')
    }
    local.reconnected()
  }

  /** An ioredis listener's call of comeBack(): nothing may throw out of here. */
  function backFrom (subscriptions: boolean): void {
    comeBack(subscriptions).catch((error: unknown) => {
      /* c8 ignore next -- reconnected() only starts reads, whose failures it handles itself */
      log.error({ err: error }, 'WebSocket followers could not catch up after Redis came back')
    })
  }

  return {
    wire: 'json',
    history,
    ownBroadcastsComeBack: true,
    get connected () {
      return started && !closing && !down && healthy()
    },
    async start (delivery, logger) {
      local = delivery
      log = logger
      origin = Buffer.from(delivery.instanceId, 'hex')
      const base: RedisOptions = { ...options.redisOptions, lazyConnect: true }
      const connect = (role: string, extra: RedisOptions): Connection => sharded
        ? new Cluster(options.cluster!, {
          ...clusterDefaults(options.clusterOptions),
          lazyConnect: true,
          enableOfflineQueue: extra.enableOfflineQueue ?? true,
          shardedSubscribers: role === 'sub',
          redisOptions: { ...options.redisOptions, connectionName: `fws-${delivery.instanceId}-${role}` }
        })
        : new Redis(url, { ...base, ...extra, connectionName: `fws-${delivery.instanceId}-${role}` })
      // Publishing never waits for Redis: no offline queue. (A command in flight when the connection
      // drops is sent again once it is back, as ioredis does: turning that off leaves its promise
      // pending forever in ioredis 5. So a publication whose reply was lost may be kept twice.)
      publisher = connect('pub', { enableOfflineQueue: false })
      subscriber = connect('sub', {})
      publisher.defineCommand('fwsAppend', { numberOfKeys: 2, lua: APPEND_SCRIPT })
      publisher.defineCommand('fwsRead', { numberOfKeys: 2, lua: READ_SCRIPT })
      // Back from an outage: every topic again (an ioredis listener: listen() only starts commands).
      for (const connection of [publisher, subscriber]) {
        connection.on('error', (error: Error) => lost('connection error', error))
        connection.on('close', () => lost('connection closed'))
      }
      // Back from an outage: every topic again, then what was published meanwhile is read back.
      if (sharded) {
        cluster = watchCluster(publisher as Cluster, subscriber as Cluster, {
          lost,
          changed: backFrom
        })
      } else {
        subscriber.on('ready', () => backFrom(true))
        publisher.on('ready', () => backFrom(false))
      }
      subscriber.on('messageBuffer', receive)
      subscriber.on('smessageBuffer', receive)
      try {
        await Promise.all([publisher.connect(), subscriber.connect()])
        await cluster?.connectMasters()
        const own = `${prefix}i:{${delivery.instanceId}}`
        await (sharded ? subscriber.ssubscribe(own) : subscriber.subscribe(own))
        started = true
      } catch (error) {
        closing = true
        publisher.disconnect()
        subscriber.disconnect()
        // ioredis rejects with "Connection is closed."; the cause (ECONNREFUSED, ENOTFOUND, an
        // authentication error) is in the connection's error event.
        /* c8 ignore next -- ioredis reports a failed connect on its error event first */
        const cause = lastError ?? (error as Error)
        throw new RedisAdapterError(`cannot reach Redis at ${where}: ${cause.message}`)
      }
    },
    subscribe: listen,
    unsubscribe (topic) {
      const channel = topicChannel(topic)
      channelTopics.delete(channel)
      subscribing.delete(topic)
      ;(sharded ? subscriber.sunsubscribe(channel) : subscriber.unsubscribe(channel)).catch((error: Error) => lost('unsubscribing failed', error))
    },
    // `json`: the registry encoded the message once (wire: 'json'); a direct caller may not have.
    publish (topic, message, json = JSON.stringify(message)) {
      send(topicChannel(topic), encodeWire(origin, PUBLISH, '', Buffer.from(json)))
    },
    broadcast (topic: string, frame: BroadcastFrame, except: string | undefined) {
      send(topicChannel(topic), encodeWire(origin, frame.binary ? BINARY : TEXT, except ?? '', frame.data))
    },
    post (id, message, json = JSON.stringify(message)) {
      const instance = id.slice(0, id.indexOf('-'))
      if (!/^[0-9a-f]{8}$/.test(instance)) return false // not an id any instance gave
      send(`${prefix}i:{${instance}}`, encodeWire(origin, POST, id, Buffer.from(json)))
      return true
    },
    async close (timeoutMs) {
      closing = true
      // A polite QUIT while Redis answers, bounded; then, whatever happened, both connections
      // are dropped for good: no reconnect timer, no socket, no subscription comes back.
      const both = [publisher, subscriber]
      if (both.every((connection) => connection.status === 'ready')) {
        await settledWithin(Promise.allSettled(both.map(async (connection) => await connection.quit())), timeoutMs)
      }
      for (const connection of both) {
        const nodes = connection instanceof Redis ? [connection] : connection.nodes()
        connection.disconnect()
        // disconnect() ends the socket and keeps a timer to destroy it if Redis never answers the
        // FIN (a silent Redis): destroy it now, so that nothing is left to hold the process.
        for (const node of nodes) node.stream?.destroy()
      }
    }
  }
}
