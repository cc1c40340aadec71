/**
 * `npm run bench`: every scenario against a raw ws server, raw @fastify/websocket and this
 * plugin, in one run, alternating the order over rounds; the server and the load generator are
 * separate processes pinned to different cores. Prints medians (min–max) and ratios.
 * `npm run bench -- --quick` is a smoke run (one round, small sizes).
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import os from 'node:os'
import type { ChurnResult, EchoResult, RelayResult, Task } from './load.js'
/** Wall-clock ms, as the server and load processes stamp them. */
const now = (): number => performance.timeOrigin + performance.now()
import type { CpuFigures, Kind, MemoryFigures, Scenario } from './server.js'
import { runHistoryBench } from './history.js'

const quick = process.argv.includes('--quick')
/** `--only=<text>`: run the scenarios whose title contains it. */
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length)
/**
 * `--rounds=<n>`: rounds of every scenario. By default 7 for the echo scenarios (their ratios
 * move by 10 % between runs on a shared machine: a median of 7 holds better) and 3 for the others.
 */
const roundsArg = process.argv.find((arg) => arg.startsWith('--rounds='))?.slice('--rounds='.length)
const rounds = roundsArg !== undefined ? Number(roundsArg) : quick ? 1 : 3
const echoRounds = roundsArg !== undefined ? Number(roundsArg) : quick ? 1 : 7
const SERVER_CPU = 0
const LOAD_CPU = 1

interface Variant { label: string, kind: Kind, scenario: Scenario }
const kinds: Kind[] = ['ws', 'fastify-websocket', 'plugin']
const labels: Record<Kind, string> = { ws: 'raw ws', 'fastify-websocket': '@fastify/websocket', plugin: 'fastify-ws-handlers' }
const variantsOf = (scenario: Scenario): Variant[] => kinds.map((kind) => ({ label: labels[kind], kind, scenario }))

let canPin = true
function pin (child: ChildProcess, cpu: number): void {
  if (!canPin || os.availableParallelism() < 2) return
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(child.pid)], { stdio: 'ignore' })
  } catch {
    canPin = false
    console.log('(taskset is not available: processes are not pinned)')
  }
}

interface Server {
  url: string
  memory: () => Promise<MemoryFigures>
  cpu: () => Promise<number>
  /** Start one fan-out; resolves with the wall-clock time it started at. */
  fanout: () => Promise<number>
  /** Flood frames the server handled so far (the flood scenarios). */
  flooded: () => Promise<number>
  /** Pongs the server's handlers saw (the scale scenario). */
  pongs: () => Promise<number>
  /** app.close(), timed by the server. */
  close: () => Promise<number>
  stop: () => Promise<void>
}

async function startServer ({ kind, scenario }: Variant, cpu = SERVER_CPU): Promise<Server> {
  const child = fork(new URL('./server.js', import.meta.url), [kind, scenario], { execArgv: ['--expose-gc'] })
  pin(child, cpu)
  const [{ port }] = await once(child, 'message') as [{ port: number }]
  let nextId = 0
  async function ask<T> (cmd: 'memory' | 'cpu' | 'fanout' | 'flooded' | 'pongs' | 'close'): Promise<T> {
    const id = ++nextId
    child.send({ id, cmd })
    for (;;) {
      const [message] = await once(child, 'message') as [T & { id: number }]
      if (message.id === id) return message
    }
  }
  return {
    url: scenario === 'echo-h2' ? `h2://127.0.0.1:${port}/?client=browser` : scenario === 'echo-h2-node-client' ? `h2://127.0.0.1:${port}/` : `ws://127.0.0.1:${port}/`,
    memory: async () => await ask<MemoryFigures>('memory'),
    cpu: async () => (await ask<CpuFigures>('cpu')).cpuMicros,
    fanout: async () => (await ask<{ startedAt: number }>('fanout')).startedAt,
    flooded: async () => (await ask<{ flooded: number }>('flooded')).flooded,
    pongs: async () => (await ask<{ pongs: number }>('pongs')).pongs,
    close: async () => (await ask<{ closeMs: number }>('close')).closeMs,
    async stop () {
      child.kill()
      await once(child, 'exit')
    }
  }
}

