/**
 * Metrics on OpenTelemetry (`@opentelemetry/api`), the way Fastify apps export them
 * (`@fastify/otel`): the app registers an SDK and its exporters (Prometheus, OTLP), the plugin
 * records to the global meter provider (or `metrics.meterProvider`).
 *
 * Everything comes from the plugin's diagnostics channels (core/diagnostics.ts): without an SDK
 * (the API's no-op meter) nothing subscribes to them, so an unobserved app pays one property
 * read per event, as before. With one, each app records only its own connections (its registry
 * and instance id), and stops at app.close().
 *
 * The SDK hashes the attributes of every synchronous measurement (≈ 1.2 µs each, measured): five
 * per echoed message would more than double the CPU of a 64 B echo. So per-message counts are
 * tallied here, in plain numbers per route, and reported by observable instruments when the SDK
 * collects (exact, and a few nanoseconds per event); callback durations go to a histogram for one
 * callback in `callbackSampling` (and every one that threw), beside exact call counts and time.
 */
import type { Channel } from 'node:diagnostics_channel'
import { createNoopMeter, metrics as otel, type Attributes, type Histogram, type Meter, type ObservableResult } from '@opentelemetry/api'
import {
  adapterChannel, callbackChannel, closeChannel, closeLogFields, deliverChannel, frameInChannel, frameOutChannel, openChannel, refusedChannel
} from '../core/diagnostics.js'
import type { InFrame, MetricsOptions, OutFrame, TerminateReason } from '../core/types.js'
import { kQueued, kRoute, type ConnectionContext, type RouteContext } from '../actor/context.js'

export const METER_NAME = 'fastify-ws-handlers'
/** One callback in this many is timed into the duration histogram by default. */
export const DEFAULT_CALLBACK_SAMPLING = 16

/** The histogram boundaries for callback durations and delivery lag, in seconds: 50 µs to 5 s. */
const SECONDS_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

const route = (url: string): Attributes => ({ 'websocket.route': url })
const frameOf = (url: string, type: string): Attributes => ({ 'websocket.route': url, 'websocket.frame.type': type })
const callbackOf = (url: string, callback: string): Attributes => ({ 'websocket.route': url, 'websocket.callback': callback })
const operationOf = (_: string, operation: string): Attributes => ({ 'websocket.operation': operation })
const errorTypeOf = (_: string, type: string): Attributes => ({ 'error.type': type })

/** What the metrics read of the registry. */
export interface MetricsSource {
  readonly instanceId: string
  values(): Iterable<unknown>
}

/** One time series: its attributes (made once) and its running value. */
interface Tally { readonly attributes: Attributes, value: number }

/** Tallies by two keys (a route and a kind), found with two map lookups and no string built per event. */
class Tallies {
  readonly #byFirst = new Map<string, Map<string | number, Tally>>()

  /** `attributes(first, second)` is called once per series: static functions, so that no closure is made per event. */
  get<S extends string | number> (first: string, second: S, attributes: (first: string, second: S) => Attributes): Tally {
    let bySecond = this.#byFirst.get(first)
    if (bySecond === undefined) this.#byFirst.set(first, bySecond = new Map())
    let tally = bySecond.get(second)
    if (tally === undefined) bySecond.set(second, tally = { attributes: Object.freeze(attributes(first, second)), value: 0 })
    return tally
  }

