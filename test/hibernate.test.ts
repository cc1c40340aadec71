/**
 * hibernate releases the zlib contexts of an idle compressed connection and the next message
 * rebuilds them: echoes stay correct with and without context takeover.
 */
import { createRequire } from 'node:module'
import t from 'tap'
import type WebSocket from 'ws'
import { releaseIdleResources } from '../lib/hibernate.js'
import { text } from '../lib/index.js'
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

t.test('with client_no_context_takeover, hibernate releases both contexts; each message rebuilds them', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0 } })
  app.ws('/h', hibernatingEcho, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  await echoRounds(`${base}/h`, true, 8, () => counts.live() === 2) // the client's own two
  // client side: 1 deflater, 1 inflater; server side: one of each per message
  t.equal(counts.deflaters, 1 + 8, 'the server deflater was rebuilt for every reply')
  t.equal(counts.inflaters, 1 + 8, 'the server inflater was rebuilt for every message')
})

t.test('with context takeover the inflater is kept (the window is needed) and only the deflater goes', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { threshold: 0 } })
  const terminated: string[] = []
  app.ws('/h', { ...hibernatingEcho, terminate: (reason) => { terminated.push(reason.type) } }, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  await echoRounds(`${base}/h`, false, 8, () => counts.live() === 3) // the client's two, the server's inflater
  t.equal(counts.deflaters, 1 + 8)
  t.equal(counts.inflaters, 1 + 1, 'the server inflater was never dropped')
  await sleep(20)
  t.same(terminated, ['remote'], 'no 1007 from a lost window')
})

t.test('without hibernate the contexts live as long as the connection', async (t) => {
  const counts = countZlib(t)
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0 } })
  app.ws('/h', { handle: (frame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }, { compress: true })
  const base = await listen(app)
  counts.deflaters = counts.inflaters = 0
  await echoRounds(`${base}/h`, true, 4)
  t.same([counts.deflaters, counts.inflaters, counts.live()], [2, 2, 4], 'one of each per side, all alive')
})

t.test('hibernate while messages keep coming waits for zlib and never breaks a message', async (t) => {
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0 } })
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
  const { app } = await buildApp(t, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0 } })
  app.ws('/many', hibernatingEcho, { compress: true })
  const base = await listen(app)
  const clients = await Promise.all(Array.from({ length: 40 }, async () =>
    await connect(`${base}/many`, undefined, { perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } })))
  counts.deflaters = counts.inflaters = 0
  for (const round of [1, 2]) {
    for (const { ws } of clients) ws.send(`round ${round} `.repeat(30)) // all at once: the zlib queue fills
    await Promise.all(clients.map(async ({ seen }) => await seen.frameCount(round)))
    await until(() => counts.live() === 80) // the clients' 40 + 40; every server context released
  }
  // client side: 40 deflaters and 40 inflaters, once; server side: one of each per message
  t.equal(counts.deflaters, 40 + 80, 'every server deflater was released and rebuilt')
  t.equal(counts.inflaters, 40 + 80, 'every server inflater was released and rebuilt')
  for (const { ws } of clients) ws.close()
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
    const extension = {
      _deflate: { close: () => closed.push('deflate') } as { close: () => void } | null,
      _inflate: { close: () => closed.push('inflate') } as { close: () => void } | null,
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
  t.same([idle.extension._deflate, idle.extension._inflate], [null, null], 'ws rebuilds them on the next message')
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
