/**
 * The Redis adapter against the machine's Redis (REDIS_URL, else 127.0.0.1:6379): two app
 * instances with their own Redis connections share topics and ids; a Redis connection killed
 * with CLIENT KILL is logged with a code and recovers. Redis unreachable: these tests fail.
 */
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type Histogram } from '@opentelemetry/sdk-metrics'
import t from 'tap'
import wsHandlers, { text, type PubSubAdapter } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'
import { decodeWire, encodeWire } from '../lib/registry/redis.js'
import { buildExampleApp } from '../example-app/app.js'
import { inject, until } from './helpers.js'
import { machineRedis } from './redis-server.js'
import { bytes, mutate, pick, random } from './fuzz.js'

const { url, admin } = machineRedis(t)

// A prefix per run: parallel runs on one Redis do not hear each other.
const channelPrefix = `fws-test-${randomBytes(4).toString('hex')}:`

interface Instance { app: FastifyInstance, adapter: PubSubAdapter, logs: Array<Record<string, unknown>> }

async function instance (t: { teardown(fn: () => unknown): void }, withUrl = true, meterProvider?: MeterProvider): Promise<Instance> {
  const logs: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { logs.push(JSON.parse(String(chunk))); done() } })
  const app = Fastify({ logger: { level: 'warn', stream } })
  t.teardown(() => app.close())
  // Without a url, the adapter reads REDIS_URL (else 127.0.0.1:6379), as the example app does.
  const adapter = redisAdapter(withUrl ? { url, channelPrefix } : { channelPrefix })
  await app.register(wsHandlers, { adapter, metrics: meterProvider === undefined ? undefined : { meterProvider } })
  app.ws('/room', {
    websocketInit: (_state, ctx) => { ctx.subscribe('room') },
    info: (message) => ({ reply: text(JSON.stringify(message)) }),
    handle: (frame, _state, ctx) => {
      if (frame.type !== 'text') return undefined
      if (frame.data === 'who') return { reply: text(ctx.id) }
      if (frame.data === 'leave') ctx.unsubscribe('room')
      return undefined
    }
  })
  await app.ready()
  return { app, adapter, logs }
}

/** How many instances of this run listen to a topic's channel, as Redis sees it. */
async function instancesIn (topic: string): Promise<number> {
  return ((await admin.pubsub('NUMSUB', `${channelPrefix}t:{${topic}}`)) as [string, number])[1]
}

/** Channels this run's instances are subscribed to, as Redis sees them. */
async function channels (): Promise<string[]> {
  return ((await admin.pubsub('CHANNELS', `${channelPrefix}*`)) as string[]).sort()
}

t.test('publish, broadcast and post by id cross instances; channels only while a local connection is in the topic', async (t) => {
  const a = await instance(t)
  const b = await instance(t, false)
  const topicChannel = `${channelPrefix}t:{room}`
  t.notOk((await channels()).includes(topicChannel), 'no topic channel before a subscriber')
  const onB = await inject(b.app, '/room')
  await until(() => b.app.wsConnections.subscriberCount('room') === 1, 'B\'s subscriber')
  const subscribed = async (): Promise<boolean> => (await admin.pubsub('NUMSUB', topicChannel) as [string, number])[1] === 1
  await until(subscribed, 'B to subscribe to the topic channel (and A not)')

  t.equal(a.app.wsConnections.publish('room', { hello: 'from A' }), 0, 'no local subscriber on A')
  t.same(await onB.seen.frameCount(1), ['text:{"hello":"from A"}'])
  a.app.wsConnections.broadcast('room', text('broadcast from A'))
  t.same((await onB.seen.frameCount(2))[1], 'text:broadcast from A')
  a.app.wsConnections.broadcast('room', { type: 'binary', data: Buffer.from([1, 2, 3]) })
  t.same((await onB.seen.frameCount(3))[2], 'binary:\u0001\u0002\u0003')

  onB.ws.send('who')
  const id = (await onB.seen.frameCount(4))[3]!.slice('text:'.length)
  t.equal(a.app.wsConnections.post(id, ['posted', 'from A']), true, 'handed to Redis')
  t.same((await onB.seen.frameCount(5))[4], 'text:["posted","from A"]')
  t.equal(a.app.wsConnections.post('not-an-id', 1), false)
  b.app.wsConnections.broadcast('room', text('not to me'), { except: id })
  a.app.wsConnections.broadcast('room', text('not to me either'), { except: id })
  a.app.wsConnections.publish('room', undefined)
  t.same((await onB.seen.frameCount(6))[5], 'text:null', 'the excluded connection got neither broadcast; undefined travels as null')

  onB.ws.send('leave')
  await until(async () => !(await subscribed()), 'B to leave the channel when its last local subscriber left')
  onB.ws.terminate()
})