function startLoad (task: Task): ChildProcess {
  const child = fork(new URL('./load.js', import.meta.url), [JSON.stringify(task)])
  pin(child, LOAD_CPU)
  return child
}

async function runLoad<R> (task: Task): Promise<R> {
  const child = startLoad(task)
  const [{ result }] = await once(child, 'message') as [{ result: R }]
  await once(child, 'exit')
  return result
}

// ---- results: table → metric → variant label → samples ---------------------

type Samples = Map<string, Map<string, number[]>>
const tables = new Map<string, { variants: Variant[], samples: Samples, better: Map<string, 'higher' | 'lower'> }>()

function record (table: string, variants: Variant[], metric: string, better: 'higher' | 'lower', label: string, value: number): void {
  if (!tables.has(table)) tables.set(table, { variants, samples: new Map(), better: new Map() })
  const entry = tables.get(table)!
  entry.better.set(metric, better)
  if (!entry.samples.has(metric)) entry.samples.set(metric, new Map())
  const byVariant = entry.samples.get(metric)!
  byVariant.set(label, [...(byVariant.get(label) ?? []), value])
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const fmt = (x: number): string => Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2)

/** Every variant's median (min–max); then the last variant (the plugin) ÷ each other one, nearest first. */
function print (): void {
  for (const [name, { variants, samples }] of tables) {
    const labels = variants.map((v) => v.label)
    const plugin = labels.at(-1)!
    const others = labels.slice(0, -1).reverse()
    console.log(`\n### ${name}\n`)
    console.log(`| metric | ${labels.join(' | ')} | ${others.map((other) => `${plugin} ÷ ${other}`).join(' | ')} |`)
    console.log(`|---|${labels.map(() => '---|').join('')}${others.map(() => '---|').join('')}`)
    for (const [metric, byVariant] of samples) {
      const cells = labels.map((label) => {
        const xs = byVariant.get(label) ?? []
        return xs.length === 0 ? '–' : `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`
      })
      const ratio = (x: string, y: string): string => {
        const xs = byVariant.get(x)
        const ys = byVariant.get(y)
        return xs === undefined || ys === undefined ? '–' : (median(xs) / median(ys)).toFixed(2)
      }
      console.log(`| ${metric} | ${cells.join(' | ')} | ${others.map((other) => ratio(plugin, other)).join(' | ')} |`)
    }
  }
}

/** Each round runs every variant once; the order rotates so no variant always goes first. */
async function rounded (variants: Variant[], run: (variant: Variant) => Promise<void>, count = rounds): Promise<void> {
  for (let round = 0; round < count; round++) {
    for (let i = 0; i < variants.length; i++) await run(variants[(i + round) % variants.length]!)
  }
}

const skipped = (table: string): boolean => only !== undefined && !table.includes(only)

// ---- scenarios ----------------------------------------------------------------

type EchoShape = Omit<Extract<Task, { type: 'echo' }>, 'type' | 'url'>

async function echoScenario (table: string, scenario: Scenario, shape: EchoShape): Promise<void> {
  await echoVariants(table, variantsOf(scenario), shape)
}

async function echoVariants (table: string, variants: Variant[], shape: EchoShape): Promise<void> {
  if (skipped(table)) return
  await rounded(variants, async (variant) => {
    const server = await startServer(variant)
    const cpuBefore = await server.cpu()
    const result = await runLoad<EchoResult>({ type: 'echo', url: server.url, ...shape })
    const cpuAfter = await server.cpu()
    await server.stop()
    // Server CPU over the whole load run (warm-up included) per message echoed in it.
    record(table, variants, 'server CPU per message (µs)', 'lower', variant.label, (cpuAfter - cpuBefore) / result.totalMessages)
    record(table, variants, 'messages/s', 'higher', variant.label, result.messagesPerSecond)
    record(table, variants, 'p50 round trip (ms)', 'lower', variant.label, result.p50Ms)
    record(table, variants, 'p99 round trip (ms)', 'lower', variant.label, result.p99Ms)
  }, echoRounds)
}

