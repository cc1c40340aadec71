/**
 * The Redis adapter when Redis misbehaves, against a redis-server this test starts on its own
 * port: silent (SIGSTOP: connections open, nothing answered) or gone at app.close(). Shutdown is
 * bounded by closeTimeout, and afterwards nothing of the adapter is left: no socket, no timer,
 * nothing that reconnects or resubscribes when Redis comes back.
 */
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import wsHandlers, { text } from '../lib/index.js'
import { redisAdapter, type RedisPubSubAdapter } from '../lib/redis.js'
import { wsClient } from '../lib/testing.js'
import { until, within } from './helpers.js'
import { ownRedis } from './redis-server.js'

/** Sockets and timers this process holds. */
function handles (): { sockets: number, timers: number } {
  const active = process.getActiveResourcesInfo()
  return { sockets: active.filter((name) => name === 'TCPSocketWrap').length, timers: active.filter((name) => name === 'Timeout').length }
}

async function gateway (url: string): Promise<{ app: ReturnType<typeof Fastify>, adapter: RedisPubSubAdapter }> {
  const adapter = redisAdapter({ url, redisOptions: { retryStrategy: () => 50 } })
  const app = Fastify()
  await app.register(wsHandlers, { adapter, closeTimeout: 300 })
  app.ws('/room', {
    websocketInit: (_state, ctx) => { ctx.subscribe('room') },
    info: (message) => ({ reply: text(String(message)) })
  })
  await app.ready()
  return { app, adapter }
}

/** The names of the clients Redis sees. */
async function clientNames (url: string): Promise<string[]> {
  const admin = new Redis(url, { lazyConnect: true, retryStrategy: () => null })
  await admin.connect()
  const list = await admin.client('LIST') as string
  admin.disconnect()
  return list.split('\n').map((line) => /name=(\S*)/.exec(line)?.[1] ?? '').filter((name) => name !== '')
}

t.test('a silent Redis (connections open, nothing answered) does not hold app.close() past closeTimeout, and nothing is left', async (t) => {
  const redis = await ownRedis(t)
  const before = handles()
  const { app, adapter } = await gateway(redis.url)
  t.equal(adapter.connected, true, 'connected, for /health')
  const client = await wsClient(app, '/room')
  await until(() => app.wsConnections.subscriberCount('room') === 1, 'subscribed')
  redis.silence()
  await within(app.close(), 'app.close() with a silent Redis')
  t.pass('app.close() resolved')
  t.equal(adapter.connected, false, 'not connected once closed')
  await until(() => { const now = handles(); return now.sockets <= before.sockets && now.timers <= before.timers }, 'no socket or timer of the adapter left')
  redis.wake()
  const id = app.wsConnections.instanceId
  await until(async () => !(await clientNames(redis.url)).some((name) => name.startsWith(`fws-${id}-`)), 'Redis to see none of its connections')
  await client.closed()
})

t.test('with Redis gone at app.close(), the app closes, stops reconnecting, and never resubscribes when Redis is back', async (t) => {
  const redis = await ownRedis(t)
  const before = handles()
  const { app, adapter } = await gateway(redis.url)
  const client = await wsClient(app, '/room')
  await until(() => app.wsConnections.subscriberCount('room') === 1, 'subscribed')
  await redis.kill()
  await until(() => !adapter.connected, 'the adapter to see Redis gone')
  await within(app.close(), 'app.close() with Redis gone')
  t.pass('app.close() resolved')
  await until(() => { const now = handles(); return now.sockets <= before.sockets && now.timers <= before.timers }, 'no reconnect timer nor socket left')
  await redis.restart()
  t.same((await clientNames(redis.url)).filter((name) => name.startsWith('fws-')), [], 'nothing of the closed app came back')
  await client.closed()
})
