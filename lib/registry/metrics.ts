/**
 * Metrics on OpenTelemetry (`@opentelemetry/api`), the way Fastify apps export them
 * (`@fastify/otel`): the app registers an SDK and its exporters (Prometheus, OTLP), the plugin
 * records to the global meter provider (or `metrics.meterProvider`).
 *
 * Everything comes from the plugin's diagnostics channels (core/diagnostics.ts): without an SDK
 * (the API's no-op meter) nothing subscribes to them, so an unobserved app pays one property
 * read per event, as before. With one, each app records only its own connections (its registry
 * and instance id), and stops at app.close().
 */
import type { Channel } from 'node:diagnostics_channel'
import { createNoopMeter, metrics as otel, type Attributes, type Counter, type Histogram, type Meter, type ObservableResult, type UpDownCounter } from '@opentelemetry/api'
import {
  adapterChannel, callbackChannel, closeChannel, closeLogFields, deliverChannel, frameInChannel, frameOutChannel, openChannel, refusedChannel
} from '../core/diagnostics.js'
import type { InFrame, MetricsOptions, OutFrame, TerminateReason } from '../core/types.js'
import { kQueued, kRoute, type ConnectionContext, type RouteContext } from '../actor/context.js'

export const METER_NAME = 'fastify-ws-handlers'

/** The histogram boundaries for callback durations and delivery lag, in seconds: 50 µs to 5 s. */
const SECONDS_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** What the metrics read of the registry. */
export interface MetricsSource {
  readonly instanceId: string
  values(): Iterable<unknown>
}

interface Instruments {
  connections: UpDownCounter
  refused: Counter
  messagesIn: Counter
  messagesOut: Counter
  bytesIn: Counter
  bytesOut: Counter
  closes: Counter
  callbackDuration: Histogram
  deliveries: Counter
  recipients: Counter
  adapterErrors: Counter
  adapterLag: Histogram
}

function instrumentsOf (meter: Meter): Instruments {
  const seconds = { unit: 's', advice: { explicitBucketBoundaries: SECONDS_BUCKETS } }
  return {
    connections: meter.createUpDownCounter('websocket.server.connections', { description: 'Open WebSocket connections', unit: '{connection}' }),
    refused: meter.createCounter('websocket.server.upgrades.refused', { description: 'Upgrades refused before the 101, by status and error code', unit: '{upgrade}' }),
    messagesIn: meter.createCounter('websocket.server.messages.received', { description: 'Frames received (text, binary, ping, pong)', unit: '{message}' }),
    messagesOut: meter.createCounter('websocket.server.messages.sent', { description: 'Frames written: replies and broadcasts', unit: '{message}' }),
    bytesIn: meter.createCounter('websocket.server.bytes.received', { description: 'Payload bytes received', unit: 'By' }),
    bytesOut: meter.createCounter('websocket.server.bytes.sent', { description: 'Payload bytes written', unit: 'By' }),
    closes: meter.createCounter('websocket.server.closes', { description: 'Connections ended, by close code and terminate reason', unit: '{connection}' }),
    callbackDuration: meter.createHistogram('websocket.server.callback.duration', { description: 'How long websocketInit, handle and info ran (an async one until it settled)', ...seconds }),
    deliveries: meter.createCounter('websocket.server.deliveries', { description: 'Calls of publish, broadcast and post', unit: '{call}' }),
    recipients: meter.createCounter('websocket.server.deliveries.recipients', { description: 'Connections of this instance that a publish, broadcast or post reached', unit: '{connection}' }),
    adapterErrors: meter.createCounter('websocket.server.adapter.errors', { description: 'Adapter connection errors and messages it could not read', unit: '{error}' }),
    adapterLag: meter.createHistogram('websocket.server.adapter.delivery.lag', { description: 'From publishing on another instance to receiving here (the two wall clocks)', ...seconds })
  }
}

/** Attribute objects are made once per route (and kind), not per event. */
class AttributeCache {
  readonly #byKey = new Map<string, Attributes>()

  get (key: string, make: () => Attributes): Attributes {
    let attributes = this.#byKey.get(key)
    if (attributes === undefined) this.#byKey.set(key, attributes = Object.freeze(make()))
    return attributes
  }
}