async function idleMemory (table: string, variants: Variant[], connections: number, compress: boolean): Promise<void> {
  if (skipped(table)) return
  await rounded(variants, async (variant) => {
    const server = await startServer(variant)
    const before = await server.memory()
    const load = startLoad({ type: 'open', url: server.url, connections, compress })
    const [{ openMs }] = await once(load, 'message') as [{ openMs: number }]
    const after = await server.memory()
    load.send('close')
    await once(load, 'exit')
    await server.stop()
    if (after.connections !== connections) throw new Error(`${variant.label}: ${after.connections} of ${connections} connections open`)
    record(table, variants, 'heap per connection (B)', 'lower', variant.label, (after.heapUsed - before.heapUsed) / connections)
    record(table, variants, 'heap + external per connection (B)', 'lower', variant.label,
      (after.heapUsed + after.external - before.heapUsed - before.external) / connections)
    record(table, variants, 'RSS per connection (B)', 'lower', variant.label, (after.rss - before.rss) / connections)
    record(table, variants, 'time to open them all (ms)', 'lower', variant.label, openMs)
  })
}

async function churnScenario (table: string, cycles: number): Promise<void> {
  if (skipped(table)) return
  const variants = variantsOf('echo')
  await rounded(variants, async (variant) => {
    const server = await startServer(variant)
    await runLoad<ChurnResult>({ type: 'churn', url: server.url, cycles: Math.ceil(cycles / 10), concurrency: 20 }) // warm-up
    const before = await server.memory()
    const result = await runLoad<ChurnResult>({ type: 'churn', url: server.url, cycles, concurrency: 20 })
    const after = await server.memory()
    // A leak grows with every cycle; warming up (code, caches) does not: a second pass tells them apart.
    await runLoad<ChurnResult>({ type: 'churn', url: server.url, cycles, concurrency: 20 })
    const afterSecond = await server.memory()
    await server.stop()
    record(table, variants, 'connect/close cycles per second', 'higher', variant.label, result.cyclesPerSecond)
    record(table, variants, 'heap after ÷ heap before', 'lower', variant.label, after.heapUsed / before.heapUsed)
    record(table, variants, 'heap after a second pass ÷ after the first', 'lower', variant.label, afterSecond.heapUsed / after.heapUsed)
  })
}

/**
 * One 1 KiB frame to every subscriber: `broadcast` (encoded once) and `publish` (each subscriber's
 * info replies with it, through the run queue) against a loop of ws.send
 * over the same sockets and raw @fastify/websocket's loop. Time until the last subscriber has
 * it (server's start to the load process's last arrival, wall clock), and server CPU.
 */
async function fanoutScenario (table: string, subscribers: number, fanouts: number): Promise<void> {
  if (skipped(table)) return
  const variants: Variant[] = [
    { label: 'plugin, ws.send loop', kind: 'plugin', scenario: 'fanout-loop' },
    { label: '@fastify/websocket loop', kind: 'fastify-websocket', scenario: 'fanout' },
    { label: 'plugin publish (each info replies)', kind: 'plugin', scenario: 'fanout-publish' },
    { label: 'plugin broadcast', kind: 'plugin', scenario: 'fanout' }
  ]
  await rounded(variants, async (variant) => {
    const server = await startServer(variant)
    const load = startLoad({ type: 'fanout', url: server.url, connections: subscribers })
    await once(load, 'message') // all open (and subscribed: websocketInit ran before the 101's data)
    for (let i = 0; i < fanouts; i++) {
      load.send('expect')
      await once(load, 'message')
      const cpuBefore = await server.cpu()
      const arrived = once(load, 'message') as Promise<[{ lastAt: number }]>
      const startedAt = await server.fanout()
      const [{ lastAt }] = await arrived
      const cpuAfter = await server.cpu()
      if (i === 0) continue // warm-up
      record(table, variants, 'time until the last subscriber has it (ms)', 'lower', variant.label, lastAt - startedAt)
      record(table, variants, 'server CPU per fan-out (ms)', 'lower', variant.label, (cpuAfter - cpuBefore) / 1000)
    }
    load.send('close')
    await once(load, 'exit')
    await server.stop()
  })
}

