/**
 * Nothing lost across instances: two instances in processes of their own on one Redis, 100
 * clients half on each, 1,000 publications a second from a third app. The instance half of the
 * clients are on is killed (SIGKILL), or drained (SIGTERM: 1012 in batches); its clients come
 * back to the other since their last positions, and every client ends with every publication
 * exactly once, in order. A Redis restart: with AOF, the same; without persistence, every
 * client is told to resync (a new epoch) and is whole from there: never a silent gap.
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import wsHandlers from '../lib/index.js'
import { redisAdapter, type RedisPubSubAdapter } from '../lib/redis.js'
import { until } from './helpers.js'
import { feed, range } from './followers.js'
import { machineRedis, ownRedis } from './redis-server.js'
import { startInstance as startProcess } from './instances.js'
import { ResumingClient } from './resuming-client.js'

// Four scenarios of 100 clients and child processes: on two loaded cores they take more than
// the 60 s a test file gets by default (each waits on observable state, none on a time).
t.setTimeout(240_000)
const machine = machineRedis(t).url
const script = fileURLToPath(new URL('./fixtures/history-instance.ts', import.meta.url))

interface Child { process: ChildProcess, url: string }

/** An instance of the app in `fixtures/history-instance.ts`, in its own process. */
async function startInstance (t: Test, redisUrl: string, prefix: string): Promise<Child> {
  const { process: child, port } = await startProcess(t, script, { REDIS_URL: redisUrl, CHANNEL_PREFIX: prefix })
  return { process: child, url: `ws://127.0.0.1:${port}/feed` }
}

async function publisherApp (t: Test, redisUrl: string, prefix: string): Promise<{ app: FastifyInstance, adapter: RedisPubSubAdapter }> {
  const app = Fastify()
  t.teardown(() => app.close())
  const adapter = redisAdapter({ url: redisUrl, channelPrefix: prefix, redisOptions: { retryStrategy: () => 20 } })
  await app.register(wsHandlers, { adapter, history: { feed: { size: 100_000 } } })
  await app.ready()
  return { app, adapter }
}

/**
 * Publish `count` at about 1,000 a second (10 every 10 ms), calling `midway` after half of them;
 * then one more, whose offset is the last: the history is the truth of what was kept (a
 * publication Redis refused while down has no offset; one whose reply was lost may have one).
 */