function payloadBytes (frame: OutFrame): number {
  if (frame.type === 'close') return 0
  const data = frame.data
  if (data === undefined) return 0
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

/** The app's meter, or undefined when recording would go nowhere (no SDK registered, or `metrics: false`). */
export function meterFor (options: MetricsOptions | false | undefined): Meter | undefined {
  if (options === false) return undefined
  const meter = (options?.meterProvider ?? otel.getMeterProvider()).getMeter(METER_NAME)
  return meter instanceof noopMeterClass ? undefined : meter
}
const noopMeterClass = createNoopMeter().constructor

/**
 * Record this app's metrics to `meter` until the returned function is called (app.close()).
 * `source` is the app's registry: its connections for the mailbox gauges, its instance id for
 * the events that carry no connection.
 */
export function recordMetrics (meter: Meter, source: MetricsSource): () => void {
  const instruments = instrumentsOf(meter)
  const attributes = new AttributeCache()
  const own = (ctx: unknown): RouteContext | undefined => {
    const route = (ctx as { [kRoute]: RouteContext })[kRoute]
    return route.registry === source as unknown ? route : undefined
  }
  const routeOf = (url: string): Attributes => attributes.get(url, () => ({ 'websocket.route': url }))

  // Mailbox depth, read when the SDK collects: the items waiting, in all and in the longest,
  // per route. Registered first: a meter that fails here fails the start with nothing subscribed.
  const queued = meter.createObservableGauge('websocket.server.mailbox.queued', { description: 'Items waiting in the mailboxes of a route\'s connections', unit: '{message}' })
  const longest = meter.createObservableGauge('websocket.server.mailbox.longest', { description: 'Items waiting in the longest mailbox of a route', unit: '{message}' })
  const observe = (result: ObservableResult, pick: 'sum' | 'max'): void => {
    const byRoute = new Map<string, { sum: number, max: number }>()
    for (const connection of source.values() as Iterable<ConnectionContext>) {
      const url = (connection as unknown as { [kRoute]: RouteContext })[kRoute].url
      const depth = connection[kQueued]
      const entry = byRoute.get(url)
      if (entry === undefined) byRoute.set(url, { sum: depth, max: depth })
      else {
        entry.sum += depth
        entry.max = Math.max(entry.max, depth)
      }
    }
    for (const [url, { sum, max }] of byRoute) result.observe(pick === 'sum' ? sum : max, routeOf(url))
  }
  const observeQueued = (result: ObservableResult): void => { observe(result, 'sum') }
  const observeLongest = (result: ObservableResult): void => { observe(result, 'max') }
  queued.addCallback(observeQueued)
  longest.addCallback(observeLongest)

  const listeners: Array<[Channel, (message: never) => void]> = [
    [openChannel, ({ ctx }: { ctx: ConnectionContext }) => {
      const route = own(ctx)
      if (route !== undefined) instruments.connections.add(1, routeOf(route.url))
    }],
    [closeChannel, ({ ctx, reason }: { ctx: ConnectionContext, reason: TerminateReason }) => {
      const route = own(ctx)
      if (route === undefined) return
      instruments.connections.add(-1, routeOf(route.url))
      const { code } = closeLogFields(reason, 0)
      instruments.closes.add(1, attributes.get(`${route.url}\0${code ?? ''}\0${reason.type}`, () => ({
        'websocket.route': route.url, 'websocket.close.code': code ?? 1005, 'websocket.terminate.reason': reason.type
      })))
    }],
    [frameInChannel, ({ ctx, frame, bytes }: { ctx: ConnectionContext, frame: InFrame<unknown>, bytes: number }) => {
      const route = own(ctx)
      if (route === undefined) return
      const frameAttributes = attributes.get(`${route.url}\0${frame.type}`, () => ({ 'websocket.route': route.url, 'websocket.frame.type': frame.type }))
      instruments.messagesIn.add(1, frameAttributes)
      instruments.bytesIn.add(bytes, frameAttributes)
    }],
    [frameOutChannel, ({ ctx, frames }: { ctx: ConnectionContext, frames: OutFrame | readonly OutFrame[] }) => {
      const route = own(ctx)
      if (route === undefined) return
      for (const frame of Array.isArray(frames) ? frames as readonly OutFrame[] : [frames as OutFrame]) {
        const frameAttributes = attributes.get(`${route.url}\0${frame.type}`, () => ({ 'websocket.route': route.url, 'websocket.frame.type': frame.type }))
        instruments.messagesOut.add(1, frameAttributes)
        instruments.bytesOut.add(payloadBytes(frame), frameAttributes)
      }
    }],
    [callbackChannel, ({ ctx, callback, durationMs, failed }: { ctx: ConnectionContext, callback: string, durationMs: number, failed: boolean }) => {
      const route = own(ctx)
      if (route === undefined) return
      instruments.callbackDuration.record(durationMs / 1000, attributes.get(`${route.url}\0${callback}\0${String(failed)}`, () => ({
        'websocket.route': route.url, 'websocket.callback': callback, ...(failed ? { 'error.type': 'crash' } : {})
      })))
    }],
    [refusedChannel, ({ error, instanceId, routeUrl }: { error: { statusCode?: number, code?: string }, instanceId: string, routeUrl: string }) => {
      if (instanceId !== source.instanceId) return
      const status = error.statusCode ?? 500
      const code = error.code ?? 'unknown'
      instruments.refused.add(1, attributes.get(`${routeUrl}\0${status}\0${code}`, () => ({
        'websocket.route': routeUrl, 'http.response.status_code': status, 'error.type': code
      })))
    }],
    [deliverChannel, ({ operation, delivered, instanceId }: { operation: string, delivered: number, instanceId: string }) => {
      if (instanceId !== source.instanceId) return
      const operationAttributes = attributes.get(`\0${operation}`, () => ({ 'websocket.operation': operation }))
      instruments.deliveries.add(1, operationAttributes)
      instruments.recipients.add(delivered, operationAttributes)
    }],
    [adapterChannel, (event: { event: 'delivery', kind: string, lagMs: number, instanceId: string } | { event: 'error' | 'dropped', instanceId: string }) => {
      if (event.instanceId !== source.instanceId) return
      if (event.event === 'delivery') {
        instruments.adapterLag.record(Math.max(0, event.lagMs) / 1000, attributes.get(`\0kind\0${event.kind}`, () => ({ 'websocket.message.kind': event.kind })))
      } else {
        instruments.adapterErrors.add(1, attributes.get(`\0adapter\0${event.event}`, () => ({ 'error.type': event.event })))
      }
    }]
  ]
  // The ways a subscriber's throw could reach us are the SDK's: a channel runs subscribers in
  // a try and reports a throw as an uncaught exception, so each records in a try of its own.
  const guarded = listeners.map(([channel, listener]) => {
    const subscriber = (message: unknown): void => {
      try {
        listener(message as never)
      } catch { /* a metric that fails to record must not close a connection or crash the app */ }
    }
    channel.subscribe(subscriber)
    return [channel, subscriber] as const
  })

  return () => {
    for (const [channel, subscriber] of guarded) channel.unsubscribe(subscriber)
    queued.removeCallback(observeQueued)
    longest.removeCallback(observeLongest)
  }
}