/** What an idle subscription costs: the same connections in 0, 1 and 10 topics each. */
async function topicMemory (table: string, connections: number): Promise<void> {
  if (skipped(table)) return
  await idleMemory(table, [
    { label: 'no topic', kind: 'plugin', scenario: 'echo' },
    { label: '1 topic each', kind: 'plugin', scenario: 'topics-1' },
    { label: '10 topics each', kind: 'plugin', scenario: 'topics-10' }
  ], connections, false)
  const heap = tables.get(table)!.samples.get('heap per connection (B)')!
  const none = median(heap.get('no topic')!)
  for (const [label, topics] of [['1 topic each', 1], ['10 topics each', 10]] as const) {
    record(table, tables.get(table)!.variants, 'heap per (connection, topic) (B)', 'lower', label, (median(heap.get(label)!) - none) / topics)
  }
}

/**
 * A neighbour's latency while another client floods: one paced echo connection (a message every
 * millisecond at most) alone, beside a raw-socket flood held by `rateLimit` (2,000 messages/s,
 * reading paused over it), and beside the same flood with no limit. The flooder's rate is what
 * the server handled.
 */
async function floodScenario (table: string, shape: EchoShape): Promise<void> {
  if (skipped(table)) return
  const variants: Variant[] = [
    { label: 'no flood', kind: 'plugin', scenario: 'flood-limited' },
    { label: 'flood, no limit', kind: 'plugin', scenario: 'flood-unlimited' },
    { label: 'flood, rateLimit 2,000/s', kind: 'plugin', scenario: 'flood-limited' }
  ]
  await rounded(variants, async (variant) => {
    const server = await startServer(variant)
    const flooder = variant.label === 'no flood' ? undefined : startLoad({ type: 'flood', url: server.url })
    if (flooder !== undefined) await once(flooder, 'message')
    const floodedBefore = await server.flooded()
    const startedAt = performance.now()
    const result = await runLoad<EchoResult>({ type: 'echo', url: server.url, ...shape })
    const floodRate = (await server.flooded() - floodedBefore) / ((performance.now() - startedAt) / 1000)
    const { heapUsed } = await server.memory() // while the flood goes on: nothing may pile up
    if (flooder !== undefined) {
      flooder.send('stop')
      await once(flooder, 'exit')
    }
    await server.stop()
    record(table, variants, 'neighbour p50 round trip (ms)', 'lower', variant.label, result.p50Ms)
    record(table, variants, 'neighbour p99 round trip (ms)', 'lower', variant.label, result.p99Ms)
    record(table, variants, 'neighbour messages/s', 'higher', variant.label, result.messagesPerSecond)
    record(table, variants, 'flood messages handled/s', 'lower', variant.label, floodRate)
    record(table, variants, 'server heap at the end (MB)', 'lower', variant.label, heapUsed / 1e6)
  })
}

/**
 * The scale run: `connections` idle connections on one server process with the default
 * heartbeats, from several 127.0.0.x source addresses (a source address has ≈ 28,000 ports), in
 * client processes of at most 9,000 each. Every connection is pinged after 30 s of silence and
 * must answer; then one broadcast must reach all; then app.close() closes all with 1001.
 */
