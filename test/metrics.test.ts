/**
 * Metrics on OpenTelemetry, read with the real SDK (@opentelemetry/sdk-metrics, in-memory
 * exporter): what an operator sees per route (connections, refusals, traffic, closes, callback
 * durations, mailbox depth, deliveries); nothing recorded (and no channel observed) without an
 * SDK; each app records its own connections only, and stops at app.close().
 */
import diagnostics from 'node:diagnostics_channel'
import { metrics as otel, type Meter, type MeterProvider as ApiMeterProvider } from '@opentelemetry/api'
import {
  AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type DataPoint, type Histogram
} from '@opentelemetry/sdk-metrics'
import Fastify from 'fastify'
import t from 'tap'
import wsHandlers, { close, text } from '../lib/index.js'
import { wsClient } from '../lib/testing.js'
import { until } from './helpers.js'

interface Sdk { provider: MeterProvider, read: () => Promise<Readings> }

/** A point's attributes as a short key: `websocket.route=/a,websocket.frame.type=text`. */
type Readings = Map<string, Map<string, number | Histogram>>

function sdk (t: { teardown(fn: () => unknown): void }): Sdk {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
  const provider = new MeterProvider({ readers: [reader] })
  t.teardown(async () => await provider.shutdown())
  return {
    provider,
    async read () {
      exporter.reset()
      await reader.forceFlush()
      const readings: Readings = new Map()
      for (const { scopeMetrics } of exporter.getMetrics()) {
        for (const { scope, metrics } of scopeMetrics) {
          if (scope.name !== 'fastify-ws-handlers') continue
          for (const metric of metrics) {
            const points = new Map<string, number | Histogram>()
            for (const point of metric.dataPoints as Array<DataPoint<number | Histogram>>) {
              points.set(Object.entries(point.attributes).map(([key, value]) => `${key}=${String(value)}`).join(','), point.value)
            }
            readings.set(metric.descriptor.name, points)
          }
        }
      }
      return readings
    }
  }
}

// open and close are left out: the testing toolkit observes them (its terminate watch).
const channels = ['frame-in', 'frame-out', 'callback', 'refused', 'deliver', 'adapter']
const observed = (): string[] => channels.filter((name) => diagnostics.channel(`fastify-ws-handlers:${name}`).hasSubscribers)

/** The status of a refused upgrade. */
async function refusal (client: Promise<unknown>): Promise<number | undefined> {
  try {
    await client
  } catch (error) {
    return (error as { statusCode?: number }).statusCode
  }
  return undefined
}

