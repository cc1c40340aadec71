/**
 * Topic history figures (part of `npm run bench`, also `node dist/bench/history.js`):
 * - publish with and without history: CPU per publication, in process and on Redis;
 * - recovery of 1,000 and 10,000 missed publications: until the client has the last one;
 * - memory per history entry, in process (heap) and in Redis (MEMORY USAGE);
 * - a drain of 10,000 connections: how long, and the reconnect rate the other instance sees.
 * Redis figures use REDIS_URL (else 127.0.0.1:6379) with a prefix of the run's own, deleted after.
 */
import { fork } from 'node:child_process'
import { once } from 'node:events'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import wsHandlers, { InProcessBus, defineHandler, inProcessAdapter, text, type Publication, type PubSubAdapter } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'
import { wsClient } from '../lib/testing.js'

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = `fws-bench-history-${process.pid}:`
const fmt = (n: number, digits = 2): string => n.toLocaleString('en-US', { maximumFractionDigits: digits })
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const tick = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

type Where = 'in process' | 'Redis'
const adapterFor = (where: Where): PubSubAdapter => where === 'Redis' ? redisAdapter({ url: redisUrl, channelPrefix: prefix }) : inProcessAdapter({ bus: new InProcessBus() })

/** CPU µs per publication to a topic of 100 subscribers whose `info` does nothing. */
async function publishCost (where: Where, kept: boolean, count: number): Promise<number> {
  const app = Fastify()
  await app.register(wsHandlers, { adapter: adapterFor(where), history: { kept: { size: 10_000 } }, idleTimeout: 0, pingInterval: 0, mailboxLimit: 100_000 })
  const seen = { infos: 0, subscribed: 0 }
  const topic = kept ? 'kept' : 'plain'
  app.ws('/', defineHandler<undefined, unknown>({
    websocketInit: (_state, ctx) => { kept ? ctx.subscribe(topic, {}) : ctx.subscribe(topic) },
    info: (message) => {
      if (!kept || (message as Publication).kind === 'publication') seen.infos++
      else seen.subscribed++
    }
  }))
  await app.ready()
  const clients = await Promise.all(Array.from({ length: 100 }, async () => await wsClient(app, '/')))
  while (app.wsConnections.subscriberCount(topic) < 100) await tick()
  if (kept) {
    while (seen.subscribed < 100) await tick() // every follower is live
    await app.wsConnections.publishConfirmed(topic, 'warm') // the script is loaded
    while (seen.infos < 100) await tick()
  }
  seen.infos = 0
  const cpu = process.cpuUsage()
  for (let sent = 0; sent < count; sent += 100) {
    for (let i = 0; i < 100; i++) app.wsConnections.publish(topic, { n: sent + i, text: 'hello world' })
    await tick()
  }
  const expected = count * 100
  while (seen.infos < expected) await tick()
  const used = process.cpuUsage(cpu)
  for (const client of clients) client.close()
  await app.close()
  return (used.user + used.system) / count
}

