/**
 * The Redis adapter (`fastify-ws-handlers/redis`): several instances of an app share topics and
 * posts by connection id over Redis pub/sub, on ioredis.
 *
 * - Each instance subscribes to a topic's channel only while one of its own connections is in
 *   the topic, and to one channel of its own for posts by id (ids start with the instance id).
 * - Delivery is at most once, as Redis pub/sub is: a message published while an instance is
 *   disconnected is not replayed to it. Messages travel as JSON (and local subscribers get the
 *   same JSON copy: `wire: 'json'`); broadcast frames as bytes.
 * - What arrives is checked before it is used; what cannot be read is dropped and logged.
 * - app.close() is bounded by the plugin's closeTimeout whatever Redis does, and leaves nothing.
 * - The plugin delivers to local subscribers itself, so local delivery never waits for Redis and
 *   goes on while Redis is away. Losing Redis is logged with the code FST_WS_REDIS (once per
 *   outage); ioredis reconnects and resubscribes; publishing meanwhile reaches this instance only
 *   (nothing queues up in memory). Nothing throws into the app.
 */
import { isUtf8 } from 'node:buffer'
import type { FastifyBaseLogger } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import type { BroadcastFrame, LocalDelivery, PubSubAdapter } from '../core/types.js'
import { RedisAdapterError } from '../core/errors.js'
import { settledWithin } from '../core/timeout.js'
import { adapterChannel } from '../core/diagnostics.js'

export interface RedisAdapterOptions {
  /** Default: `REDIS_URL`, else redis://127.0.0.1:6379. */
  url?: string
  /** ioredis options for both connections (the adapter sets `lazyConnect`, `connectionName`, and no offline queue for publishing). */
  redisOptions?: RedisOptions
  /** Prefix of the channel names, so that apps sharing one Redis do not hear each other. Default `fws:`. */
  channelPrefix?: string
}

/** The Redis adapter, with what a health check asks. */
export interface RedisPubSubAdapter extends PubSubAdapter {
  /** Both Redis connections are up (publishing reaches other instances, subscriptions are live): for a `/health` route. */
  readonly connected: boolean
}

/**
 * The wire format of one message on a channel (all of it checked on receipt; what does not
 * parse is dropped and logged, never thrown):
 *
 *   [version 1 B = 3][kind 1 B][origin instance id 4 B][sent at 8 B][field length 4 B, big-endian][field, UTF-8][body]
 *
 * "sent at" is the publisher's wall clock (ms since the epoch, a big-endian double): the
 * receiving instance reports the delivery lag (`fastify-ws-handlers:adapter`, and the metric).
 * kind PUBLISH: no field (length 0), body JSON; TEXT/BINARY (broadcast): field = the `except`
 * id ('' for none), body the payload; POST: field = the target connection id, body JSON.
 * Versions 1 (one-byte lengths, no version byte: its first byte is a kind, 1-4) and 2 (no time)
 * are not read: upgrade every instance together, or give the new ones their own channelPrefix.
 */
const VERSION = 3
const PUBLISH = 1
const TEXT = 2
const BINARY = 3
const POST = 4
const HEAD = 18 // version, kind, origin, sent at, field length

/** What arrived on a channel, once checked; or why it is dropped. */
export type WireMessage =
  | { readonly kind: 'publish', readonly message: unknown }
  | { readonly kind: 'broadcast', readonly frame: BroadcastFrame, readonly except: string | undefined }
  | { readonly kind: 'post', readonly id: string, readonly message: unknown }

/** The envelope of one message (exported for the wire-format tests). */
export function encodeWire (origin: Buffer, kind: number, field: string, body: Buffer, sentAt = Date.now()): Buffer {
  const fieldBytes = Buffer.from(field)
  const head = Buffer.allocUnsafe(HEAD)
  head[0] = VERSION
  head[1] = kind
  origin.copy(head, 2, 0, 4)
  head.writeDoubleBE(sentAt, 6)
  head.writeUInt32BE(fieldBytes.length, 14)
  return Buffer.concat([head, fieldBytes, body])
}

