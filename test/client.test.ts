/**
 * `fastify-ws-handlers/client` in Node (with ws's WebSocket): it follows a topic with history,
 * is drained off one instance (1012), comes back on the other since its last position, and
 * misses nothing; `send` while not open says so; `close()` is for good.
 */
import { install } from '@sinonjs/fake-timers'
import t from 'tap'
import WebSocket from 'ws'
import fc from 'fast-check'
import { formatPosition, parsePosition, resumingSocket, type WebSocketConstructor } from '../lib/client.js'
import { InProcessBus, defineHandler, inProcessAdapter, json, type TopicEvent } from '../lib/index.js'
import { buildApp, listen, until } from './helpers.js'
import { feed, range, sinceOf } from './followers.js'

/** The feed as JSON with `pos`, as the example pages get it. */
const route = defineHandler<undefined, TopicEvent<string>>({
  websocketInit: (_state, ctx) => { ctx.subscribe(feed, { since: sinceOf(ctx.request.query) }) },
  info: (event) => ({ reply: json({ kind: event.kind, offset: event.position.offset, pos: `${event.position.epoch}:${event.position.offset}` }) }),
  handle: (frame) => frame.type === 'text' ? { reply: json({ echo: frame.data }) } : undefined
})

t.test('drained off one instance, it comes back on the other since its last position: every publication once', async (t) => {
  const bus = new InProcessBus()
  const instances = []
  for (let i = 0; i < 2; i++) {
    const { app } = await buildApp(t, { adapter: inProcessAdapter({ bus }), history: { feed: { size: 1000 } } })
    app.ws('/feed', route)
    instances.push({ app, url: `${await listen(app)}/feed` })
  }
  const [a, b] = instances as [typeof instances[0], typeof instances[0]]
  const offsets: number[] = []
  const statuses: string[] = []
  let connects = 0
  const client = resumingSocket<{ kind: string, offset: number, echo?: string }>({
    url: (since) => `${connects++ === 0 ? a.url : b.url}${since === '' ? '' : `?since=${since}`}`,
    onMessage: (message) => { if (message.kind === 'publication') offsets.push(message.offset) },
    onStatus: (status, code) => { statuses.push(code === undefined ? status : `${status}:${code}`) },
    backoff: { initialMs: 20 },
    WebSocket: WebSocket as unknown as WebSocketConstructor
  })
  await until(() => a.app.wsConnections.subscriberCount(feed) === 1, 'following on A')
  for (let i = 1; i <= 5; i++) a.app.wsConnections.publish(feed, `m${i}`)
  await until(() => offsets.length === 5, 'the first five')
  t.match(client.since, /:5$/)
  await a.app.wsConnections.drain()
  for (let i = 6; i <= 10; i++) b.app.wsConnections.publish(feed, `m${i}`) // while it comes back
  await until(() => b.app.wsConnections.subscriberCount(feed) === 1, 'following on B')
  for (let i = 11; i <= 12; i++) b.app.wsConnections.publish(feed, `m${i}`)
  await until(() => offsets.length === 12, 'all twelve')
  t.same(offsets, range(1, 12), 'every one once, in order')
  t.same(statuses, ['online', 'reconnecting:1012', 'online'])
  t.equal(client.send('hi'), true)
  client.close()
  t.equal(client.send('after'), false, 'not open: nothing sent')
  await until(() => b.app.wsConnections.size === 0, 'closed for good')
  t.equal(connects, 2, 'no reconnect after close()')
})

t.test('without a WebSocket it says what to do; binary frames are not messages; its own parse and position', async (t) => {
  const saved = (globalThis as { WebSocket?: unknown }).WebSocket
  delete (globalThis as { WebSocket?: unknown }).WebSocket
  t.teardown(() => { if (saved !== undefined) (globalThis as { WebSocket?: unknown }).WebSocket = saved })
  t.throws(() => resumingSocket({ url: () => 'ws://127.0.0.1:1/', onMessage: () => {} }), { name: 'TypeError', message: /pass options.WebSocket/ })
  const { app } = await buildApp(t)
  app.ws('/mixed', { websocketInit: () => ({ reply: [{ type: 'binary', data: Buffer.from([1]) }, { type: 'text', data: 'p=7' }] }) })
  const base = await listen(app)
  const seen: string[] = []
  ;(globalThis as { WebSocket?: unknown }).WebSocket = WebSocket
  let attempts = 0
  // The first attempt finds nothing listening (an error, then a close): it tries again.
  const client = resumingSocket<string>({ url: () => attempts++ === 0 ? 'ws://127.0.0.1:1/' : `${base}/mixed`, backoff: { initialMs: 10 }, onMessage: (message) => { seen.push(message) }, parse: (data) => data, positionOf: (message) => message.slice(2) })
  await until(() => seen.length === 1, 'the text frame')
  t.same(seen, ['p=7'])
  t.equal(client.since, '7')
  t.equal(attempts, 2)
  client.close()
})

t.test('the defaults: JSON messages, their `pos`, the global WebSocket', async (t) => {
  const saved = (globalThis as { WebSocket?: unknown }).WebSocket
  ;(globalThis as { WebSocket?: unknown }).WebSocket = WebSocket
  t.teardown(() => { (globalThis as { WebSocket?: unknown }).WebSocket = saved })
  const { app } = await buildApp(t)
  app.ws('/json', { websocketInit: () => ({ reply: [json(null), json({ pos: 'e:1' }), json({ other: true })] }) })
  const base = await listen(app)
  const seen: unknown[] = []
  const client = resumingSocket({ url: () => `${base}/json`, onMessage: (message) => { seen.push(message) } })
  await until(() => seen.length === 3, 'three messages')
  t.same(seen, [null, { pos: 'e:1' }, { other: true }])
  t.equal(client.since, 'e:1', 'the last position a message carried')
  client.close()
})

