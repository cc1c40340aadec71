/**
 * Topics with history on Redis (Streams): positions are the same on every instance, a client
 * recovers on instance B what it missed on A, the seam holds while publications pour in, a live
 * gap (the subscriber connection killed) is mended from the history as soon as it is back, and a Redis restart gives
 * a new epoch (no persistence: every follower is told to resync) or nothing lost (AOF).
 */
import { createHash, randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import wsHandlers, { text, type HistoryLimits } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'
import { decodeWire, keptHead } from '../lib/registry/redis.js'
import { hashTagOf } from '../lib/registry/redis-history.js'
import { inject, until } from './helpers.js'
import { feed, follower, offsetsOf, range } from './followers.js'
import { machineRedis, ownRedis } from './redis-server.js'
import { Redis } from 'ioredis'

const { url, admin } = machineRedis(t)

interface Instance { app: FastifyInstance, logs: Array<Record<string, unknown>> }

/** An instance with the `/feed` follower route; its own prefix per test unless given one to share. */
async function instance (t: { teardown(fn: () => unknown): void }, channelPrefix: string, redisUrl = url, limits: HistoryLimits = { size: 10_000 }): Promise<Instance> {
  const logs: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { logs.push(JSON.parse(String(chunk))); done() } })
  const app = Fastify({ logger: { level: 'warn', stream } })
  t.teardown(() => app.close())
  await app.register(wsHandlers, { adapter: redisAdapter({ url: redisUrl, channelPrefix, redisOptions: { retryStrategy: () => 20 } }), history: { feed: limits } })
  app.ws('/feed', follower)
  await app.ready()
  return { app, logs }
}

/** A prefix of the test's own on the machine's Redis; its keys are deleted after the run. */
const prefixes: string[] = []
const prefix = (): string => {
  const made = `fws-test-${randomBytes(4).toString('hex')}:`
  prefixes.push(made)
  return made
}
t.teardown(async () => {
  for (const made of prefixes) {
    const keys = await admin.keys(`${made}*`)
    if (keys.length !== 0) await admin.del(...keys)
  }
})

/** Instances A and B of one app, on a prefix of their own. */
async function twoInstances (t: { teardown(fn: () => unknown): void }): Promise<[Instance, Instance]> {
  const shared = prefix()
  return [await instance(t, shared), await instance(t, shared)]
}

async function publishMany (app: FastifyInstance, from: number, to: number): Promise<void> {
  for (let i = from; i <= to; i++) app.wsConnections.publish(feed, `m${i}`)
  await app.wsConnections.publishConfirmed(feed, 'sync') // the ones before it are kept too (one connection, in order)
}

t.test('positions are the same on every instance; a client recovers on B what it missed on A', async (t) => {
  const [a, b] = await twoInstances(t)
  const onA = await inject(a.app, '/feed')
  await onA.seen.frameCount(1)
  t.same(onA.seen.frames, ['text:subscribed:0:0'], 'a new topic: before any publication')
  const first = await b.app.wsConnections.publishConfirmed(feed, 'from B')
  t.equal(first.offset, 1)
  await onA.seen.frameCount(2)
  t.same(onA.seen.frames[1], 'text:p:1:from B', 'B\'s publication reaches A with its position')
  onA.ws.terminate() // A's client goes away; the others go on
  const missed = await a.app.wsConnections.publishConfirmed(feed, 'while away')
  t.same(missed, { offset: 2, epoch: first.epoch })
  const onB = await inject(b.app, `/feed?since=${first.epoch}:1`)
  await onB.seen.frameCount(2)
  a.app.wsConnections.publish(feed, 'live')
  await onB.seen.frameCount(3)
  t.same(onB.seen.frames, ['text:p:2:while away', 'text:subscribed:2:1', 'text:p:3:live'])
})

