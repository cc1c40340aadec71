/**
 * The Redis adapter (`fastify-ws-handlers/redis`): several instances of an app share topics and
 * posts by connection id over Redis pub/sub, on ioredis.
 *
 * - Each instance subscribes to a topic's channel only while one of its own connections is in
 *   the topic, and to one channel of its own for posts by id (ids start with the instance id).
 * - Delivery is at most once, as Redis pub/sub is: a message published while an instance is
 *   disconnected is not replayed to it. Messages travel as JSON; broadcast frames as bytes.
 * - The plugin delivers to local subscribers itself, so local delivery never waits for Redis and
 *   goes on while Redis is away. Losing Redis is logged with the code FST_WS_REDIS (once per
 *   outage); ioredis reconnects and resubscribes; publishing meanwhile reaches this instance only
 *   (nothing queues up in memory). Nothing throws into the app.
 */
import type { FastifyBaseLogger } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import type { BroadcastFrame, LocalDelivery, PubSubAdapter } from './adapter.js'
import { RedisAdapterError } from './errors.js'

export interface RedisAdapterOptions {
  /** Default: `REDIS_URL`, else redis://127.0.0.1:6379. */
  url?: string
  /** ioredis options for both connections (the adapter sets `lazyConnect`, `connectionName`, and no offline queue for publishing). */
  redisOptions?: RedisOptions
  /** Prefix of the channel names, so that apps sharing one Redis do not hear each other. Default `fws:`. */
  channelPrefix?: string
}

// Envelope: [kind][origin instance id, 4 bytes][kind's fields][body]
const PUBLISH = 1 // body: JSON
const TEXT = 2 // [except id length][except id] body: the payload
const BINARY = 3
const POST = 4 // [target id length][target id] body: JSON

export function redisAdapter (options: RedisAdapterOptions = {}): PubSubAdapter {
  const url = options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const prefix = options.channelPrefix ?? 'fws:'
  const topicChannel = (topic: string): string => `${prefix}t:${topic}`
  let local: LocalDelivery
  let origin: Buffer
  let publisher: Redis
  let subscriber: Redis
  let log: FastifyBaseLogger
  let closing = false
  let down = false

  function lost (what: string, error?: Error): void {
    if (closing || down) return
    down = true
    log.error({ err: new RedisAdapterError(`${what} (${url})${error === undefined ? '' : `: ${error.message}`}; reconnecting, local delivery goes on`) },
      'Redis adapter lost Redis')
  }

  function send (channel: string, payload: Buffer): void {
    publisher.publish(channel, payload).catch((error: Error) => lost('publishing failed', error))
  }

  function envelope (kind: number, field: string | undefined, body: Buffer): Buffer {
    const fieldBytes = field === undefined ? undefined : Buffer.from(field)
    const head = Buffer.allocUnsafe(5 + (fieldBytes === undefined ? 0 : 1 + fieldBytes.length))
    head[0] = kind
    origin.copy(head, 1)
    if (fieldBytes !== undefined) {
      head[5] = fieldBytes.length
      fieldBytes.copy(head, 6)
    }
    return Buffer.concat([head, body])
  }

  function json (message: unknown): Buffer {
    let encoded: string | undefined
    try {
      encoded = JSON.stringify(message)
    } catch (error) {
      throw new RedisAdapterError(`a message must be JSON to travel over Redis: ${(error as Error).message}`)
    }
    return Buffer.from(encoded ?? 'null')
  }

  function receive (channel: Buffer, payload: Buffer): void {
    if (payload.length < 5 || payload.compare(origin, 0, 4, 1, 5) === 0) return // our own: delivered locally already
    const kind = payload[0]
    const name = channel.toString()
    if (kind === PUBLISH) {
      local.publish(name.slice(prefix.length + 2), JSON.parse(payload.toString('utf8', 5)))
      return
    }
    const fieldLength = payload[5]!
    const field = payload.toString('latin1', 6, 6 + fieldLength)
    const body = payload.subarray(6 + fieldLength)
    if (kind === POST) local.post(field, JSON.parse(body.toString()))
    else local.broadcast(name.slice(prefix.length + 2), { binary: kind === BINARY, data: body }, field === '' ? undefined : field)
  }

  return {
    async start (delivery, logger) {
      local = delivery
      log = logger
      origin = Buffer.from(delivery.instanceId, 'hex')
      const base: RedisOptions = { ...options.redisOptions, lazyConnect: true }
      publisher = new Redis(url, { ...base, enableOfflineQueue: false, connectionName: `fws-${delivery.instanceId}-pub` })
      subscriber = new Redis(url, { ...base, connectionName: `fws-${delivery.instanceId}-sub` })
      for (const connection of [publisher, subscriber]) {
        connection.on('error', (error: Error) => lost('connection error', error))
        connection.on('close', () => lost('connection closed'))
        connection.on('ready', () => {
          if (!down || publisher.status !== 'ready' || subscriber.status !== 'ready') return
          down = false
          log.warn({ code: 'FST_WS_REDIS' }, 'Redis adapter reconnected and resubscribed')
        })
      }
      subscriber.on('messageBuffer', receive)
      try {
        await Promise.all([publisher.connect(), subscriber.connect()])
        await subscriber.subscribe(`${prefix}i:${delivery.instanceId}`)
      } catch (error) {
        closing = true
        publisher.disconnect()
        subscriber.disconnect()
        throw new RedisAdapterError(`cannot reach Redis at ${url}: ${(error as Error).message}`)
      }
    },
    subscribe (topic) {
      subscriber.subscribe(topicChannel(topic)).catch((error: Error) => lost('subscribing failed', error))
    },
    unsubscribe (topic) {
      subscriber.unsubscribe(topicChannel(topic)).catch((error: Error) => lost('unsubscribing failed', error))
    },
    publish (topic, message) {
      send(topicChannel(topic), envelope(PUBLISH, undefined, json(message)))
    },
    broadcast (topic: string, frame: BroadcastFrame, except: string | undefined) {
      send(topicChannel(topic), envelope(frame.binary ? BINARY : TEXT, except ?? '', frame.data))
    },
    post (id, message) {
      const instance = id.slice(0, id.indexOf('-'))
      if (!/^[0-9a-f]{8}$/.test(instance)) return false // not an id any instance gave
      send(`${prefix}i:${instance}`, envelope(POST, id, json(message)))
      return true
    },
    async close () {
      closing = true
      await Promise.all([publisher.quit(), subscriber.quit()]).catch(() => {})
    }
  }
}