  * [Symbol.iterator] (): IterableIterator<Tally> {
    for (const bySecond of this.#byFirst.values()) yield * bySecond.values()
  }
}

function payloadBytes (frame: OutFrame): number {
  if (frame.type === 'close') return 0
  const data = frame.data
  if (data === undefined) return 0
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

const noopMeterClass = createNoopMeter().constructor

/** The app's meter and sampling, or undefined when recording would go nowhere (no SDK registered, or `metrics: false`). */
export function meterFor (options: MetricsOptions | false | undefined): { meter: Meter, callbackSampling: number } | undefined {
  if (options === false) return undefined
  const meter = (options?.meterProvider ?? otel.getMeterProvider()).getMeter(METER_NAME)
  return meter instanceof noopMeterClass ? undefined : { meter, callbackSampling: options?.callbackSampling ?? DEFAULT_CALLBACK_SAMPLING }
}

/**
 * Record this app's metrics to `meter` until the returned function is called (app.close()).
 * `source` is the app's registry: its connections for the mailbox gauges, its instance id for
 * the events that carry no connection.
 */
export function recordMetrics ({ meter, callbackSampling }: { meter: Meter, callbackSampling: number }, source: MetricsSource): () => void {
  const tallies = {
    connections: new Tallies(),
    messagesIn: new Tallies(),
    bytesIn: new Tallies(),
    messagesOut: new Tallies(),
    bytesOut: new Tallies(),
    closes: new Tallies(),
    refused: new Tallies(),
    calls: new Tallies(),
    callTime: new Tallies(),
    deliveries: new Tallies(),
    recipients: new Tallies(),
    adapterErrors: new Tallies()
  }
  const observables: Array<[keyof typeof tallies, 'counter' | 'updown', string, string, string]> = [
    ['connections', 'updown', 'websocket.server.connections', 'Open WebSocket connections', '{connection}'],
    ['refused', 'counter', 'websocket.server.upgrades.refused', 'Upgrades refused before the 101, by status and error code', '{upgrade}'],
    ['messagesIn', 'counter', 'websocket.server.messages.received', 'Frames received (text, binary, ping, pong)', '{message}'],
    ['messagesOut', 'counter', 'websocket.server.messages.sent', 'Frames written: replies and broadcasts', '{message}'],
    ['bytesIn', 'counter', 'websocket.server.bytes.received', 'Payload bytes received', 'By'],
    ['bytesOut', 'counter', 'websocket.server.bytes.sent', 'Payload bytes written', 'By'],
    ['closes', 'counter', 'websocket.server.closes', 'Connections ended, by close code and terminate reason', '{connection}'],
    ['calls', 'counter', 'websocket.server.callback.calls', 'Calls of websocketInit, handle and info', '{call}'],
    ['callTime', 'counter', 'websocket.server.callback.time', 'Time spent in websocketInit, handle and info (an async one until it settled)', 's'],
    ['deliveries', 'counter', 'websocket.server.deliveries', 'Calls of publish, broadcast and post', '{call}'],
    ['recipients', 'counter', 'websocket.server.deliveries.recipients', 'Connections of this instance that a publish, broadcast or post reached', '{connection}'],
    ['adapterErrors', 'counter', 'websocket.server.adapter.errors', 'Adapter connection errors and messages it could not read', '{error}']
  ]
  const seconds = { unit: 's', advice: { explicitBucketBoundaries: SECONDS_BUCKETS } }
  const callbackDuration: Histogram = meter.createHistogram('websocket.server.callback.duration', {
    description: `How long websocketInit, handle and info ran: one call in ${callbackSampling}, and every one that threw`, ...seconds
  })
  const adapterLag: Histogram = meter.createHistogram('websocket.server.adapter.delivery.lag', {
    description: 'From publishing on another instance to receiving here (the two wall clocks)', ...seconds
  })

  // Registered first: a meter that fails here fails the start with nothing subscribed.
  const stops: Array<() => void> = []
  for (const [key, kind, name, description, unit] of observables) {
    const instrument = kind === 'counter' ? meter.createObservableCounter(name, { description, unit }) : meter.createObservableUpDownCounter(name, { description, unit })
    const observe = (result: ObservableResult): void => {
      for (const tally of tallies[key]) result.observe(tally.value, tally.attributes)
    }
    instrument.addCallback(observe)
    stops.push(() => { instrument.removeCallback(observe) })
  }
  // Mailbox depth, read when the SDK collects: the items waiting, in all and in the longest, per route.
  const queued = meter.createObservableGauge('websocket.server.mailbox.queued', { description: 'Items waiting in the mailboxes of a route\'s connections', unit: '{message}' })
  const longest = meter.createObservableGauge('websocket.server.mailbox.longest', { description: 'Items waiting in the longest mailbox of a route', unit: '{message}' })
  const depths = new Tallies()
  const observeDepths = (pick: 'sum' | 'max') => (result: ObservableResult): void => {
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
    for (const [url, depth] of byRoute) result.observe(depth[pick], depths.get(url, '', route).attributes)
  }
  for (const [gauge, pick] of [[queued, 'sum'], [longest, 'max']] as const) {
    const observe = observeDepths(pick)
    gauge.addCallback(observe)
    stops.push(() => { gauge.removeCallback(observe) })
  }

  const own = (ctx: unknown): string | undefined => {
    const routeContext = (ctx as { [kRoute]: RouteContext })[kRoute]
    return routeContext.registry === source as unknown ? routeContext.url : undefined
  }
  let sampled = 0
  const listeners: Array<[Channel, (message: never) => void]> = [
    [openChannel, ({ ctx }: { ctx: ConnectionContext }) => {
      const url = own(ctx)
      if (url !== undefined) tallies.connections.get(url, '', route).value++
    }],
    [closeChannel, ({ ctx, reason }: { ctx: ConnectionContext, reason: TerminateReason }) => {
      const url = own(ctx)
      if (url === undefined) return
      tallies.connections.get(url, '', route).value--
      const code = closeLogFields(reason, 0).code ?? 1005
      tallies.closes.get(url, `${code} ${reason.type}`, () => ({ 'websocket.route': url, 'websocket.close.code': code, 'websocket.terminate.reason': reason.type })).value++ // once per close: a closure is fine
    }],
    [frameInChannel, ({ ctx, frame, bytes }: { ctx: ConnectionContext, frame: InFrame<unknown>, bytes: number }) => {
      const url = own(ctx)
      if (url === undefined) return
      tallies.messagesIn.get(url, frame.type, frameOf).value++
      tallies.bytesIn.get(url, frame.type, frameOf).value += bytes
    }],
    [frameOutChannel, ({ ctx, frames }: { ctx: ConnectionContext, frames: OutFrame | readonly OutFrame[] }) => {
      const url = own(ctx)
      if (url === undefined) return
      for (const frame of Array.isArray(frames) ? frames as readonly OutFrame[] : [frames as OutFrame]) {
        tallies.messagesOut.get(url, frame.type, frameOf).value++
        tallies.bytesOut.get(url, frame.type, frameOf).value += payloadBytes(frame)
      }
    }],
    [callbackChannel, ({ ctx, callback, durationMs, failed }: { ctx: ConnectionContext, callback: string, durationMs: number, failed: boolean }) => {
      const url = own(ctx)
      if (url === undefined) return
      const calls = tallies.calls.get(url, callback, callbackOf)
      calls.value++
      tallies.callTime.get(url, callback, callbackOf).value += durationMs / 1000
      if (failed) callbackDuration.record(durationMs / 1000, { ...calls.attributes, 'error.type': 'crash' })
      else if (++sampled % callbackSampling === 0) callbackDuration.record(durationMs / 1000, calls.attributes)
    }],
    [refusedChannel, ({ error, instanceId, routeUrl }: { error: { statusCode?: number, code?: string }, instanceId: string, routeUrl: string }) => {
      if (instanceId !== source.instanceId) return
      const status = error.statusCode ?? 500
      const code = error.code ?? 'unknown'
      tallies.refused.get(routeUrl, `${status} ${code}`, () => ({ 'websocket.route': routeUrl, 'http.response.status_code': status, 'error.type': code })).value++ // a refusal: rare
    }],
    [deliverChannel, ({ operation, delivered, instanceId }: { operation: string, delivered: number, instanceId: string }) => {
      if (instanceId !== source.instanceId) return
      tallies.deliveries.get('', operation, operationOf).value++
      tallies.recipients.get('', operation, operationOf).value += delivered
    }],
    [adapterChannel, (event: { event: 'delivery', kind: string, lagMs: number, instanceId: string } | { event: 'error' | 'dropped', instanceId: string }) => {
      if (event.instanceId !== source.instanceId) return
      // At most one per cross-instance message: a synchronous histogram is affordable here.
      if (event.event === 'delivery') adapterLag.record(Math.max(0, event.lagMs) / 1000, { 'websocket.message.kind': event.kind })
      else tallies.adapterErrors.get('', event.event, errorTypeOf).value++
    }]
  ]
  for (const [channel, listener] of listeners) {
    // A channel reports a subscriber's throw as an uncaught exception: a metric that fails to
    // record (an SDK's bug) must not crash the app, nor close a connection.
    const subscriber = (message: unknown): void => {
      try {
        listener(message as never)
      } catch { /* that reading is lost, nothing else */ }
    }
    channel.subscribe(subscriber)
    stops.push(() => { channel.unsubscribe(subscriber) })
  }
  return () => { for (const stop of stops) stop() }
}
