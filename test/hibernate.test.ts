/**
 * hibernate releases the zlib contexts of an idle compressed connection into a pool, and the
 * next message (of any connection) takes them back: echoes stay correct with and without context
 * takeover, and no connection ever uses another one's zlib state.
 */
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import t from 'tap'
import type WebSocket from 'ws'
import { releaseIdleResources } from '../lib/actor/hibernate.js'
import type { FastifyInstance } from 'fastify'
import { close, ping, text, type OutFrame } from '../lib/index.js'
import { internalsOf } from '../lib/wire/ws-internals.js'
import { POOL_LIMIT, zlibPoolStats } from '../lib/wire/zlib-pool.js'
import { buildApp, connect, listen, sleep, until } from './helpers.js'

// ws reaches zlib through require(): the same module object, so creations can be counted.
const zlib = createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib')

interface ZlibCounts {
  deflaters: number
  inflaters: number
  /** Contexts created since the counting began and not closed yet. */
  live: () => number
}

function countZlib (t: { teardown(fn: () => void): void }): ZlibCounts {
  const created: Array<{ destroyed: boolean }> = []
  const counts: ZlibCounts = { deflaters: 0, inflaters: 0, live: () => created.filter((z) => !z.destroyed).length }
  const { createDeflateRaw, createInflateRaw } = zlib
  // Node defines these as non-writable but configurable properties.
  const replace = (name: 'createDeflateRaw' | 'createInflateRaw', value: unknown): void => {
    Object.defineProperty(zlib, name, { value, configurable: true, writable: false, enumerable: true })
  }
  replace('createDeflateRaw', (options: object) => {
    counts.deflaters++
    return created[created.push(createDeflateRaw(options)) - 1]
  })
  replace('createInflateRaw', (options: object) => {
    counts.inflaters++
    return created[created.push(createInflateRaw(options)) - 1]
  })
  t.teardown(() => {
    replace('createDeflateRaw', createDeflateRaw)
    replace('createInflateRaw', createInflateRaw)
  })
  return counts
}

/**
 * Pools are keyed by the server's zlib options objects: fresh ones give a test a pool of its own,
 * so that counts do not depend on what earlier tests left in the pool.
 */
const ownPool = () => ({ zlibDeflateOptions: {}, zlibInflateOptions: {} })

/** Every server-side connection of the app has released its contexts (the inflater too, unless `keepsInflater`). */
function allHibernated (app: FastifyInstance, keepsInflater = false): () => boolean {
  return () => [...app.websocketServer.clients].every((ws) => {
    const deflate = internalsOf(ws)._extensions['permessage-deflate']!
    return deflate._deflate === null && (keepsInflater || deflate._inflate === null)
  })
}

const hibernatingEcho = {
  handle: (frame: { type: string, data: unknown }) => frame.type === 'text' ? { reply: text(String(frame.data)), hibernate: true } : undefined
}

/** Echo `rounds` messages; after each, wait until only `live` zlib contexts remain (hibernated). */
async function echoRounds (url: string, clientNoContextTakeover: boolean, rounds: number, idle: () => boolean = () => true): Promise<string[]> {
  const { ws, seen } = await connect(url, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover } })
  const sent: string[] = []
  for (let i = 0; i < rounds; i++) {
    // Repeated content: with context takeover the second half refers back to the first.
    const message = `message ${i % 3} `.repeat(40)
    sent.push(`text:${message}`)
    ws.send(message)
    await seen.frameCount(i + 1)
    await until(idle) // the server has released what it can
  }
  ws.close()
  t.same(seen.frames, sent, 'every echo came back intact')
  return seen.frames
}

t.test('with client_no_context_takeover, hibernate releases both contexts; each wake takes them back from the pool', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  app.ws('/h', hibernatingEcho, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  const reused = zlibPoolStats.reused
  await echoRounds(`${base}/h`, true, 8, allHibernated(app))
  // client side: 1 deflater, 1 inflater; server side: one of each, built once, reset and reused
  t.equal(counts.deflaters, 1 + 1, 'the server deflater was built once')
  t.equal(counts.inflaters, 1 + 1, 'the server inflater was built once')
  t.equal(zlibPoolStats.reused - reused, 2 * 7, 'both came back from the pool for each of the 7 later messages')
})

t.test('with context takeover the inflater is kept (the window is needed) and only the deflater goes', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { threshold: 0, ...ownPool() } })
  const terminated: string[] = []
  app.ws('/h', { ...hibernatingEcho, terminate: (reason) => { terminated.push(reason.type) } }, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  await echoRounds(`${base}/h`, false, 8, allHibernated(app, true))
  t.equal(counts.deflaters, 1 + 1)
  t.equal(counts.inflaters, 1 + 1, 'the server inflater was never dropped')
  await sleep(20)
  t.same(terminated, ['remote'], 'no 1007 from a lost window')
})