t.test('a text frame that is not JSON is skipped and told, never thrown out of ws\'s listener; backoff past a timer\'s limit is refused', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/garbage', { websocketInit: () => ({ reply: [{ type: 'text', data: 'not json {' }, json({ pos: 'e:2' })] }) })
  const base = await listen(app)
  const seen: unknown[] = []
  const refused: string[] = []
  const uncaught: unknown[] = []
  const onUncaught = (error: unknown): void => { uncaught.push(error) }
  process.on('uncaughtException', onUncaught)
  t.teardown(() => process.off('uncaughtException', onUncaught))
  const client = resumingSocket({
    url: () => `${base}/garbage`,
    onMessage: (message) => { seen.push(message) },
    onParseError: (error, data) => { refused.push(`${(error as Error).name}: ${data}`) },
    WebSocket // ws's constructor fits without a cast
  })
  await until(() => seen.length === 1, 'the JSON message after the bad one')
  t.same(seen, [{ pos: 'e:2' }])
  t.same(refused, ['SyntaxError: not json {'])
  t.equal(client.since, 'e:2')
  t.same(uncaught, [])
  client.close()
  const quiet = resumingSocket({ url: () => `${base}/garbage`, onMessage: (message) => { seen.push(message) }, WebSocket })
  await until(() => seen.length === 2, 'without onParseError too')
  quiet.close()
  for (const backoff of [{ maxMs: 2 ** 31 }, { initialMs: -1 }, { initialMs: Number.NaN }]) {
    t.throws(() => resumingSocket({ url: () => `${base}/garbage`, onMessage: () => {}, backoff, WebSocket }), { name: 'RangeError', message: /2147483647/ })
  }
})

t.test('backoff: doubles while attempts fail, starts over once one opened; close() says 1000 and stops for good', async (t) => {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => clock.uninstall())
  const random = Math.random
  Math.random = () => 0.999 // the longest wait the jitter allows
  t.teardown(() => { Math.random = random })
  const sockets: FakeSocket[] = []
  class FakeSocket {
    readyState = 0
    closedWith: number | undefined
    onopen: ((event: never) => void) | null = null
    onmessage: ((event: { data: unknown }) => void) | null = null
    onerror: ((event: never) => void) | null = null
    onclose: ((event: { code: number }) => void) | null = null
    constructor (readonly url: string) { sockets.push(this) }
    send (): void {}
    close (code?: number): void { this.closedWith = code }
    open (): void { this.readyState = 1; this.onopen?.(undefined as never) }
    drop (): void { this.readyState = 3; this.onclose?.({ code: 1006 }) }
  }
  const client = resumingSocket({ url: () => 'ws://example/', onMessage: () => {}, WebSocket: FakeSocket as never })
  t.equal(sockets.length, 1)
  sockets[0]!.drop()
  clock.tick(450)
  t.equal(sockets.length, 1, 'the first retry waits up to initialMs (500)')
  clock.tick(50)
  t.equal(sockets.length, 2)
  sockets[1]!.drop()
  clock.tick(900)
  t.equal(sockets.length, 2, 'the second up to twice that')
  clock.tick(100)
  t.equal(sockets.length, 3)
  sockets[2]!.open()
  sockets[2]!.drop()
  clock.tick(500)
  t.equal(sockets.length, 4, 'after an open, the backoff starts over')
  client.close()
  t.equal(sockets[3]!.closedWith, 1000, 'closed with 1000')
  sockets[3]!.drop()
  clock.tick(60_000)
  t.equal(sockets.length, 4, 'no reconnect after close()')
})

t.test('positions as text: formatPosition and parsePosition round-trip every position, and parsePosition never throws', async (t) => {
  const { formatPosition: serverFormat, parsePosition: serverParse } = await import('../lib/index.js')
  t.equal(serverFormat, formatPosition, 'the server entry point exports the same functions')
  t.equal(serverParse, parsePosition)
  t.equal(formatPosition({ epoch: '9f2c', offset: 41 }), '9f2c:41')
  t.same(parsePosition('9f2c:41'), { epoch: '9f2c', offset: 41 })
  t.same(parsePosition(':0'), { epoch: '', offset: 0 }, 'an empty epoch is a valid since')
  for (const bad of [undefined, null, 41, '', '9f2c', '9f2c:', '9f2c:-1', '9f2c:1.5', '9f2c:1e3', '9f2c: 1', '9f2c:9007199254740992', 'x'.repeat(101)]) {
    t.equal(parsePosition(bad), undefined, `${JSON.stringify(bad)} is not a position`)
  }
  fc.assert(fc.property(fc.string({ maxLength: 64 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (epoch, offset) => {
    const text = formatPosition({ epoch, offset })
    return text.length > 100 || JSON.stringify(parsePosition(text)) === JSON.stringify({ epoch, offset })
  }), { seed: 26, numRuns: 500 })
  fc.assert(fc.property(fc.anything(), (value) => { parsePosition(value); return true }), { seed: 26, numRuns: 500 })
})