t.test('the seam under load: clients recover on B while A publishes 2,000, each ends with every one once, in order', async (t) => {
  const [a, b] = await twoInstances(t)
  const { epoch } = await a.app.wsConnections.publishConfirmed(feed, 'm1')
  await publishMany(a.app, 2, 500) // 501 with the sync
  let published = 501
  const pouring = { on: true }
  const pour = (async () => {
    while (pouring.on) {
      for (let i = 0; i < 20; i++) a.app.wsConnections.publish(feed, `m${++published}`)
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  const clients = await Promise.all(range(0, 19).map(async (i) => ({ from: i * 25, client: await inject(b.app, `/feed?since=${epoch}:${i * 25}`) })))
  await until(() => published >= 2500, '2,000 more publications')
  pouring.on = false
  await pour
  const last = (await a.app.wsConnections.publishConfirmed(feed, 'last')).offset
  for (const { from, client } of clients) {
    await until(() => offsetsOf(client.seen.frames).at(-1) === last, `since ${from}: up to the last`)
    t.same(offsetsOf(client.seen.frames), range(from + 1, last), `since ${from}: every one once, in order`)
  }
})

t.test('a gap in live delivery (B\'s subscriber connection killed) is mended from the history as soon as B is back', async (t) => {
  const [a, b] = await twoInstances(t)
  const onB = await inject(b.app, '/feed')
  await onB.seen.frameCount(1)
  await publishMany(a.app, 1, 10)
  await until(() => offsetsOf(onB.seen.frames).length === 11, 'the first 11')
  // Kill B's subscriber connection: what A publishes meanwhile never reaches B live.
  const clients = await admin.client('LIST') as string
  const subscriberOfB = clients.split('\n').find((line) => line.includes(`name=fws-${b.app.wsConnections.instanceId}-sub`))!
  await admin.client('KILL', 'ID', /id=(\d+)/.exec(subscriberOfB)![1]!)
  await publishMany(a.app, 12, 30) // offsets 12 to 31 (the sync one included)
  // Nothing more is published: B's followers read what they missed as soon as B is back.
  await until(() => offsetsOf(onB.seen.frames).length === 31, 'all 31, with no publication after the outage')
  t.same(offsetsOf(onB.seen.frames), range(1, 31), 'every one once, in order: the gap was read back')
  t.ok(b.logs.some((line) => line.msg === 'Redis adapter reconnected and resubscribed'))
  await a.app.wsConnections.publishConfirmed(feed, 'after')
  await until(() => offsetsOf(onB.seen.frames).length === 32, 'and live again')
  t.same(offsetsOf(onB.seen.frames), range(1, 32))
})

t.test('bounded: the stream holds at most `size`; a client far behind is told to resync', async (t) => {
  const shared = prefix()
  const a = await instance(t, shared, url, { size: 50 })
  const { epoch } = await a.app.wsConnections.publishConfirmed(feed, 'm1')
  await publishMany(a.app, 2, 2000)
  t.equal(await admin.xlen(`${shared}h:{${hashTagOf('feed')}}`), 50)
  const behind = await inject(a.app, `/feed?since=${epoch}:10`)
  await behind.seen.frameCount(1)
  t.same(behind.seen.frames, ['text:resync:2001:trimmed'])
  const near = await inject(a.app, `/feed?since=${epoch}:1960`)
  await near.seen.frameCount(42)
  t.same(offsetsOf(near.seen.frames), range(1961, 2001))
})

t.test('a Redis restart without persistence: a new epoch, and every follower is told to resync', async (t) => {
  const redis = await ownRedis(t)
  const a = await instance(t, 'fws:', redis.url)
  const onA = await inject(a.app, '/feed')
  await onA.seen.frameCount(1)
  const before = await a.app.wsConnections.publishConfirmed(feed, 'before')
  await redis.kill()
  await t.rejects(a.app.wsConnections.publishConfirmed(feed, 'during'), { code: 'FST_WS_REDIS' }, 'not kept: the caller is told')
  await redis.restart()
  await until(() => a.app.wsConnections.publishConfirmed(feed, 'after').then(() => true, () => false), 'Redis back')
  // Told before 'after' was kept (resync at 0, then 'after'), or after (resync at 1, which is 'after'):
  // which one depends on whether its catch-up read ran before the publication.
  await until(() => ['text:p:1:after', 'text:resync:1:epoch'].includes(onA.seen.frames.at(-1)!), 'the follower is at the new epoch\'s newest')
  const [, , resync, after] = onA.seen.frames
  t.match(resync, /^text:resync:[01]:epoch$/, 'the follower is told: the history was lost')
  if (resync === 'text:resync:0:epoch') t.equal(after, 'text:p:1:after')
  else t.equal(after, undefined, 'the resync puts it at the publication')
  const back = await inject(a.app, `/feed?since=${before.epoch}:1`)
  await back.seen.frameCount(1)
  t.same(back.seen.frames, ['text:resync:1:epoch'], 'a client from before the restart is told to resync')
})

t.test('a Redis restart with persistence (AOF): the epoch and history survive, recovery goes on across it', async (t) => {
  const redis = await ownRedis(t, { persist: true })
  const a = await instance(t, 'fws:', redis.url)
  const first = await a.app.wsConnections.publishConfirmed(feed, 'one')
  await a.app.wsConnections.publishConfirmed(feed, 'two')
  await redis.kill()
  await redis.restart()
  await until(() => a.app.wsConnections.publishConfirmed(feed, 'three').then(() => true, () => false), 'Redis back')
  const back = await inject(a.app, `/feed?since=${first.epoch}:1`)
  await back.seen.frameCount(3)
  t.same(back.seen.frames, ['text:p:2:two', 'text:p:3:three', 'text:subscribed:3:2'])
})

t.test('the kept wire: a KEPT message carries its position; malformed ones are refused', async (t) => {
  const origin = Buffer.from('0a0b0c0d', 'hex')
  const field = 'abc 7'
  const length = Buffer.alloc(4)
  length.writeUInt32BE(Buffer.byteLength(field))
  const message = Buffer.concat([keptHead(origin, 5), length, Buffer.from(field), Buffer.from('"hi"')])
  t.match(decodeWire(message), { sentAt: 5, message: { kind: 'kept', message: 'hi', position: { epoch: 'abc', offset: 7 } } })
  for (const bad of ['abc', ' 7', 'abc x', 'abc 0', 'abc -1']) {
    const badLength = Buffer.alloc(4)
    badLength.writeUInt32BE(Buffer.byteLength(bad))
    t.type(decodeWire(Buffer.concat([keptHead(origin), badLength, Buffer.from(bad), Buffer.from('1')])), 'string', bad)
  }
  t.throws(() => redisAdapter({ channelPrefix: 'a{b}:' }), { code: 'FST_WS_INVALID_OPTION' })
  // Channel names are remembered for 10,000 topics at most.
  const { app } = await instance(t, prefix())
  for (let i = 0; i <= 10_000; i++) app.wsConnections.publish(`other-${i}`, i)
  t.equal(await app.wsConnections.publishConfirmed(feed, 'still here').then((p) => p.offset), 1)
  t.equal(hashTagOf('chat:1'), 'chat:1')
  t.match(hashTagOf('a}b'), /^~[0-9a-f]{40}$/)
  t.not(hashTagOf(hashTagOf('a}b')), hashTagOf('a}b'), 'a topic named as another\'s hashed tag is hashed too')
})

t.test('topic names map to channels one to one: a topic named as another\'s hashed tag shares nothing with it', async (t) => {
  const shared = prefix()
  const braced = 'room{1}'
  const twin = createHash('sha1').update(braced).digest('hex') // the tag a plain hash would give `room{1}`, as a topic of its own
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { adapter: redisAdapter({ url, channelPrefix: shared }), history: { [braced]: { size: 10 }, [twin]: { size: 10 }, [`~${twin}`]: { size: 10 } } })
  const heard: string[] = []
  app.ws('/twin', { websocketInit: (_s, ctx) => { ctx.subscribe(twin) }, info: (message) => { heard.push(String(message)) } })
  await app.ready()
  const { ws } = await inject(app, '/twin')
  t.equal((await app.wsConnections.publishConfirmed(braced, 'to the braced room')).offset, 1)
  t.equal((await app.wsConnections.publishConfirmed(`~${twin}`, 'to the tilde room')).offset, 1)
  t.equal((await app.wsConnections.publishConfirmed(twin, 'to the twin')).offset, 1, 'its own counter')
  await until(() => heard.length === 1, 'the twin\'s own publication')
  t.same(heard, ['to the twin'])
  ws.close()
})

t.test('a history expired by age is trimmed, not lost: the epoch and the offsets go on', async (t) => {
  const shared = prefix()
  const a = await instance(t, shared, url, { size: 100, maxAgeMs: 30 })
  const first = await a.app.wsConnections.publishConfirmed(feed, 'one')
  const tag = hashTagOf('feed')
  await until(async () => await admin.exists(`${shared}h:{${tag}}`) === 0, 'the entries expired')
  t.equal(await admin.exists(`${shared}m:{${tag}}`), 1, 'the epoch and counter are kept')
  const second = await a.app.wsConnections.publishConfirmed(feed, 'two')
  t.same(second, { epoch: first.epoch, offset: 2 })
  await until(async () => await admin.exists(`${shared}h:{${tag}}`) === 0, 'expired again')
  const { seen } = await inject(a.app, `/feed?since=${first.epoch}:0`)
  await seen.frameCount(1)
  t.same(seen.frames, ['text:resync:2:trimmed'], 'a client from before is told it was trimmed, in the same epoch')
})

t.test('an entry in the stream that is not JSON (another app, a bug) fails the read: followers are told `unavailable`, nothing throws', async (t) => {
  const shared = prefix()
  const a = await instance(t, shared)
  const { epoch } = await a.app.wsConnections.publishConfirmed(feed, 'one')
  const tag = hashTagOf('feed')
  await admin.xadd(`${shared}h:{${tag}}`, '2-0', 't', String(Date.now()), 'd', '{not json')
  await admin.hincrby(`${shared}m:{${tag}}`, 'offset', 1)
  const { seen } = await inject(a.app, `/feed?since=${epoch}:0`)
  await seen.frameCount(1)
  t.same(seen.frames, ['text:resync:0:unavailable'])
  await until(() => a.logs.some((line) => line.msg === 'WebSocket topic history could not be read: its followers resync'), 'logged')
  a.app.wsConnections.publish(feed, 'three')
  await seen.frameCount(2)
  t.same(seen.frames[1], 'text:p:3:three', 'live from the next one')
})

t.test('publish() to a topic with history on Redis claims no delivery before Redis kept it; the deliver channel counts it once kept, publishConfirmed too', async (t) => {
  const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
  const a = await instance(t, prefix())
  const { seen } = await inject(a.app, '/feed')
  await seen.frameCount(1)
  const events: Array<{ operation: string, delivered: number }> = []
  const listen = (event: unknown): void => { events.push(event as { operation: string, delivered: number }) }
  subscribe('fastify-ws-handlers:deliver', listen)
  t.teardown(() => unsubscribe('fastify-ws-handlers:deliver', listen))
  t.equal(a.app.wsConnections.publish(feed, 'one'), 0, 'not delivered yet')
  t.same(events, [])
  await seen.frameCount(2)
  await until(() => events.length === 1, 'counted once kept')
  await a.app.wsConnections.publishConfirmed(feed, 'two')
  t.match(events, [{ operation: 'publish', delivered: 1 }, { operation: 'publish', delivered: 1 }])
})

t.test('a follower that subscribes while Redis is down is told `unavailable`, and its topic is live again once Redis is back (never deaf)', async (t) => {
  const redis = await ownRedis(t)
  const a = await instance(t, 'fws:', redis.url)
  const watcher = new Redis(redis.url)
  watcher.on('error', () => {}) // while the test's Redis is down
  t.teardown(() => watcher.disconnect())
  await redis.kill()
  await until(() => a.logs.some((line) => (line.err as { code?: string } | undefined)?.code === 'FST_WS_REDIS'), 'the adapter saw Redis go')
  const { seen } = await inject(a.app, '/feed?since=e:0') // a topic no connection here followed yet
  await seen.frameCount(1)
  t.match(seen.frames[0], /^text:resync:\d+:unavailable$/, 'told at once that the history cannot be read')
  await redis.restart()
  await until(async () => Number((await watcher.pubsub('NUMSUB', 'fws:t:{feed}').catch(() => ['', 0]))[1]) === 1, 'the topic subscribed again on the new Redis')
  await until(() => a.app.wsConnections.publishConfirmed(feed, 'after').then(() => true, () => false), 'Redis back for publishing')
  await until(() => seen.frames.some((frame) => frame.endsWith(':after')), 'a live publication reaches the follower')
  t.pass('not deaf')
})

t.test('a topic Redis refuses to subscribe (an ACL) is not reported back: after a reconnect `connected` stays false and no return is logged, until Redis takes it', async (t) => {
  const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
  const redis = await ownRedis(t)
  const control = new Redis(redis.url)
  t.teardown(() => control.disconnect())
  await control.call('ACL', 'SETUSER', 'default', 'resetchannels', '&fws:i:*') // the instances' own channels only
  const refused: unknown[] = []
  const listen = (event: unknown): void => { if ((event as { what?: string }).what === 'subscribing failed') refused.push(event) }
  subscribe('fastify-ws-handlers:adapter', listen)
  t.teardown(() => unsubscribe('fastify-ws-handlers:adapter', listen))
  const logs: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'warn', stream: new Writable({ write (chunk, _encoding, done) { logs.push(JSON.parse(String(chunk))); done() } }) } })
  t.teardown(() => app.close())
  const adapter = redisAdapter({ url: redis.url, redisOptions: { retryStrategy: () => 20 } })
  await app.register(wsHandlers, { adapter, history: { feed: { size: 100 } } })
  app.ws('/feed', follower)
  await app.ready()
  t.equal(adapter.connected, true)

  const { seen } = await inject(app, '/feed?since=e:0')
  await seen.frameCount(1)
  t.match(seen.frames[0], /^text:resync:\d+:unavailable$/, 'its history cannot be read without the subscription')
  t.equal(adapter.connected, false)
  await control.client('KILL', 'TYPE', 'pubsub') // the subscriber connection comes back, and subscribes every topic again
  await until(() => refused.length === 2, 'the SUBSCRIBE refused again after the reconnect')
  t.equal(adapter.connected, false, 'a deaf topic: not connected')
  t.notOk(logs.some((line) => line.msg === 'Redis adapter reconnected and resubscribed'), 'no return logged')

  await control.call('ACL', 'SETUSER', 'default', 'allchannels')
  await control.client('KILL', 'TYPE', 'pubsub')
  await until(() => adapter.connected, 'connected once Redis took every topic')
  t.ok(logs.some((line) => line.msg === 'Redis adapter reconnected and resubscribed'))
  await app.wsConnections.publishConfirmed(feed, 'live')
  await until(() => seen.frames.some((frame) => frame.endsWith(':live')), 'the follower hears its topic')
})