/** ms from a client's connect, `missed` publications behind, until it has the last of them (a real socket, this process). */
async function recovery (where: Where, missed: number): Promise<number> {
  const app = Fastify()
  await app.register(wsHandlers, { adapter: adapterFor(where), history: { [`recover-${missed}`]: { size: missed } }, idleTimeout: 0, pingInterval: 0 })
  const topic = `recover-${missed}`
  app.ws('/', defineHandler<undefined, unknown>({
    websocketInit: (_state, ctx) => {
      const { epoch, since } = ctx.request.query as { epoch: string, since: string }
      ctx.subscribe(topic, { since: { epoch, offset: Number(since) } })
    },
    info: (event) => (event as Publication).kind === 'publication' ? { reply: text((event as Publication<string>).message) } : undefined
  }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const payload = JSON.stringify({ text: 'x'.repeat(50) })
  for (let i = 1; i < missed; i++) app.wsConnections.publish(topic, payload)
  const { epoch, offset } = await app.wsConnections.publishConfirmed(topic, payload)
  const started = performance.now()
  // Since where it was `missed` publications ago (on Redis, an earlier round's are there too).
  const ws = new WebSocket(`ws://127.0.0.1:${(app.server.address() as { port: number }).port}/?epoch=${epoch}&since=${offset - missed}`)
  let received = 0
  await new Promise<void>((resolve) => ws.on('message', () => { if (++received === missed) resolve() }))
  const elapsed = performance.now() - started
  ws.terminate()
  await app.close()
  return elapsed
}

/** Bytes per kept entry of `{ n, text: 'hello world' }`: the heap of the in-process history, or the Redis stream's MEMORY USAGE. */
async function memoryPerEntry (where: Where, entries: number): Promise<number> {
  if (where === 'in process') {
    const bus = new InProcessBus()
    globalThis.gc?.()
    const before = process.memoryUsage().heapUsed
    for (let n = 0; n < entries; n++) bus.history.append('memory', { n, text: 'hello world' }, undefined, { size: entries })
    globalThis.gc?.()
    const used = process.memoryUsage().heapUsed - before
    if (bus.history.kept !== entries) throw new Error('the bench kept less than it appended')
    return used / entries
  }
  const app = Fastify()
  await app.register(wsHandlers, { adapter: adapterFor('Redis'), history: { memory: { size: entries } } })
  await app.ready()
  for (let n = 0; n < entries; n += 1000) {
    await Promise.all(Array.from({ length: 1000 }, async (_, i) => await app.wsConnections.publishConfirmed('memory', { n: n + i, text: 'hello world' })))
  }
  const admin = new Redis(redisUrl)
  const bytes = Number(await admin.memory('USAGE', `${prefix}h:{memory}`, 'SAMPLES', '0'))
  admin.disconnect()
  await app.close()
  return bytes / entries
}

interface DrainFigures { drainMs: number, peakPerSecond: number, reconnectedMs: number }

/**
 * 10,000 connections on instance A (this process), whose clients (another process) reconnect
 * to instance B (a third) as soon as A closes theirs; A is closed with its drain settings. B
 * counts the upgrades it accepts per 100 ms.
 */
async function drain (connections: number, settings: { batchSize: number, batchIntervalMs: number }): Promise<DrainFigures> {
  const peer = fork(new URL('./drain-peer.js', import.meta.url), ['peer'])
  const [{ port: peerPort }] = await once(peer, 'message') as [{ port: number }]
  const app = Fastify()
  await app.register(wsHandlers, { idleTimeout: 0, pingInterval: 0, closeTimeout: 30_000, drain: { ...settings, maxWindowMs: 20_000 } })
  app.ws('/', {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  const clients = fork(new URL('./drain-peer.js', import.meta.url), ['clients'])
  clients.send({ from: `ws://127.0.0.1:${(app.server.address() as { port: number }).port}/`, to: `ws://127.0.0.1:${peerPort}/`, connections })
  await once(clients, 'message') // all open on A
  const started = performance.now()
  await app.close()
  const drainMs = performance.now() - started
  await once(clients, 'message') // all back, on B
  const reconnectedMs = performance.now() - started
  peer.send('stats')
  const [{ perTenth }] = await once(peer, 'message') as [{ perTenth: number[] }]
  clients.kill()
  peer.kill()
  return { drainMs, reconnectedMs, peakPerSecond: Math.max(...perTenth) * 10 }
}

export async function runHistoryBench (quick: boolean, only?: string): Promise<void> {
  const rounds = quick ? 1 : 3
  const show = (table: string): boolean => only === undefined || table.includes(only)
  const redisAlive = await new Redis(redisUrl, { lazyConnect: true, retryStrategy: () => null }).connect().then(() => true, () => false)

  let table = 'Topic history: CPU per publication to 100 subscribers (their info does nothing)'
  if (show(table)) {
    console.log(`\n### ${table}\n`)
    console.log('| adapter | without history (µs) | with history, positioned subscribers (µs) | ratio | target |')
    console.log('|---|---|---|---|---|')
    const count = quick ? 2000 : 10_000
    for (const where of ['in process', 'Redis'] as const) {
      if (where === 'Redis' && !redisAlive) { console.log('| Redis | (Redis is not reachable) | | | |'); continue }
      const plain: number[] = []
      const kept: number[] = []
      for (let round = 0; round < rounds; round++) {
        plain.push(await publishCost(where, false, count))
        kept.push(await publishCost(where, true, count))
      }
      console.log(`| ${where} | ${fmt(median(plain), 1)} | ${fmt(median(kept), 1)} | ${fmt(median(kept) / median(plain))}× | ${where === 'Redis' ? '≤ 2×' : '≤ 1.3×'} |`)
    }
    console.log('\n(the publishing process\'s CPU, delivery to every subscriber included; Redis\'s own CPU is not counted)')
  }

  table = 'Topic history: recovery of missed publications (from the connect, since a position that many behind, until the client has the last one)'
  if (show(table)) {
    console.log(`\n### ${table}\n`)
    console.log('| adapter | 1,000 missed (ms) | 10,000 missed (ms) | target (10,000) |')
    console.log('|---|---|---|---|')
    for (const where of ['in process', 'Redis'] as const) {
      if (where === 'Redis' && !redisAlive) continue
      const figures: string[] = []
      for (const missed of [1000, 10_000]) {
        const times: number[] = []
        for (let round = 0; round < rounds; round++) times.push(await recovery(where, missed))
        figures.push(fmt(median(times), 0))
      }
      console.log(`| ${where} | ${figures[0]!} | ${figures[1]!} | < 200 ms |`)
    }
    console.log('\n(the client is a ws in the server\'s process: the time includes its handshake and its parsing of every frame)')
  }

  table = 'Topic history: memory per kept entry ({ n, text: "hello world" }, 100,000 entries)'
  if (show(table)) {
    console.log(`\n### ${table}\n`)
    console.log('| where | bytes per entry |')
    console.log('|---|---|')
    console.log(`| in process (heap, message object included) | ${fmt(await memoryPerEntry('in process', 100_000), 0)} |`)
    if (redisAlive) console.log(`| Redis stream (MEMORY USAGE) | ${fmt(await memoryPerEntry('Redis', quick ? 10_000 : 100_000), 0)} |`)
  }

  const connections = quick ? 2000 : 10_000
  table = `Drain: ${connections.toLocaleString('en-US')} connections closed with 1012, their clients reconnecting to another instance`
  if (show(table)) {
    console.log(`\n### ${table}\n`)
    console.log('| drain | app.close() took | all reconnected after | peak reconnect rate on the other instance |')
    console.log('|---|---|---|---|')
    for (const [label, settings] of [
      ['all at once (one batch)', { batchSize: connections, batchIntervalMs: 0 }],
      ['the defaults (batches of 500, 200 ms apart, jitter)', { batchSize: 500, batchIntervalMs: 200 }]
    ] as const) {
      const figures = await drain(connections, settings)
      console.log(`| ${label} | ${fmt(figures.drainMs, 0)} ms | ${fmt(figures.reconnectedMs, 0)} ms | ${fmt(figures.peakPerSecond, 0)}/s |`)
    }
  }
  if (redisAlive) {
    const admin = new Redis(redisUrl)
    const keys = await admin.keys(`${prefix}*`)
    if (keys.length !== 0) await admin.del(...keys)
    admin.disconnect()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await runHistoryBench(process.argv.includes('--quick'))
