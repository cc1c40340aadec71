/**
 * The Redis adapter on a Redis Cluster (three masters the test starts on its own ports): topics
 * travel on sharded pub/sub and their histories spread over the shards; publish, broadcast,
 * post by id and recovery across instances work as on one Redis.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import t from 'tap'
import wsHandlers, { defineHandler, text, type TopicEvent } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'
import { hashTagOf } from '../lib/registry/redis-history.js'
import { inject, until } from './helpers.js'
import { offsetsOf, range, show, sinceOf } from './followers.js'
import { ownCluster } from './redis-server.js'

const rooms = range(1, 12).map((n) => `room:${n}`)

t.test('on a 3-master cluster: histories spread over the shards; live, recovery, broadcast and posts cross instances', async (t) => {
  const { nodes } = await ownCluster(t)
  const admin = new Cluster(nodes)
  t.teardown(() => admin.disconnect())

  async function instance (): Promise<FastifyInstance> {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(wsHandlers, { adapter: redisAdapter({ cluster: nodes }), history: { 'room:*': { size: 100 } } })
    app.ws<undefined, TopicEvent<string> | string>('/room/:n', defineHandler<undefined, TopicEvent<string> | string>({
      websocketInit: (_state, ctx) => {
        const room = `room:${(ctx.request.params as { n: string }).n}`
        ctx.subscribe(room, { since: sinceOf(ctx.request.query) })
        ctx.subscribe(`plain:${room}`)
      },
      info: (event) => ({ reply: text(typeof event === 'string' ? event : show(event)) }),
      handle: (frame, _state, ctx) => frame.type === 'text' && frame.data === 'who' ? { reply: text(`id:${ctx.id}`) } : undefined
    }))
    await app.ready()
    return app
  }
  const a = await instance()
  const b = await instance()

  // A follower of every room on B; A publishes to each.
  const followers = await Promise.all(rooms.map(async (_room, i) => await inject(b, `/room/${i + 1}`)))
  await Promise.all(followers.map(async ({ seen }) => await seen.frameCount(1)))
  const positions = await Promise.all(rooms.map(async (room) => await a.wsConnections.publishConfirmed(room, `hello ${room}`)))
  for (const [i, { seen }] of followers.entries()) {
    await seen.frameCount(2)
    t.same(seen.frames, ['text:subscribed:0:0', `text:p:1:hello ${rooms[i]!}`], `${rooms[i]!} on B, from A, over its shard`)
  }

  // The histories are on more than one master.
  const masters = admin.nodes('master')
  const holding = await Promise.all(masters.map(async (node) => (await node.keys('fws:h:*')).length))
  t.equal(holding.reduce((sum, n) => sum + n, 0), rooms.length, 'one stream per room')
  t.ok(holding.filter((n) => n > 0).length >= 2, `spread over the shards: ${holding.join(', ')}`)
  t.ok(rooms.every((room) => hashTagOf(room) === room))

  // Recovery on A of what a client of B missed.
  followers[0]!.ws.terminate()
  for (let i = 2; i <= 5; i++) b.wsConnections.publish(rooms[0]!, `m${i}`)
  await b.wsConnections.publishConfirmed(rooms[0]!, 'm6')
  const back = await inject(a, `/room/1?since=${positions[0]!.epoch}:1`)
  await back.seen.frameCount(6)
  t.same(offsetsOf(back.seen.frames), range(2, 6))
  t.equal(back.seen.frames[5], 'text:subscribed:6:5')

  // Plain topics (publish, broadcast) and posts by id, on sharded channels too.
  a.wsConnections.publish(`plain:${rooms[1]!}`, 'plain from A')
  await until(() => followers[1]!.seen.frames.includes('text:plain from A'), 'a plain publication')
  a.wsConnections.broadcast(`plain:${rooms[1]!}`, text('broadcast from A'))
  await until(() => followers[1]!.seen.frames.includes('text:broadcast from A'), 'a broadcast')
  followers[1]!.ws.send('who')
  await until(() => followers[1]!.seen.frames.some((frame) => frame.startsWith('text:id:')), 'its id')
  const id = followers[1]!.seen.frames.find((frame) => frame.startsWith('text:id:'))!.slice('text:id:'.length)
  t.equal(a.wsConnections.post(id, 'posted from A'), true)
  await until(() => followers[1]!.seen.frames.includes('text:posted from A'), 'a post by id')
})