t.test('per route: connections, frames and bytes both ways, closes by code and reason, callback durations', async (t) => {
  const { provider, read } = sdk(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { metrics: { meterProvider: provider, callbackSampling: 1 } })
  app.ws('/echo', { handle: (frame) => frame.type === 'text' ? { reply: [text(frame.data), text('é')] } : undefined })
  // Text gets a ping back (a frame without data), 'bye' a close; the client's pongs get nothing (they would loop).
  app.ws('/quiet', { handle: (frame) => frame.type !== 'text' ? undefined : { reply: frame.data === 'bye' ? close(1000, 'bye') : { type: 'ping' } } })
  await app.ready()
  const a = await wsClient(app, '/echo')
  const b = await wsClient(app, '/echo')
  const quiet = await wsClient(app, '/quiet')
  a.send('hello')
  a.send('hi')
  await a.next()
  await a.next()
  await a.next()
  await a.next()
  quiet.send('ping me')
  await until(async () => (await read()).get('websocket.server.messages.received')?.has('websocket.route=/quiet,websocket.frame.type=pong') === true, 'the ping written, and answered')
  let readings = await read()
  t.same(readings.get('websocket.server.connections'), new Map([['websocket.route=/echo', 2], ['websocket.route=/quiet', 1]]))
  t.same(readings.get('websocket.server.messages.received'), new Map([
    ['websocket.route=/echo,websocket.frame.type=text', 2], ['websocket.route=/quiet,websocket.frame.type=text', 1], ['websocket.route=/quiet,websocket.frame.type=pong', 1]
  ]))
  t.same(readings.get('websocket.server.bytes.received'), new Map([
    ['websocket.route=/echo,websocket.frame.type=text', 7], ['websocket.route=/quiet,websocket.frame.type=text', 7], ['websocket.route=/quiet,websocket.frame.type=pong', 0]
  ]))
  t.same(readings.get('websocket.server.messages.sent'), new Map([['websocket.route=/echo,websocket.frame.type=text', 4], ['websocket.route=/quiet,websocket.frame.type=ping', 1]]))
  t.same(readings.get('websocket.server.bytes.sent'), new Map([['websocket.route=/echo,websocket.frame.type=text', 7 + 2 * 2], ['websocket.route=/quiet,websocket.frame.type=ping', 0]]), 'é is two bytes')
  const durations = readings.get('websocket.server.callback.duration')!.get('websocket.route=/echo,websocket.callback=handle') as Histogram
  t.equal(durations.count, 2, 'one duration per handle (callbackSampling: 1)')
  t.ok(durations.sum! >= 0 && durations.sum! < 5, `in seconds (${durations.sum!})`)
  t.equal(readings.get('websocket.server.callback.calls')!.get('websocket.route=/echo,websocket.callback=handle'), 2)
  t.equal(readings.get('websocket.server.callback.time')!.get('websocket.route=/echo,websocket.callback=handle'), durations.sum, 'the exact total time')
  a.close(4001, 'bye')
  await a.closed()
  b.close() // no code: 1005
  await b.closed()
  quiet.send('bye')
  t.same(await quiet.closed(), { code: 1000, reason: 'bye' })
  await until(() => app.wsConnections.size === 0, 'all ended')
  readings = await read()
  t.same(readings.get('websocket.server.connections'), new Map([['websocket.route=/echo', 0], ['websocket.route=/quiet', 0]]))
  t.same(readings.get('websocket.server.closes'), new Map([
    ['websocket.route=/echo,websocket.close.code=4001,websocket.terminate.reason=remote', 1],
    ['websocket.route=/echo,websocket.close.code=1005,websocket.terminate.reason=remote', 1],
    ['websocket.route=/quiet,websocket.close.code=1000,websocket.terminate.reason=stop', 1]
  ]))
})

t.test('refused upgrades by route, status and error code; a crash is a failed callback', async (t) => {
  const { provider, read } = sdk(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { metrics: { meterProvider: provider }, maxConnections: 1 })
  app.ws('/one', { handle: () => { throw new Error('boom') } })
  app.ws('/init-throws', { init: () => { throw new Error('no code, no status') } })
  await app.ready()
  t.equal(await refusal(wsClient(app, '/init-throws')), 500)
  const first = await wsClient(app, '/one')
  t.equal(await refusal(wsClient(app, '/one')), 503)
  t.equal(await refusal(wsClient(app, '/one', { headers: { origin: 'https://evil.example' } })), 403)
  first.send('crash')
  t.equal((await first.closed()).code, 1011)
  const readings = await read()
  t.same(readings.get('websocket.server.upgrades.refused'), new Map([
    ['websocket.route=/init-throws,http.response.status_code=500,error.type=unknown', 1],
    ['websocket.route=/one,http.response.status_code=503,error.type=FST_WS_TOO_MANY_CONNECTIONS', 1],
    ['websocket.route=/one,http.response.status_code=403,error.type=FST_WS_ORIGIN_NOT_ALLOWED', 1]
  ]))
  const crashed = readings.get('websocket.server.callback.duration')!.get('websocket.route=/one,websocket.callback=handle,error.type=crash') as Histogram
  t.equal(crashed.count, 1)
  t.same(readings.get('websocket.server.closes'), new Map([['websocket.route=/one,websocket.close.code=1011,websocket.terminate.reason=crash', 1]]))
})