t.test('a message that is not JSON is refused with a coded error before anything is delivered', async (t) => {
  const a = await instance(t)
  t.throws(() => a.app.wsConnections.publish('room', { big: 1n }), { code: 'FST_WS_NOT_SERIALIZABLE', message: /BigInt/ })
  t.throws(() => a.app.wsConnections.post(`${a.app.wsConnections.instanceId}-1`, () => {}), { code: 'FST_WS_NOT_SERIALIZABLE', message: /a function is not JSON/ })
})

t.test('a killed Redis connection is logged with a code, local delivery goes on, and the adapter recovers', async (t) => {
  const a = await instance(t)
  const b = await instance(t)
  const onA = await inject(a.app, '/room')
  const onB = await inject(b.app, '/room')
  const bothSubscribed = async (): Promise<boolean> => ((await admin.pubsub('NUMSUB', `${channelPrefix}t:{room}`)) as [string, number])[1] === 2
  await until(bothSubscribed, 'both instances to subscribe')

  // Kill every connection of A (its publisher and its subscriber).
  const list = await admin.client('LIST') as string
  const ids = list.split('\n').filter((line) => line.includes(`name=fws-${a.app.wsConnections.instanceId}-`)).map((line) => /id=(\d+)/.exec(line)![1]!)
  t.equal(ids.length, 2, 'A has two connections')
  for (const id of ids) await admin.client('KILL', 'ID', id)
  await until(() => a.logs.some((line) => (line.err as { code?: string } | undefined)?.code === 'FST_WS_REDIS'), 'A logs a coded error')
  t.match(a.logs.find((line) => line.err !== undefined), { level: 50, err: { code: 'FST_WS_REDIS', message: /reconnecting, local delivery goes on/ } })

  a.app.wsConnections.publish('room', 'during the outage')
  t.same(await onA.seen.frameCount(1), ['text:"during the outage"'], 'local delivery goes on')

  await until(() => a.logs.some((line) => line.msg === 'Redis adapter reconnected and resubscribed'), 'A reconnects')
  await until(bothSubscribed, 'A to resubscribe')
  a.app.wsConnections.publish('room', 'after')
  b.app.wsConnections.publish('room', 'from B after')
  await until(() => onB.seen.frames.includes('text:"after"'), 'A reaches B again')
  await until(() => onA.seen.frames.includes('text:"from B after"'), 'B reaches A again (A resubscribed)')
  onA.ws.terminate()
  onB.ws.terminate()
})

t.test('an unreachable Redis fails registration with a coded error', async (t) => {
  const app = Fastify()
  await t.rejects(async () => {
    await app.register(wsHandlers, { adapter: redisAdapter({ url: 'redis://127.0.0.1:1', redisOptions: { retryStrategy: () => null } }) })
  }, { code: 'FST_WS_REDIS', message: /cannot reach Redis at redis:\/\/127\.0\.0\.1:1: connect ECONNREFUSED 127\.0\.0\.1:1$/ })
})

t.test('the example app with REDIS_URL: a chat room spans two instances', async (t) => {
  const before = process.env.REDIS_URL
  process.env.REDIS_URL = url
  t.teardown(() => {
    if (before === undefined) delete process.env.REDIS_URL
    else process.env.REDIS_URL = before
  })
  const room = `room-${randomBytes(3).toString('hex')}` // the example's channels have no per-run prefix
  const [a, b] = [(await buildExampleApp()).app, (await buildExampleApp()).app]
  t.teardown(async () => { await a.close(); await b.close() })
  const ada = await inject(a, `/chat?name=Ada&room=${room}`)
  await ada.seen.frameCount(1)
  await until(async () => ((await admin.pubsub('NUMSUB', `fws:t:{chat:${room}}`)) as [string, number])[1] === 1, 'A subscribed')
  const grace = await inject(b, `/chat?name=Grace&room=${room}`)
  t.match(JSON.parse((await grace.seen.frameCount(2))[1]!.slice(5)), { type: 'members', members: ['Ada', 'Grace'] }, 'Ada, on A, answered Grace on B')
  grace.ws.send(JSON.stringify({ type: 'say', text: 'hi from B' }))
  await until(() => ada.seen.frames.some((f) => f.includes('hi from B')), 'B\'s message on A')
  ada.ws.terminate()
  grace.ws.terminate()
})