t.test('without hibernate the contexts live as long as the connection', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  app.ws('/h', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  await echoRounds(`${base}/h`, true, 4)
  t.same([counts.deflaters, counts.inflaters, counts.live()], [2, 2, 4], 'one of each per side, all alive')
})

t.test('hibernate while messages keep coming waits for zlib and never breaks a message', async (t) => {
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  app.ws('/busy', hibernatingEcho, { compress: true })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/busy`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } })
  const sent = Array.from({ length: 300 }, (_, i) => `burst ${i} `.repeat(20))
  for (const message of sent) ws.send(message)
  t.same(await seen.frameCount(300), sent.map((m) => `text:${m}`))
  ws.close()
})

t.test('under load (zlib jobs queued behind ws\'s limit of 10) every connection still releases its contexts', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  app.ws('/many', hibernatingEcho, { compress: true })
  const base = await listen(app)
  const clients = await Promise.all(Array.from({ length: 40 }, async () =>
    await connect(`${base}/many`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } })))
  counts.deflaters = counts.inflaters = 0
  for (const round of [1, 2]) {
    for (const { ws } of clients) ws.send(`round ${round} `.repeat(30)) // all at once: the zlib queue fills
    await Promise.all(clients.map(async ({ seen }) => await seen.frameCount(round)))
    await until(allHibernated(app), `round ${round}: every server context released`)
    t.equal(counts.live(), 80 + 2 * POOL_LIMIT, 'alive: the clients\' 80 and a full pool of each kind; the rest were closed')
  }
  // client side: 40 of each, once; server side: 40 of each in round 1; in round 2 the pool served
  // at least its 16 (more as early connections gave theirs back), and ws built the rest
  t.ok(counts.deflaters - 80 <= 40 - POOL_LIMIT && counts.inflaters - 80 <= 40 - POOL_LIMIT, 'round 2 built at most what the pool could not serve')
  for (const { ws } of clients) ws.close()
})

t.test('the pool keeps at most POOL_LIMIT contexts of each kind; past it they are closed, and a wake that finds it empty gets new ones', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  app.ws('/p', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data), hibernate: frame.data !== 'stay' } : undefined }, { compress: true })
  const base = await listen(app)
  const clients = []
  for (let i = 0; i <= POOL_LIMIT; i++) {
    clients.push(await connect(`${base}/p`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } }))
  }
  counts.deflaters = counts.inflaters = 0
  const closedBefore = zlibPoolStats.closed
  // One at a time: POOL_LIMIT + 1 connections hibernate; the last one's contexts find the pool full.
  for (const { ws, seen } of clients) {
    ws.send('sleep')
    await seen.frameCount(1)
    await until(allHibernated(app), 'released')
  }
  t.equal(zlibPoolStats.closed - closedBefore, 2, 'one deflater and one inflater closed for want of room')
  t.equal(counts.live() - 2 * clients.length, 2 * POOL_LIMIT, 'the pool holds POOL_LIMIT of each kind')
  // They all wake and stay awake: POOL_LIMIT take from the pool, the last finds it empty.
  const before = [counts.deflaters, counts.inflaters]
  for (const { ws, seen } of clients) {
    ws.send('stay')
    await seen.frameCount(2)
  }
  t.same([counts.deflaters - before[0]!, counts.inflaters - before[1]!], [1, 1], 'ws built one pair, for the last')
  for (const { ws } of clients) ws.close()
})

t.test('pooled contexts never carry one connection\'s zlib state to another: many connections interleaved, every byte checked', async (t) => {
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  // Two size limits: an inflater that still answered to its former owner would apply the wrong one.
  app.ws('/small', hibernatingEcho, { compress: true, maxFrameSize: 600 })
  app.ws('/large', hibernatingEcho, { compress: true, maxFrameSize: 100_000 })
  const base = await listen(app)
  const reused = zlibPoolStats.reused
  // The server's deflater keeps context takeover (the client's inflater keeps its window): a reused
  // deflater that was not reset would refer to another connection's text, and the echo would break.
  // A third of the clients ask for 1 KiB windows: a 32 KiB deflater handed to one of them would
  // refer 2 KiB back (the repeated random block), which its inflater cannot follow.
  const run = async (i: number): Promise<void> => {
    const route = i % 2 === 0 ? 'small' : 'large'
    const smallWindow = i % 3 === 2 ? { serverMaxWindowBits: 10, clientMaxWindowBits: 10 } : {}
    const { ws, seen } = await connect(`${base}/${route}`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true, ...smallWindow } })
    const sent: string[] = []
    for (let n = 0; n < 12; n++) {
      const block = randomBytes(1536).toString('base64')
      const message = route === 'small'
        ? `c${i}m${n} `.repeat(40 + n)
        : `${i}:${n}:${block}${block}`.repeat(1 + n % 3) // several KB, over the small route's limit
      sent.push(`text:${message}`)
      ws.send(message)
      await seen.frameCount(n + 1)
    }
    t.same(seen.frames, sent, `${route} connection ${i}: every echo intact`)
    ws.close()
    t.equal((await seen.closed).code, 1005, `${route} connection ${i}: closed by the client, not by a size or inflate error`)
  }
  await Promise.all(Array.from({ length: 24 }, async (_, i) => await run(i)))
  t.ok(zlibPoolStats.reused - reused >= 24 * 11, 'the messages after the first ran on pooled contexts')
})

t.test('hibernate releases whatever the reply: several frames, no data frame, or a close first', async (t) => {
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0, ...ownPool() } })
  const replies: Record<string, OutFrame[]> = {
    several: [text('one'), text('two'), ping()],
    'no data': [ping('p')],
    'close first': [close(4000, 'bye'), text('never sent')]
  }
  app.ws('/r', { handle: (frame) => frame.type === 'text' ? { reply: replies[frame.data], hibernate: true } : undefined }, { compress: true })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/r`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } })
  ws.send('several')
  t.same(await seen.frameCount(2), ['text:one', 'text:two'])
  await until(allHibernated(app), 'released after two compressed frames')
  ws.send('no data')
  await once(ws, 'ping')
  await until(allHibernated(app), 'released after a ping only')
  ws.send('close first')
  t.same(await seen.closed, { code: 4000, reason: 'bye' })
  t.same(seen.frames, ['text:one', 'text:two'], 'nothing after the close frame')
})