async function scaleScenario (connections: number): Promise<void> {
  const table = `Scale: ${connections.toLocaleString('en-US')} idle connections, default heartbeats, one process`
  if (skipped(table)) return
  const server = await startServer({ label: 'plugin', kind: 'plugin', scenario: 'scale' })
  const before = await server.memory()
  const openedAt = performance.now()
  const perLoader = 9000
  const loaders = await Promise.all(Array.from({ length: Math.ceil(connections / perLoader) }, async (_, i) => {
    const count = Math.min(perLoader, connections - i * perLoader)
    const loader = startLoad({ type: 'scale', url: server.url, connections: count, localAddress: `127.0.0.${2 + i}` })
    await once(loader, 'message')
    return loader
  }))
  const openMs = performance.now() - openedAt
  const open = await server.memory()
  type Seen = { pings: number, messages: number, closes: Record<number, number> }
  const report = async (): Promise<Seen[]> => await Promise.all(loaders.map(async (loader) => {
    loader.send('report')
    return (await once(loader, 'message') as [Seen])[0]
  }))
  const total = (seen: Seen[], pick: (s: Seen) => number): number => seen.reduce((sum, s) => sum + pick(s), 0)
  // Pings come 30 s after each connection's last data; a connection that did not answer would
  // be closed at 60 s. Wait for every pong (at most 75 s after the last open).
  const cpuBefore = await server.cpu()
  const pingStarted = performance.now()
  while (await server.pongs() < connections && performance.now() - pingStarted < 75_000) await new Promise((resolve) => setTimeout(resolve, 1000))
  const pongs = await server.pongs()
  const heartbeatCpuMs = (await server.cpu() - cpuBefore) / 1000
  const pinged = await server.memory()
  const startedAt = await server.fanout()
  let seen = await report()
  while (total(seen, (s) => s.messages) < connections && now() - startedAt < 30_000) seen = await report()
  const broadcastMs = now() - startedAt
  const reached = total(seen, (s) => s.messages)
  const closeMs = await server.close()
  const closedBy = now()
  const closes = (): number => total(seen, (s) => Object.values(s.closes).reduce((a, b) => a + b, 0))
  do seen = await report()
  while (closes() < connections && now() - closedBy < 30_000)
  const closed1001 = total(seen, (s) => s.closes[1001] ?? 0)
  const otherCodes = [...new Set(seen.flatMap((s) => Object.keys(s.closes)))].filter((code) => code !== '1001')
  for (const loader of loaders) {
    loader.send('exit')
    await once(loader, 'exit')
  }
  await server.stop()
  const mb = (bytes: number): string => (bytes / 1e6).toFixed(0)
  console.log(`\n### ${table}\n`)
  console.log('| figure | value |')
  console.log('|---|---|')
  console.log(`| connections open (server) | ${open.connections.toLocaleString('en-US')} in ${(openMs / 1000).toFixed(1)} s (${loaders.length} client processes) |`)
  console.log(`| RSS with all open | ${mb(open.rss)} MB (${mb(open.rss - before.rss)} MB for the connections: ${((open.rss - before.rss) / connections).toFixed(0)} B each) |`)
  console.log(`| heap with all open | ${mb(open.heapUsed)} MB (${((open.heapUsed - before.heapUsed) / connections).toFixed(0)} B each) |`)
  console.log(`| connections that answered a ping (pongs seen by handle) | ${pongs.toLocaleString('en-US')} of ${connections.toLocaleString('en-US')}; server CPU meanwhile ${heartbeatCpuMs.toFixed(0)} ms over ${((performance.now() - pingStarted) / 1000).toFixed(0)} s |`)
  console.log(`| after the pings | ${pinged.connections.toLocaleString('en-US')} still open (none idle-closed), RSS ${mb(pinged.rss)} MB |`)
  console.log(`| one broadcast reached | ${reached.toLocaleString('en-US')} in ${broadcastMs.toFixed(0)} ms |`)
  console.log(`| app.close() | ${closeMs.toFixed(0)} ms; ${closed1001.toLocaleString('en-US')} clients saw 1001${otherCodes.length === 0 ? '' : ` (other codes: ${otherCodes.join(', ')})`} |`)
}

/**
 * Redis: text sent to instance A is broadcast to the topic (or published to a topic with
 * history, followed with positions); a subscriber on instance B times it.
 */