t.test('publish, broadcast and post: calls and the connections they reached; mailbox depth per route while a handler is busy', async (t) => {
  const { provider, read } = sdk(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { metrics: { meterProvider: provider } })
  let release!: () => void
  let began = false
  const busy = new Promise<void>((resolve) => { release = resolve })
  app.ws('/room', {
    websocketInit: (_state, ctx) => { ctx.subscribe('room') },
    handle: async (frame) => {
      if (frame.type !== 'text' || frame.data !== 'wait') return
      began = true
      await busy
    },
    info: () => undefined
  })
  await app.ready()
  const a = await wsClient(app, '/room')
  const b = await wsClient(app, '/room')
  t.equal(app.wsConnections.publish('room', 'hello'), 2)
  t.equal(app.wsConnections.broadcast('room', text('all')), 2)
  t.equal(app.wsConnections.broadcast('room', { type: 'binary', data: Buffer.from([1, 2, 3]) }), 2)
  t.equal(app.wsConnections.publish('nobody', 'x'), 0)
  t.ok(app.wsConnections.post([...app.wsConnections][0]!.id, 'to one'))
  t.notOk(app.wsConnections.post('00000000-1', 'to nobody'))
  a.send('wait')
  await until(() => began, 'handle began')
  for (let i = 0; i < 3; i++) a.send(`queued ${i}`)
  await until(async () => (await read()).get('websocket.server.mailbox.longest')?.get('websocket.route=/room') === 3, 'three items wait')
  const readings = await read()
  t.same(readings.get('websocket.server.mailbox.queued'), new Map([['websocket.route=/room', 3]]))
  t.same(readings.get('websocket.server.deliveries'), new Map([['websocket.operation=publish', 2], ['websocket.operation=broadcast', 2], ['websocket.operation=post', 2]]))
  t.same(readings.get('websocket.server.deliveries.recipients'), new Map([['websocket.operation=publish', 2], ['websocket.operation=broadcast', 4], ['websocket.operation=post', 1]]))
  t.same(readings.get('websocket.server.bytes.sent'), new Map([['websocket.route=/room,websocket.frame.type=text', 2 * 3], ['websocket.route=/room,websocket.frame.type=binary', 2 * 3]]), 'each broadcast written counts')
  release()
  a.close()
  b.close()
})

t.test('without an SDK nothing is recorded and no channel is observed; with the global one, the app records to it', async (t) => {
  const app = Fastify()
  await app.register(wsHandlers)
  await app.ready()
  t.same(observed(), [], 'the API\'s no-op meter: no subscriber, no cost')
  await app.close()

  const { provider, read } = sdk(t)
  const off = Fastify()
  await off.register(wsHandlers, { metrics: false })
  await off.ready()
  otel.setGlobalMeterProvider(provider)
  t.teardown(() => otel.disable())
  t.same(observed(), [], 'metrics: false')
  await off.close()

  const global = Fastify()
  await global.register(wsHandlers)
  global.ws('/g', {})
  await global.ready()
  t.same(observed(), channels, 'the global provider, registered before the plugin')
  const client = await wsClient(global, '/g')
  t.same((await read()).get('websocket.server.connections'), new Map([['websocket.route=/g', 1]]))
  client.close()
  await global.close()
  t.same(observed(), [], 'app.close() stops recording')
})