async function pour (app: FastifyInstance, count: number, midway: () => Promise<void>): Promise<{ refused: number, last: number }> {
  const sent: Array<Promise<boolean>> = []
  for (let i = 0; i < count;) {
    for (let j = 0; j < 10; j++, i++) sent.push(app.wsConnections.publishConfirmed(feed, `m${i}`).then(() => true, () => false))
    if (i === count / 2) await midway()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const refused = (await Promise.all(sent)).filter((kept) => !kept).length
  let last: number | undefined
  await until(async () => { last = (await app.wsConnections.publishConfirmed(feed, 'the end').catch(() => undefined))?.offset; return last !== undefined }, 'the last publication kept')
  return { refused, last: last! }
}

/** 100 clients, half on each instance, each subscribed (its first position known). */
async function clientsOn (a: Child, b: Child): Promise<ResumingClient[]> {
  const clients = range(0, 99).map((i) => new ResumingClient(i < 50 ? [a.url, b.url] : [b.url, a.url]))
  await until(() => clients.every((client) => client.start !== undefined), 'every client subscribed')
  return clients
}

/** Two instances and a publisher on one Redis, and 100 clients half on each instance. */
async function scene (t: Test, redisUrl: string, prefix = `fws-failover-${randomBytes(4).toString('hex')}:`): Promise<{
  a: Child, publisher: FastifyInstance, publisherAdapter: RedisPubSubAdapter, clients: ResumingClient[]
}> {
  const [a, b] = [await startInstance(t, redisUrl, prefix), await startInstance(t, redisUrl, prefix)]
  const { app: publisher, adapter: publisherAdapter } = await publisherApp(t, redisUrl, prefix)
  const clients = await clientsOn(a, b)
  t.teardown(() => { for (const client of clients) client.close() })
  return { a, publisher, publisherAdapter, clients }
}

function checkWhole (t: Test, clients: ResumingClient[], last: number): void {
  let whole = 0
  for (const client of clients) {
    const expected = range(client.start! + 1, last)
    if (client.offsets.join() === expected.join()) whole++
    else t.fail(`a client has ${client.offsets.length} of ${expected.length}: first gap at ${client.offsets.findIndex((offset, i) => offset !== expected[i])}`)
  }
  t.equal(whole, clients.length, 'every client: every publication exactly once, in order')
}

t.test('SIGKILL of the instance half of the clients are on: they come back on the other, nothing lost', async (t) => {
  const { a, publisher, clients } = await scene(t, machine)
  const { refused, last } = await pour(publisher, 2000, async () => {
    a.process.kill('SIGKILL')
    await once(a.process, 'exit')
  })
  t.equal(refused, 0, 'Redis kept every publication')
  await until(() => clients.every((client) => client.last === last), 'every client up to the last', 60_000)
  t.ok(clients.slice(0, 50).every((client) => client.closeCodes[0] === 1006), 'A\'s clients lost their connection (1006)')
  checkWhole(t, clients, last)
})

t.test('SIGTERM drains the instance (1012 in batches): its clients come back on the other, nothing lost', async (t) => {
  const { a, publisher, clients } = await scene(t, machine)
  const { last } = await pour(publisher, 2000, async () => {
    a.process.kill('SIGTERM')
    await once(a.process, 'exit')
  })
  await until(() => clients.every((client) => client.last === last), 'every client up to the last', 60_000)
  t.ok(clients.slice(0, 50).every((client) => client.closeCodes[0] === 1012), 'A\'s clients were told: Service Restart (1012)')
  checkWhole(t, clients, last)
})

t.test('a Redis restart with AOF: every kept publication reaches every client once, in order', async (t) => {
  const redis = await ownRedis(t, { persist: true })
  const { publisher, publisherAdapter, clients } = await scene(t, redis.url)
  const { refused, last } = await pour(publisher, 2000, async () => {
    await redis.kill()
    await until(() => !publisherAdapter.connected, 'the publisher sees Redis gone')
    const during = await Promise.allSettled(range(1, 10).map(async () => await publisher.wsConnections.publishConfirmed(feed, 'during')))
    t.ok(during.every((result) => result.status === 'rejected'), 'refused to the publisher while Redis is down')
    await redis.restart()
  })
  // Kept: what Redis took (some were refused until the publisher reconnected), and the last one.
  t.ok(last >= 2000 - refused + 1, `offsets go on across the restart (${refused} refused while it came back)`)
  await until(() => clients.every((client) => client.last === last), 'every client up to the last', 60_000)
  checkWhole(t, clients, last)
  t.ok(clients.every((client) => client.resyncs.length === 0), 'no client was told to resync')
})

t.test('a Redis restart without persistence: a new epoch, every client told to resync, and whole after it', async (t) => {
  const redis = await ownRedis(t)
  const { publisher, clients } = await scene(t, redis.url)
  const { last } = await pour(publisher, 2000, async () => {
    await redis.kill()
    await redis.restart()
  })
  t.ok(last < 2000, `the new epoch counts from 1 (${last} in it)`)
  await until(() => clients.every((client) => client.resyncs.some((resync) => resync.reason === 'epoch')), 'every client told', 60_000)
  await until(() => clients.every((client) => client.last === last), 'every client up to the last', 60_000)
  let whole = 0
  for (const client of clients) {
    const resync = client.resyncs.find((r) => r.reason === 'epoch')!
    const since = client.offsets.lastIndexOf(resync.offset + 1)
    if (client.offsets.slice(since).join() === range(resync.offset + 1, last).join()) whole++
  }
  t.equal(whole, clients.length, 'every client: whole after its resync')
})