t.test('across instances: every subscriber gets the JSON copy, and fields of any length arrive intact', async (t) => {
  const a = await instance(t)
  const b = await instance(t)
  const onA = await inject(a.app, '/room')
  const onB = await inject(b.app, '/room')
  await until(async () => await instancesIn('room') === 2, 'both instances subscribed')
  a.app.wsConnections.publish('room', { when: new Date(0), tags: new Set(['x']), n: 1, nested: { list: [1, 'two'] } })
  const expected = 'text:{"when":"1970-01-01T00:00:00.000Z","tags":{},"n":1,"nested":{"list":[1,"two"]}}'
  t.same(await onA.seen.frameCount(1), [expected], 'the local subscriber got the JSON copy')
  t.same(await onB.seen.frameCount(1), [expected], 'the remote subscriber got the same')

  // The lengths in the wire format are not one byte: except ids of 256 bytes and more.
  const lengths = [255, 256, 300, 70_000]
  for (const length of lengths) a.app.wsConnections.broadcast('room', text(`after an except id of ${length}`), { except: 'é'.repeat(length) })
  t.same((await onB.seen.frameCount(5)).slice(1), lengths.map((length) => `text:after an except id of ${length}`))

  // Called without the text the plugin encodes once, the adapter encodes the message itself.
  a.adapter.publish('room', { direct: true })
  t.same((await onB.seen.frameCount(6))[5], 'text:{"direct":true}')
  onB.ws.send('who')
  const id = (await onB.seen.frameCount(7))[6]!.slice('text:'.length)
  t.equal(a.adapter.post(id, ['direct']), true)
  t.same((await onB.seen.frameCount(8))[7], 'text:["direct"]')
  onA.ws.terminate()
  onB.ws.terminate()
})

t.test('the wire format round-trips, and refuses what it cannot read with a reason', async (t) => {
  const origin = Buffer.from('0a0b0c0d', 'hex')
  const longId = `0a0b0c0d-${'x'.repeat(300)}`
  t.match(decodeWire(encodeWire(origin, 4, longId, Buffer.from('{"a":1}'), 1_765_000_000_123.5)), { origin, sentAt: 1_765_000_000_123.5, message: { kind: 'post', id: longId, message: { a: 1 } } })
  t.match(decodeWire(encodeWire(origin, 2, '', Buffer.from('hi'))), { message: { kind: 'broadcast', frame: { binary: false }, except: undefined } })
  t.match(decodeWire(encodeWire(origin, 3, '0a0b0c0d-1', Buffer.from([1]))), { message: { kind: 'broadcast', frame: { binary: true }, except: '0a0b0c0d-1' } })
  t.equal(decodeWire(Buffer.alloc(3)), '3 bytes, shorter than a header')
  t.equal(decodeWire(Buffer.alloc(18, 1)), 'unknown format version 1', 'the old formats are not misread')
  t.equal(decodeWire(Buffer.concat([Buffer.from([2, 1]), Buffer.alloc(16)])), 'unknown format version 2')
  t.equal(decodeWire(encodeWire(origin, 9, '', Buffer.alloc(0))), 'unknown kind 9')
  const lying = encodeWire(origin, 4, 'abc', Buffer.alloc(0))
  lying.writeUInt32BE(1000, 14)
  t.equal(decodeWire(lying), 'a field of 1000 bytes in a message of 21')
  t.equal(decodeWire(encodeWire(origin, 2, '', Buffer.from([0xff]))), 'a text broadcast that is not UTF-8', 'it would break every client')
  t.throws(() => decodeWire(encodeWire(origin, 1, '', Buffer.from('{'))), SyntaxError, 'a body that is not JSON throws (the adapter drops it)')
})