/** The origin's 4 bytes (to skip our own), when it was sent, and the message; a string says why it cannot be read. */
export function decodeWire (payload: Buffer): { origin: Buffer, sentAt: number, message: WireMessage } | string {
  if (payload.length < HEAD) return `${payload.length} bytes, shorter than a header`
  if (payload[0] !== VERSION) return `unknown format version ${payload[0]!}`
  const kind = payload[1]
  const sentAt = payload.readDoubleBE(6)
  const fieldLength = payload.readUInt32BE(14)
  if (fieldLength > payload.length - HEAD) return `a field of ${fieldLength} bytes in a message of ${payload.length}`
  const origin = payload.subarray(2, 6)
  const field = payload.toString('utf8', HEAD, HEAD + fieldLength)
  const body = payload.subarray(HEAD + fieldLength)
  const except = field === '' ? undefined : field
  switch (kind) {
    case PUBLISH:
      return { origin, sentAt, message: { kind: 'publish', message: JSON.parse(body.toString()) } }
    case POST:
      return { origin, sentAt, message: { kind: 'post', id: field, message: JSON.parse(body.toString()) } }
    case TEXT:
      // Written as a text frame to every subscriber: text that is not UTF-8 would break their clients (1007).
      if (!isUtf8(body)) return 'a text broadcast that is not UTF-8'
      return { origin, sentAt, message: { kind: 'broadcast', frame: { binary: false, data: body }, except } }
    case BINARY:
      return { origin, sentAt, message: { kind: 'broadcast', frame: { binary: true, data: body }, except } }
    default:
      return `unknown kind ${kind!}`
  }
}

export function redisAdapter (options: RedisAdapterOptions = {}): RedisPubSubAdapter {
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
  /** The last error a connection reported: what a failed start names. */
  let lastError: Error | undefined
  const drops = { lastLoggedAt: -Infinity, since: 0 }

  function lost (what: string, error?: Error): void {
    if (error !== undefined) lastError = error
    if (closing) return
    if (adapterChannel.hasSubscribers) adapterChannel.publish({ event: 'error', what, error, instanceId: local.instanceId })
    if (down) return
    down = true
    log.error({ err: new RedisAdapterError(`${what} (${url})${error === undefined ? '' : `: ${error.message}`}; reconnecting, local delivery goes on`) },
      'Redis adapter lost Redis')
  }

  function send (channel: string, payload: Buffer): void {
    publisher.publish(channel, payload).catch((error: Error) => lost('publishing failed', error))
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
      if (decoded.origin.equals(origin)) return // our own: delivered locally already
      const { message } = decoded
      if (adapterChannel.hasSubscribers) adapterChannel.publish({ event: 'delivery', kind: message.kind, lagMs: Date.now() - decoded.sentAt, instanceId: local.instanceId })
      const topic = channel.toString().slice(prefix.length + 2)
      if (message.kind === 'publish') local.publish(topic, message.message)
      else if (message.kind === 'post') local.post(message.id, message.message)
      else local.broadcast(topic, message.frame, message.except)
    } catch (error) {
      drop(channel, (error as Error).message) // its JSON does not parse, or delivering it failed
    }
  }

  return {
    wire: 'json',
    get connected () {
      return !closing && publisher?.status === 'ready' && subscriber?.status === 'ready'
    },
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
        // ioredis rejects with "Connection is closed."; the cause (ECONNREFUSED, ENOTFOUND, an
        // authentication error) is in the connection's error event.
        /* c8 ignore next -- ioredis reports a failed connect on its error event first */
        const cause = lastError ?? (error as Error)
        throw new RedisAdapterError(`cannot reach Redis at ${url}: ${cause.message}`)
      }
    },
    subscribe (topic) {
      subscriber.subscribe(topicChannel(topic)).catch((error: Error) => lost('subscribing failed', error))
    },
    unsubscribe (topic) {
      subscriber.unsubscribe(topicChannel(topic)).catch((error: Error) => lost('unsubscribing failed', error))
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
      send(`${prefix}i:${instance}`, encodeWire(origin, POST, id, Buffer.from(json)))
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
        connection.disconnect()
        // disconnect() ends the socket and keeps a timer to destroy it if Redis never answers the
        // FIN (a silent Redis): destroy it now, so that nothing is left to hold the process.
        connection.stream?.destroy()
      }
    }
  }
}