t.test('a SUBSCRIBE that a silent Redis never answers fails the history read after a bound: the follower is told `unavailable`, it does not wait forever', async (t) => {
  const redis = await ownRedis(t)
  const a = await instance(t, 'fws:', redis.url)
  redis.silence() // connections open, nothing answered
  t.teardown(() => { redis.wake() })
  const { seen } = await inject(a.app, '/feed?since=e:0')
  await seen.frameCount(1)
  t.match(seen.frames[0], /^text:resync:\d+:unavailable$/)
  await until(() => a.logs.some((line) => /subscription to "feed" is not confirmed/.test(String((line.err as { message?: string } | undefined)?.message))), 'the reason logged')
  redis.wake()
})

t.test('on the publishing instance, publications and broadcasts of a topic with history arrive in the order they were made', async (t) => {
  const a = await instance(t, prefix())
  const { seen } = await inject(a.app, '/feed')
  await seen.frameCount(1) // subscribed
  for (let i = 1; i <= 3; i++) {
    a.app.wsConnections.publish(feed, `p${i}`)
    a.app.wsConnections.broadcast(feed, text(`b${i}`))
  }
  await seen.frameCount(7)
  t.same(seen.frames.slice(1).map((frame) => frame.replace(/^text:p:\d+:/, 'text:')), ['text:p1', 'text:b1', 'text:p2', 'text:b2', 'text:p3', 'text:b3'])
  t.equal(a.app.wsConnections.broadcast('no-history', text('at once')), 0, 'a topic without history: written here at once, as before (nobody here)')
})