t.test('fuzz: random and mutated messages on the adapter\'s channels are dropped and logged; the instance goes on', async (t) => {
  const a = await instance(t)
  const onA = await inject(a.app, '/room')
  await until(async () => await instancesIn('room') === 1, 'A subscribed')
  const next = random(42)
  const origin = Buffer.from('01020304', 'hex')
  const valid = [
    encodeWire(origin, 1, '', Buffer.from('{"valid":true}')),
    encodeWire(origin, 2, `${a.app.wsConnections.instanceId}-1`, Buffer.from('text')),
    encodeWire(origin, 3, '', Buffer.from([0, 1, 2])),
    encodeWire(origin, 4, `${a.app.wsConnections.instanceId}-999`, Buffer.from('[1]')),
    encodeWire(origin, 5, 'e0e0 7', Buffer.from('"kept"')) // a publication with a position
  ]
  const channels = [`${channelPrefix}t:{room}`, `${channelPrefix}i:{${a.app.wsConnections.instanceId}}`]
  for (let i = 0; i < 400; i++) {
    const payload = next(2) === 0 ? bytes(next, next(64)) : mutate(next, pick(next, valid))
    await admin.publish(pick(next, channels), payload)
  }
  await admin.publish(channels[0]!, encodeWire(origin, 1, '', Buffer.from('"after the fuzz"')))
  await until(() => onA.seen.frames.includes('text:"after the fuzz"'), 'a valid message after the fuzz')
  const dropped = a.logs.filter((line) => line.msg === 'Redis adapter dropped a message it cannot read')
  t.ok(dropped.length >= 1, 'drops are logged')
  t.match(dropped[0], { level: 40, code: 'FST_WS_REDIS', problem: String, dropped: Number })
  t.equal(a.app.wsConnections.size, 1, 'the connection is still open')
  onA.ws.terminate()
})

t.test('metrics: the delivery lag from another instance, and what the adapter drops', async (t) => {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
  const meterProvider = new MeterProvider({ readers: [reader] })
  t.teardown(async () => await meterProvider.shutdown())
  const a = await instance(t)
  const b = await instance(t, true, meterProvider)
  const onB = await inject(b.app, '/room')
  await until(async () => await instancesIn('room') === 1, 'B listens to the room')
  a.app.wsConnections.publish('room', 'from A')
  await onB.seen.frameCount(1)
  await admin.publish(`${channelPrefix}t:{room}`, Buffer.from('not the wire format'))
  const read = async (name: string): Promise<Map<string, unknown>> => {
    exporter.reset()
    await reader.forceFlush()
    const metric = exporter.getMetrics()[0]?.scopeMetrics[0]?.metrics.find((candidate) => candidate.descriptor.name === name)
    return new Map(metric?.dataPoints.map((point) => [JSON.stringify(point.attributes), point.value]))
  }
  await until(async () => (await read('websocket.server.adapter.errors')).size === 1, 'the junk message counted')
  t.same(await read('websocket.server.adapter.errors'), new Map([['{"error.type":"dropped"}', 1]]))
  await admin.client('KILL', 'TYPE', 'pubsub', 'SKIPME', 'yes') // every subscriber connection, B's too
  await until(async () => (await read('websocket.server.adapter.errors')).has('{"error.type":"error"}'), 'the lost connection counted')
  const lag = (await read('websocket.server.adapter.delivery.lag')).get('{"websocket.message.kind":"publish"}') as Histogram
  t.equal(lag.count, 1, 'one publication from A')
  t.ok(lag.sum! >= 0 && lag.sum! < 5, `a lag in seconds (${lag.sum!})`)
  onB.ws.terminate()
})

t.test('a registration that fails after the adapter started closes it: no Redis connection is left open', async (t) => {
  const inner = redisAdapter({ url, channelPrefix: `fws-${randomBytes(4).toString('hex')}:` })
  let instanceId = ''
  const adapter: PubSubAdapter = {
    ...inner,
    history: inner.history,
    async start (local, log) {
      instanceId = local.instanceId
      await inner.start(local, log)
    }
  }
  const app = Fastify()
  t.teardown(() => app.close())
  const meterProvider = { getMeter: () => { throw new Error('no meter here') } }
  await t.rejects(async () => { await app.register(wsHandlers, { adapter, metrics: { meterProvider } as never }) }, { message: 'no meter here' })
  t.not(instanceId, '', 'the adapter had started')
  await until(async () => !(await admin.client('LIST') as string).includes(`name=fws-${instanceId}-`), 'its connections closed')
  t.equal(inner.connected, false)
})
