/**
 * The Redis adapter on a Redis Cluster the test starts, when the cluster changes under it: a
 * publisher whose connection to a shard is still cold, a slot moved to another master, a shard's
 * subscriber connection cut, a master down and back (twice). Subscribers keep receiving, in the
 * order of each publisher, followers catch up on what they missed (never a silent stall), and
 * each outage is logged, seen by `adapter.connected`, and its end logged too.
 */
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import wsHandlers, { defineHandler, text, type TopicEvent } from '../lib/index.js'
import { redisAdapter, type RedisPubSubAdapter } from '../lib/redis.js'
import { hashTagOf } from '../lib/registry/redis-history.js'
import { inject, until } from './helpers.js'
import { offsetsOf, range, show, sinceOf } from './followers.js'
import { ownCluster, type OwnCluster } from './redis-server.js'

t.setTimeout(240_000) // clusters of the test's own, failovers

interface Instance {
  app: FastifyInstance
  adapter: RedisPubSubAdapter
  /** Log lines at warn and above. */
  logs: Array<Record<string, unknown> & { msg: string, level: number }>
}

/** An instance with a route that follows `room:<n>` (with `?since=`) and listens to `plain:<n>`. */
async function instance (t: Test, cluster: OwnCluster): Promise<Instance> {
  const logs: Instance['logs'] = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      logs.push(JSON.parse(chunk.toString()))
      done()
    }
  })
  const app = Fastify({ logger: { level: 'warn', stream } })
  t.teardown(() => app.close())
  const adapter = redisAdapter({ cluster: cluster.nodes })
  await app.register(wsHandlers, { adapter, history: { 'room:*': { size: 100 } } })
  app.ws<undefined, TopicEvent<string> | string>('/room/:n', defineHandler<undefined, TopicEvent<string> | string>({
    websocketInit: (_state, ctx) => {
      const n = (ctx.request.params as { n: string }).n
      ctx.subscribe(`room:${n}`, { since: sinceOf(ctx.request.query) })
      ctx.subscribe(`plain:${n}`)
    },
    info: (event) => ({ reply: text(typeof event === 'string' ? event : show(event)) })
  }))
  await app.ready()
  return { app, adapter, logs }
}

/** A publication kept in `topic`'s history that no subscriber heard: what a subscriber misses while its shard connection is away. */
async function keptUnheard (cluster: OwnCluster, topic: string, message: string): Promise<number> {
  const tag = hashTagOf(topic)
  const port = await cluster.ownerOf(`fws:h:{${tag}}`)
  const offset = Number(await cluster.call(port, 'HINCRBY', `fws:m:{${tag}}`, 'offset', 1))
  await cluster.call(port, 'XADD', `fws:h:{${tag}}`, `${offset}-0`, 't', Date.now(), 'd', JSON.stringify(message))
  return offset
}

const redisErrors = (logs: Instance['logs']): number => logs.filter((line) => (line.err as { code?: string } | undefined)?.code === 'FST_WS_REDIS').length
const reconnects = (logs: Instance['logs']): number => logs.filter((line) => line.msg === 'Redis adapter reconnected and resubscribed').length

t.test('a publisher whose connections to the masters are cold keeps its order per topic', async (t) => {
  const cluster = await ownCluster(t)
  const a = await instance(t, cluster)
  const rooms = range(1, 9)
  const clients = await Promise.all(rooms.map(async (n) => await inject(a.app, `/room/${n}`)))
  await Promise.all(clients.map(async ({ seen }) => await seen.frameCount(1)))
  const b = await instance(t, cluster) // new: its publisher has not talked to most masters yet
  for (let i = 0; i < 60; i++) {
    for (const n of rooms) b.app.wsConnections.publish(`plain:${n}`, String(i))
  }
  for (const [i, { seen }] of clients.entries()) {
    await seen.frameCount(61)
    t.same(seen.frames.slice(1), range(0, 59).map((m) => `text:${m}`), `plain:${rooms[i]!} in the order published`)
  }
})

t.test('a slot moved to another master: the topic is subscribed there, and its followers catch up', async (t) => {
  const cluster = await ownCluster(t)
  const a = await instance(t, cluster)
  const b = await instance(t, cluster)
  const client = await inject(a.app, '/room/1')
  await client.seen.frameCount(1)
  await b.app.wsConnections.publishConfirmed('room:1', 'before')
  await client.seen.frameCount(2)

  const channel = `fws:t:{${hashTagOf('room:1')}}`
  const from = await cluster.ownerOf(channel)
  const to = cluster.nodes.find(({ port }) => port !== from)!.port
  await keptUnheard(cluster, 'room:1', 'while moving')
  await cluster.moveSlotOf(channel, to)

  await until(() => client.seen.frames.includes('text:p:2:while moving'), 'the follower catches up after the move')
  await b.app.wsConnections.publishConfirmed('room:1', 'after')
  await until(() => client.seen.frames.includes('text:p:3:after'), 'a publication live from the new master')
  b.app.wsConnections.broadcast('room:1', text('broadcast after'))
  await until(() => client.seen.frames.includes('text:broadcast after'), 'a broadcast live from the new master')
  t.same(offsetsOf(client.seen.frames), [1, 2, 3], 'every offset once, in order')
})