async function redisRelay (rate: number, durationMs: number): Promise<void> {
  const table = `Redis adapter: ${rate.toLocaleString('en-US')} messages/s published on instance A, delivered on instance B`
  if (skipped(table)) return
  console.log(`\n### ${table}\n`)
  console.log('| topic | sent | delivered | messages/s delivered | p50 delivery (ms) | p99 delivery (ms) |')
  console.log('|---|---|---|---|---|---|')
  for (const [label, scenario] of [['broadcast, no history', 'redis'], ['publish, with history (positions)', 'redis-history']] as const) {
    const results: RelayResult[] = []
    for (let round = 0; round < rounds; round++) {
      const a = await startServer({ label: 'A', kind: 'plugin', scenario })
      const b = await startServer({ label: 'B', kind: 'plugin', scenario }, LOAD_CPU) // one instance per core
      results.push(await runLoad<RelayResult>({ type: 'relay', publishUrl: a.url, subscribeUrl: b.url, rate, durationMs, warmupMs: 1000 }))
      await a.stop()
      await b.stop()
    }
    const m = (pick: (r: RelayResult) => number): string => fmt(median(results.map(pick)))
    console.log(`| ${label} | ${m((r) => r.sent)} | ${m((r) => r.delivered)} | ${m((r) => r.messagesPerSecond)} | ${m((r) => r.p50Ms)} | ${m((r) => r.p99Ms)} |`)
  }
  console.log('\n(through two WebSocket hops and Redis: client → A → Redis → B → client, medians over rounds)')
}

const started = Date.now()
console.log(`# fastify-ws-handlers benchmark\n\n${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ` +
  `Node ${process.version}, ${echoRounds} round(s) of the echo scenarios and ${rounds} of the others${quick ? ' (quick)' : ''}; medians (min–max)`)

const echoShape = { connections: 50, inFlight: 10, size: 64, binary: false, warmupMs: quick ? 300 : 1000, durationMs: quick ? 1000 : 3000 }
// A fourth server: raw @fastify/websocket that decodes the text and sends a string back, as the
// plugin's API does (frame.data is a string): the plugin's own overhead apart from its API's.
const [rawWs, rawFastifyWebsocket, plugin] = variantsOf('echo') as [Variant, Variant, Variant]
// The plugin with its default heartbeats too: every chunk received restarts the idle count.
await echoVariants('Echo, 64 B text, 50 connections × 10 in flight', [
  rawWs, rawFastifyWebsocket, { label: '@fastify/websocket decoding', kind: 'fastify-websocket', scenario: 'echo-decode' },
  { label: 'plugin, default heartbeats', kind: 'plugin', scenario: 'echo-heartbeat' }, plugin
], echoShape)
// Metrics: without an SDK nothing subscribes (the run above); with one, every frame is measured.
await echoVariants('Echo, 64 B text, 50 × 10: without and with an OpenTelemetry metrics SDK', [
  { ...plugin, label: 'no SDK' }, { label: 'metrics SDK registered', kind: 'plugin', scenario: 'echo-metrics' }
], echoShape)
await echoScenario('Echo, 1 connection × 1 in flight (latency floor)', 'echo', { ...echoShape, connections: 1, inFlight: 1 })
await echoScenario('Echo, 16 KiB binary, 50 connections × 10 in flight', 'echo', { ...echoShape, size: 16 * 1024, binary: true })
await echoScenario('Async handler (awaits a resolved promise per message), 64 B, 50 × 10', 'async-echo', echoShape)
// The plugin twice: heartbeats off (as the raw servers, which have none) and with the defaults
// (a ping after 30 s of silence, the idle timeout at 60 s), the figure DESIGN.md holds it to.
for (const connections of quick ? [1000] : [5000, 10_000]) {
  await idleMemory(`Idle memory, ${connections.toLocaleString('en-US')} open connections`, [
    ...variantsOf('echo').map((variant) => variant.kind === 'plugin' ? { ...variant, label: 'plugin, heartbeats off' } : variant),
    { label: 'plugin, default heartbeats', kind: 'plugin', scenario: 'echo-heartbeat' }
  ], connections, false)
}
const compressedVariants = (): Variant[] => [
  { label: labels.ws, kind: 'ws', scenario: 'compressed' },
  { label: 'plugin', kind: 'plugin', scenario: 'compressed' },
  { label: 'plugin + hibernate', kind: 'plugin', scenario: 'compressed-hibernate' }
]
const compressedConnections = quick ? 500 : 2000
const compressedTitle = `Idle memory, compressed (permessage-deflate), ${compressedConnections.toLocaleString('en-US')} connections after one 200 B message each way`
await idleMemory(compressedTitle, compressedVariants(), compressedConnections, true)
// The price of hibernate: with 5 ms of idle after each echo, every message finds both zlib
// contexts released and takes them back (from the pool, reset).
await echoVariants('Compressed echo, 200 B, 1 connection, 5 ms idle between messages: waking from hibernate every time',
  compressedVariants(), { ...echoShape, connections: 1, inFlight: 1, size: 200, compress: true, gapMs: 5 })
