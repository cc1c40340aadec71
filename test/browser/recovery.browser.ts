/// <reference lib="dom" />
/**
 * Recovery in a real browser: two instances of the example app (processes of their own, on a
 * Redis of the test's own) behind a small TCP balancer. The instance a page's WebSocket is on is
 * killed (SIGKILL) while the other goes on publishing; the balancer holds new connections for a
 * moment, so that there is something to miss; the page says "reconnecting…", comes back
 * through the balancer to the survivor since its last position, and shows everything once, in
 * order. The chat: messages said meanwhile appear once, with "3 missed while away". The feed
 * (on the killed instance too): the counter never skipped nor repeated. Screenshots: test-output/recovery-*.png.
 */
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync } from 'node:fs'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { chromium, type Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { ownRedis } from '../redis-server.js'
import { startInstance as startProcess } from '../instances.js'

const executablePath = '/usr/bin/chromium'
const script = fileURLToPath(new URL('../fixtures/example-instance.ts', import.meta.url))

interface Backend { port: number, process: ChildProcess, alive: boolean }

/** An instance of the example app, in its own process, ticking every 50 ms. */
async function startInstance (t: Test, redisUrl: string): Promise<Backend> {
  return { ...await startProcess(t, script, { REDIS_URL: redisUrl, FEED_INTERVAL_MS: '50' }), alive: true }
}

/**
 * Round robin over the live backends; `hold` keeps new connections waiting (as a balancer does
 * while its health check notices a dead instance). Each connection's backend is recorded with
 * the start of its request, so the test can kill the one a WebSocket is on.
 */
class Balancer {
  readonly server: net.Server
  readonly routed: Array<{ backend: Backend, head: string }> = []
  hold = false
  /** Where new connections go while it is alive (to put two pages on two instances); else round robin. */
  prefer: Backend | undefined
  #next = 0
  #held: Array<() => void> = []

  constructor (readonly backends: Backend[]) {
    this.server = net.createServer((client) => {
      client.on('error', () => {})
      if (this.hold) this.#held.push(() => this.#route(client))
      else this.#route(client)
    })
  }

  release (): void {
    this.hold = false
    for (const route of this.#held.splice(0)) route()
  }

  #route (client: net.Socket): void {
    const alive = this.backends.filter((backend) => backend.alive)
    const backend = this.prefer?.alive === true ? this.prefer : alive[this.#next++ % alive.length]!
    const upstream = net.connect(backend.port, '127.0.0.1')
    upstream.on('error', () => client.destroy())
    client.once('data', (chunk: Buffer) => { this.routed.push({ backend, head: chunk.toString('latin1', 0, 4096) }) })
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  }

  /** The backend of the last WebSocket upgrade to `path`. */
  backendOf (path: string): Backend {
    return this.routed.findLast(({ head }) => head.startsWith(`GET ${path}`) && /upgrade: websocket/i.test(head))!.backend
  }
}

t.test('Chromium: pages come back through the balancer after their instance is killed, and show everything once', async (t) => {
  if (!existsSync(executablePath)) {
    t.fail(`no browser at ${executablePath}: apt-get install -y chromium`)
    return
  }
  mkdirSync('test-output', { recursive: true })
  const redis = await ownRedis(t)
  const backends = [await startInstance(t, redis.url), await startInstance(t, redis.url)]
  const balancer = new Balancer(backends)
  balancer.server.listen(0, '127.0.0.1')
  await once(balancer.server, 'listening')
  t.teardown(() => { balancer.server.close() })
  const base = `http://127.0.0.1:${(balancer.server.address() as net.AddressInfo).port}`
  const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
  t.teardown(async () => { await browser.close() })

  async function join (name: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 900, height: 560 } })
    await page.goto(`${base}/chat`)
    await page.fill('#name', name)
    await page.fill('#room', 'lobby')
    await page.click('#join button')
    await page.waitForSelector('#status.online')
    return page
  }
  const kill = async (backend: Backend): Promise<void> => {
    backend.alive = false
    backend.process.kill('SIGKILL')
    await once(backend.process, 'exit')
  }

  // The feed page and Ada on instance A, Grace on instance B.
  balancer.prefer = backends[0]
  const feed = await browser.newPage({ viewport: { width: 600, height: 420 } })
  await feed.goto(`${base}/feed`)
  await feed.waitForFunction(() => (window as unknown as { feedStats: { received: number } }).feedStats.received >= 10)
  t.equal(balancer.backendOf('/feed'), backends[0])
  const ada = await join('Ada')
  const adaBackend = balancer.backendOf('/chat')
  balancer.prefer = backends[1]
  const grace = await join('Grace')
  const graceBackend = balancer.backendOf('/chat')
  balancer.prefer = undefined
  t.not(adaBackend, graceBackend, 'Ada and Grace are on different instances')
  await grace.waitForFunction(() => document.querySelector('#members')!.textContent === 'AdaGrace')
  await ada.fill('#text', 'before')
  await ada.press('#text', 'Enter')
  await grace.waitForFunction(() => document.querySelector('#messages')!.textContent!.includes('Adabefore'))

  // Ada's instance dies; until the balancer lets her back in, Grace says three things.
  balancer.hold = true
  await kill(adaBackend)
  await ada.waitForSelector('#status.offline')
  t.match(await ada.textContent('#status'), /reconnecting…/, 'the page says it is reconnecting')
  for (const words of ['one', 'two', 'three']) {
    await grace.fill('#text', words)
    await grace.press('#text', 'Enter')
    await grace.waitForFunction((w) => document.querySelector('#messages')!.textContent!.includes(`Grace${w}`), words)
  }
  await ada.screenshot({ path: 'test-output/recovery-chat-away.png' })
  balancer.release()
  await ada.waitForFunction(() => document.querySelector('#messages')!.textContent!.includes('3 missed while away'))
  await ada.waitForSelector('#status.online')
  const said = await ada.$$eval('#messages li:not(.notice)', (items) => items.map((item) => item.querySelector('.who')!.nextSibling!.textContent))
  t.same(said, ['before', 'one', 'two', 'three'], 'Ada sees what was said while away, once, in order')
  await ada.screenshot({ path: 'test-output/recovery-chat-back.png' })

  // The feed page was on Ada's instance too: it came back as well (ticks went on on the other meanwhile).
  const stats = async (): Promise<{ received: number, skipped: number, repeated: number, reconnects: number, recovered: number, last: number }> =>
    await feed.evaluate(() => ({ ...(window as unknown as { feedStats: { received: number, skipped: number, repeated: number, reconnects: number, recovered: number, last: number } }).feedStats }))
  await feed.waitForSelector('#status.online')
  const afterKill = (await stats()).received
  await feed.waitForFunction((n) => (window as unknown as { feedStats: { received: number } }).feedStats.received >= n + 10, afterKill)
  const feedStats = await stats()
  t.equal(feedStats.skipped, 0, 'the counter never skipped')
  t.equal(feedStats.repeated, 0, 'nor repeated')
  t.equal(feedStats.reconnects, 1, 'it came back once')
  t.ok(feedStats.recovered > 0, `it recovered what it missed (${feedStats.recovered})`)
  await feed.screenshot({ path: 'test-output/recovery-feed.png' })
  t.equal(await feed.textContent('#skipped'), '0', 'the page shows it')
})