t.test("a shard's subscriber connection cut: followers read back what it missed; the loss and the return are logged", async (t) => {
  const cluster = await ownCluster(t)
  const a = await instance(t, cluster)
  const client = await inject(a.app, '/room/1')
  await client.seen.frameCount(1)
  await a.app.wsConnections.publishConfirmed('room:1', 'before')
  await client.seen.frameCount(2)

  const owner = await cluster.ownerOf(`fws:t:{${hashTagOf('room:1')}}`)
  await keptUnheard(cluster, 'room:1', 'while cut')
  await cluster.call(owner, 'CLIENT', 'KILL', 'TYPE', 'pubsub')
  await until(() => client.seen.frames.includes('text:p:2:while cut'), 'the follower reads back what it missed')
  await until(() => reconnects(a.logs) === 1, 'the return is logged')
  t.equal(redisErrors(a.logs), 1, 'the loss is logged once')
  await a.app.wsConnections.publishConfirmed('room:1', 'after')
  await until(() => client.seen.frames.includes('text:p:3:after'), 'live again')
  t.same(offsetsOf(client.seen.frames), [1, 2, 3])
})

t.test('a master down and back, then another: each outage logged and seen by `connected`, each return too', async (t) => {
  const cluster = await ownCluster(t)
  const a = await instance(t, cluster)
  const client = await inject(a.app, '/room/1')
  await client.seen.frameCount(1)
  t.equal(a.adapter.connected, true)

  const first = await cluster.ownerOf(`fws:t:{${hashTagOf('room:1')}}`)
  const second = cluster.nodes.find(({ port }) => port !== first)!.port
  for (const [outage, port] of [first, second].entries()) {
    await cluster.kill(port)
    await until(() => !a.adapter.connected, `outage ${outage + 1}: connected turns false`)
    await until(() => redisErrors(a.logs) === outage + 1, `outage ${outage + 1} is logged`)
    await cluster.restart(port)
    await until(() => a.adapter.connected, `outage ${outage + 1}: connected again`)
    await until(() => reconnects(a.logs) === outage + 1, `the return from outage ${outage + 1} is logged`)
  }
  // The restarted master kept no data: the room's history starts again, and its follower is told.
  await a.app.wsConnections.publishConfirmed('room:1', 'after')
  await until(() => client.seen.frames.some((frame) => frame.startsWith('text:resync:')), 'the follower is told its history was lost')
})

t.test('a master killed under load fails over to its replica: the follower sees each kept offset once, in order, or is told to resync; the outage and the return are logged', async (t) => {
  const cluster = await ownCluster(t, { replicas: 1 })
  const a = await instance(t, cluster)
  const b = await instance(t, cluster)
  const client = await inject(a.app, '/room/1')
  await client.seen.frameCount(1)
  const owner = await cluster.ownerOf(`fws:t:{${hashTagOf('room:1')}}`)
  let refused = 0
  for (let i = 1; i <= 200; i++) {
    if (i === 50) await cluster.kill(owner) // under load: publications keep coming while it fails over
    await b.app.wsConnections.publishConfirmed('room:1', `m${i}`).catch(() => { refused++ })
  }
  await until(() => a.adapter.connected && b.adapter.connected, 'both instances connected again, to the promoted replica', 30_000)
  t.ok(reconnects(a.logs) >= 1 && redisErrors(a.logs) >= 1, 'the outage and the return logged')
  let end: { offset: number } | undefined
  await until(async () => { end = await b.app.wsConnections.publishConfirmed('room:1', 'end').catch(() => undefined); return end !== undefined }, 'a publication kept after the failover')
  await until(() => client.seen.frames.some((frame) => frame === `text:p:${end!.offset}:end`), 'the follower has it')
  // Each step: the next offset, or a resync said first (a publication the master acknowledged
  // but its replica never got is lost with it: replication is asynchronous).
  let expected = 1
  let told = false
  for (const frame of client.seen.frames.slice(1)) {
    const [kind, offset] = [frame.split(':')[1], Number(frame.split(':')[2])]
    if (kind === 'resync') {
      told = true
      expected = offset + 1
    } else if (kind === 'p') {
      t.ok(offset === expected || told, `offset ${offset} where ${expected} was due, ${told ? 'after a resync' : 'with no resync'}`)
      expected = offset + 1
      told = false
    }
  }
  t.comment(`${refused} publications refused during the failover`)
})