await churnScenario(`Churn, ${quick ? '1,000' : '10,000'} connect/close cycles (20 at a time)`, quick ? 1000 : 10_000)

await floodScenario('Rate limits: a paced neighbour\'s echo latency beside a raw-socket flood', { ...echoShape, connections: 1, inFlight: 1, gapMs: 1 })

const subscribers = quick ? 2000 : 10_000
await fanoutScenario(`Fan-out: one 1 KiB frame to ${subscribers.toLocaleString('en-US')} subscribers`, subscribers, quick ? 5 : 20)
await topicMemory(`Idle subscriptions, ${(quick ? 1000 : 5000).toLocaleString('en-US')} connections`, quick ? 1000 : 5000)

// WebSockets over HTTP/2 (cleartext, prior knowledge) against the same plugin over HTTP/1.1:
// every WebSocket of the load process on one h2 session, as a browser tab's.
const h1Variant: Variant = { label: 'plugin, HTTP/1.1', kind: 'plugin', scenario: 'echo' }
const h2Variant: Variant = { label: 'plugin, HTTP/2 (one session)', kind: 'plugin', scenario: 'echo-h2' }
await echoVariants('HTTP/2: echo, 64 B text, 50 × 10', [h1Variant, h2Variant], echoShape)
await idleMemory(`HTTP/2: ${(quick ? 500 : 1000).toLocaleString('en-US')} idle WebSockets, one session vs a TCP connection each`, [h1Variant, h2Variant], quick ? 500 : 1000, false)
// Large messages meet HTTP/2's flow control: the server's windows are the plugin's (route/h2.ts);
// the client's, a browser's (Chrome's 6 MiB per stream, 15 MiB per session) or Node's 64 KB.
await echoVariants('HTTP/2: echo, 1 MB binary, 1 × 1: flow-control windows', [
  h1Variant, h2Variant, { label: 'plugin, HTTP/2, a client with Node\'s default windows', kind: 'plugin', scenario: 'echo-h2-node-client' }
], { ...echoShape, connections: 1, inFlight: 1, size: 1_000_000, binary: true })

// `--scale=N` sets the scale run's size; by default as many as the process may hold (its
// open-file limit), at most 100,000.
const fileLimit = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim()) || 1024
const scaleArg = process.argv.find((arg) => arg.startsWith('--scale='))?.slice('--scale='.length)
const scale = scaleArg !== undefined ? Number(scaleArg) : Math.min(100_000, Math.floor((fileLimit - 500) / 1000) * 1000)
if (!quick) {
  if (scale < 100_000) console.log(`\n(the open-file limit here is ${fileLimit}: the scale run holds ${scale.toLocaleString('en-US')} connections, not 100,000)`)
  await scaleScenario(scale)
}

print()
await redisRelay(1000, quick ? 2000 : 5000)
// Topic history: publish cost, recovery, memory per entry, and a drain (bench/history.ts).
await runHistoryBench(quick, only)
console.log(`\n(${((Date.now() - started) / 1000).toFixed(0)} s)`)
