/**
 * Nothing lost across instances: two instances in processes of their own on one Redis, 100
 * clients half on each, 1,000 publications a second from a third app. The instance half of the
 * clients are on is killed (SIGKILL), or drained (SIGTERM: 1012 in batches); its clients come
 * back to the other since their last positions, and every client ends with every publication
 * exactly once, in order. A Redis restart: with AOF, the same; without persistence, every
 * client is told to resync (a new epoch) and is whole from there: never a silent gap.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import wsHandlers from '../lib/index.js'
import { redisAdapter, type RedisPubSubAdapter } from '../lib/redis.js'
import { until } from './helpers.js'
import { feed, range } from './followers.js'
import { ownRedis } from './redis-server.js'
import { ResumingClient } from './resuming-client.js'

const machineRedis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const script = fileURLToPath(new URL('./fixtures/history-instance.ts', import.meta.url))

interface Child { process: ChildProcess, url: string }

/** An instance in its own process (the loaders of this one: it runs TypeScript). */
async function startInstance (t: Test, redisUrl: string, prefix: string): Promise<Child> {
  const child = spawn(process.execPath, [...process.execArgv, script], {
    env: { ...process.env, REDIS_URL: redisUrl, CHANNEL_PREFIX: prefix },
    stdio: ['pipe', 'pipe', 'inherit'] // stdin: the child ends when this process does
  })
  t.teardown(() => { child.kill('SIGKILL') })
  let output = ''
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the instance exited with ${code}: ${output}`)))
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening (\d+)/.exec(output)
      if (match !== null) resolve(Number(match[1]))
    })
  })
  child.removeAllListeners('exit')
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
  const prefix = `fws-failover-${randomBytes(4).toString('hex')}:`
  const [a, b] = [await startInstance(t, machineRedis, prefix), await startInstance(t, machineRedis, prefix)]
  const { app: publisher } = await publisherApp(t, machineRedis, prefix)
  const clients = await clientsOn(a, b)
  t.teardown(() => { for (const client of clients) client.close() })
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
  const prefix = `fws-failover-${randomBytes(4).toString('hex')}:`
  const [a, b] = [await startInstance(t, machineRedis, prefix), await startInstance(t, machineRedis, prefix)]
  const { app: publisher } = await publisherApp(t, machineRedis, prefix)
  const clients = await clientsOn(a, b)
  t.teardown(() => { for (const client of clients) client.close() })
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
  const [a, b] = [await startInstance(t, redis.url, 'fws:'), await startInstance(t, redis.url, 'fws:')]
  const { app: publisher, adapter: publisherAdapter } = await publisherApp(t, redis.url, 'fws:')
  const clients = await clientsOn(a, b)
  t.teardown(() => { for (const client of clients) client.close() })
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
  const [a, b] = [await startInstance(t, redis.url, 'fws:'), await startInstance(t, redis.url, 'fws:')]
  const { app: publisher } = await publisherApp(t, redis.url, 'fws:')
  const clients = await clientsOn(a, b)
  t.teardown(() => { for (const client of clients) client.close() })
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