t.test('two apps in one process record their own connections only', async (t) => {
  const first = sdk(t)
  const second = sdk(t)
  const apps = [Fastify(), Fastify()]
  t.teardown(async () => { for (const app of apps) await app.close() })
  await apps[0]!.register(wsHandlers, { metrics: { meterProvider: first.provider } })
  await apps[1]!.register(wsHandlers, { metrics: { meterProvider: second.provider }, maxConnections: 1 })
  for (const app of apps) {
    app.ws('/x', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
    await app.ready()
  }
  const one = await wsClient(apps[0]!, '/x')
  const two = await wsClient(apps[1]!, '/x')
  t.equal(await refusal(wsClient(apps[1]!, '/x')), 503)
  one.send('abc')
  await one.next()
  apps[1]!.wsConnections.publish('t', 1)
  const [a, b] = [await first.read(), await second.read()]
  t.same(a.get('websocket.server.messages.received'), new Map([['websocket.route=/x,websocket.frame.type=text', 3 / 3]]))
  t.notOk(b.has('websocket.server.messages.received'), 'the other app saw no frame')
  t.notOk(a.has('websocket.server.upgrades.refused'))
  t.same(b.get('websocket.server.upgrades.refused')?.size, 1)
  t.notOk(a.has('websocket.server.deliveries'))
  t.same(b.get('websocket.server.deliveries'), new Map([['websocket.operation=publish', 1]]))
  one.close()
  two.close()
})

t.test('an SDK whose instruments throw costs the metric, never a connection', async (t) => {
  const broken = (): never => { throw new Error('exporter bug') }
  const instrument = { add: broken, record: broken, addCallback: broken, removeCallback: broken }
  const meter = new Proxy({}, { get: () => () => instrument }) as Meter
  const meterProvider: ApiMeterProvider = { getMeter: () => meter }
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(wsHandlers, { metrics: { meterProvider } }).ready() }, /exporter bug/, 'a gauge that cannot be registered fails the start, loudly')
  const app2 = Fastify()
  t.teardown(() => app2.close())
  const working = { ...instrument, addCallback: () => {}, removeCallback: () => {} }
  const meter2 = new Proxy({}, { get: () => () => working }) as Meter
  await app2.register(wsHandlers, { metrics: { meterProvider: { getMeter: () => meter2 } } })
  app2.ws('/x', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
  await app2.ready()
  const client = await wsClient(app2, '/x')
  for (let i = 0; i < 16; i++) client.send(`still served ${i}`) // the 16th call is timed into the histogram, which throws
  for (let i = 0; i < 16; i++) t.same(await client.next(), { type: 'text', data: `still served ${i}` })
  client.close()
})

t.test('the metrics option is checked', async (t) => {
  for (const bad of [true, null, [], { meterProvider: {} }, { provider: 1 }, { callbackSampling: 0 }, { callbackSampling: 1.5 }]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(wsHandlers, { metrics: bad as never }).ready() }, { code: 'FST_WS_INVALID_OPTION', message: /option "metrics": expected false or \{ meterProvider\?, callbackSampling\? \}/ })
  }
})

t.test('the README\'s Prometheus endpoint serves the metrics in the exposition format', async (t) => {
  const { PrometheusExporter } = await import('@opentelemetry/exporter-prometheus')
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  t.teardown(async () => await meterProvider.shutdown())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { metrics: { meterProvider } })
  app.ws('/echo', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined })
  app.get('/metrics', (request, reply) => {
    reply.hijack()
    exporter.getMetricsRequestHandler(request.raw, reply.raw)
  })
  await app.ready()
  const client = await wsClient(app, '/echo')
  client.send('hi')
  await client.next()
  const scrape = await app.inject('/metrics')
  t.equal(scrape.statusCode, 200)
  t.match(scrape.body, /^websocket_server_connections\{websocket_route="\/echo",[^}]*\} 1$/m)
  t.match(scrape.body, /^websocket_server_messages_received_total\{websocket_route="\/echo",websocket_frame_type="text",[^}]*\} 1$/m)
  t.match(scrape.body, /^websocket_server_callback_calls_total\{websocket_route="\/echo",websocket_callback="handle",[^}]*\} 1$/m)
  t.notMatch(scrape.body, /websocket_callback="websocketInit"/, 'a callback the handler does not have is not timed')
  client.close()
})

t.test('callback durations: one call in callbackSampling goes to the histogram, every crash does; counts and time are exact', async (t) => {
  const { provider, read } = sdk(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { metrics: { meterProvider: provider, callbackSampling: 4 } })
  app.ws('/x', { handle: (frame) => { if (frame.type === 'text' && frame.data === 'crash') throw new Error('boom') } })
  await app.ready()
  const client = await wsClient(app, '/x')
  for (let i = 0; i < 10; i++) client.send(String(i))
  await until(async () => (await read()).get('websocket.server.callback.calls')?.get('websocket.route=/x,websocket.callback=handle') === 10, 'ten calls')
  client.send('crash')
  await client.closed()
  const readings = await read()
  const durations = readings.get('websocket.server.callback.duration')!
  t.equal((durations.get('websocket.route=/x,websocket.callback=handle') as Histogram).count, 2, 'calls 4 and 8 of 10')
  t.equal((durations.get('websocket.route=/x,websocket.callback=handle,error.type=crash') as Histogram).count, 1)
  t.equal(readings.get('websocket.server.callback.calls')!.get('websocket.route=/x,websocket.callback=handle'), 11)
})