t.test('hibernate on an uncompressed connection is accepted and changes nothing', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/plain', hibernatingEcho)
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/plain`)
  ws.send('a')
  ws.send('b')
  t.same(await seen.frameCount(2), ['text:a', 'text:b'])
  ws.close()
})

t.test('the release guards, one by one (ws 8.23 internals)', async (t) => {
  function fakeWs ({ sender = 0, queued = 0, receiver = 0, fragmented = 0, takeover = false, compressed = true } = {}) {
    const closed: string[] = []
    // Released: closed, or reset for the pool (a fake inflater has no owner slot, so it is closed).
    const context = (kind: string) => ({ close: () => closed.push(kind), reset: () => closed.push(kind) })
    const extension = {
      _deflate: context('deflate') as ReturnType<typeof context> | null,
      _inflate: context('inflate') as ReturnType<typeof context> | null,
      _options: {},
      params: takeover ? {} : { client_no_context_takeover: true }
    }
    const ws = {
      _extensions: compressed ? { 'permessage-deflate': extension } : {},
      _sender: { _state: sender, _queue: new Array(queued).fill(null) },
      _receiver: { _state: receiver, _fragmented: fragmented }
    } as unknown as WebSocket
    return { ws, closed, extension }
  }
  t.ok(releaseIdleResources(fakeWs({ compressed: false }).ws), 'nothing to release without compression')
  const idle = fakeWs()
  t.ok(releaseIdleResources(idle.ws))
  t.same(idle.closed, ['deflate', 'inflate'], 'both contexts go when idle without client context takeover')
  t.same([idle.extension._deflate, idle.extension._inflate], [null, null], 'ws takes or rebuilds them on the next message')
  t.ok(releaseIdleResources(idle.ws), 'releasing twice is harmless')
  const takeover = fakeWs({ takeover: true })
  t.ok(releaseIdleResources(takeover.ws))
  t.same(takeover.closed, ['deflate'], 'with context takeover the inflater stays')
  for (const [busy, label] of [
    [{ sender: 1 }, 'the sender is deflating'],
    [{ queued: 1 }, 'a message waits in the sender queue'],
    [{ receiver: 5 }, 'the receiver is inflating'],
    [{ fragmented: 1 }, 'a fragmented message is half received']
  ] as const) {
    const case_ = fakeWs(busy)
    t.notOk(releaseIdleResources(case_.ws), `not yet while ${label}`)
    t.same(case_.closed, [], `nothing was closed while ${label}`)
  }
})