t.test('a read of the Redis history returns all it asks for: `size` entries when `size` are kept, oldest first, each with its message', async (t) => {
  const channelPrefix = prefix()
  const adapter = redisAdapter({ url, channelPrefix })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsHandlers, { adapter, history: { feed: { size: 5 } } })
  await app.ready()
  for (let i = 1; i <= 7; i++) await app.wsConnections.publishConfirmed(feed, `m${i}`)
  const read = await adapter.history!.read('feed', 0, { size: 5 })
  t.same(read.entries, [3, 4, 5, 6, 7].map((offset) => ({ offset, message: `m${offset}` })))
  const tail = await adapter.history!.read('feed', 5, { size: 5 })
  t.same(tail.entries.map((entry) => entry.offset), [6, 7])
})

t.test('a history read while the reading connection reconnects waits for it (bounded) instead of telling the follower `unavailable`', async (t) => {
  const redis = await ownRedis(t)
  const control = new Redis(redis.url)
  t.teardown(() => control.disconnect())
  const app = Fastify()
  t.teardown(() => app.close())
  // The publishing (and reading) connection comes back 300 ms after it drops.
  await app.register(wsHandlers, { adapter: redisAdapter({ url: redis.url, redisOptions: { retryStrategy: () => 300 } }), history: { feed: { size: 100 } } })
  app.ws('/feed', follower)
  await app.ready()
  const first = await app.wsConnections.publishConfirmed(feed, 'one')
  await app.wsConnections.publishConfirmed(feed, 'two')
  await control.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes') // the adapter's publishing connection (the subscriber is of type pubsub)
  const { seen } = await inject(app, `/feed?since=${first.epoch}:0`)
  await seen.frameCount(3)
  t.same(seen.frames, ['text:p:1:one', 'text:p:2:two', 'text:subscribed:2:2'], 'recovered once the connection was back')
})

t.test('a history read waits for the reading connection at most 2 s: then its follower is told `unavailable`, and why is logged', async (t) => {
  const redis = await ownRedis(t)
  const control = new Redis(redis.url)
  t.teardown(() => control.disconnect())
  const logs: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'warn', stream: new Writable({ write (chunk, _encoding, done) { logs.push(JSON.parse(String(chunk))); done() } }) } })
  t.teardown(() => app.close())
  await app.register(wsHandlers, { adapter: redisAdapter({ url: redis.url, redisOptions: { retryStrategy: () => 4000 } }), history: { feed: { size: 100 } } })
  app.ws('/feed', follower)
  await app.ready()
  const first = await app.wsConnections.publishConfirmed(feed, 'one')
  await control.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes') // back in 4 s only
  const { seen } = await inject(app, `/feed?since=${first.epoch}:0`)
  await seen.frameCount(1)
  t.match(seen.frames[0], /^text:resync:\d+:unavailable$/)
  await until(() => logs.some((line) => /cannot be read: the connection to Redis is not back after 2000 ms/.test(String((line.err as { message?: string } | undefined)?.message))), 'the reason logged')
})
