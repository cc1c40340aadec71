/// <reference lib="dom" />
/**
 * Chromium speaks WebSocket over HTTP/2 (RFC 8441) to the plugin: a page served over h2 opens
 * WebSockets that arrive as CONNECT streams on the page's own session. Echo, a subprotocol, a
 * 1 MB message, compression, hibernate, close codes and reasons both ways, a hook's refusal seen
 * as a failed connection, and app.close() → 1012, all over that one session.
 */
import { existsSync, readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { chromium } from 'playwright-core'
import t from 'tap'
import wsHandlers, { close, text } from '../../lib/index.js'

const executablePath = '/usr/bin/chromium'
const tls = { key: readFileSync(new URL('../fixtures/localhost-key.pem', import.meta.url)), cert: readFileSync(new URL('../fixtures/localhost-cert.pem', import.meta.url)) }

const page = `<!doctype html><meta charset="utf-8"><title>h2</title><script>
  // Each step resolves with what the page saw.
  window.open = (path, protocols) => new Promise((resolve) => {
    const ws = new WebSocket('wss://' + location.host + path, protocols)
    ws.binaryType = 'arraybuffer'
    const seen = { messages: [], protocol: '', extensions: '' }
    ws.onopen = () => { seen.protocol = ws.protocol; seen.extensions = ws.extensions; resolve({ ws, seen }) }
    ws.onmessage = (event) => seen.messages.push(typeof event.data === 'string' ? event.data : event.data.byteLength)
    ws.onclose = (event) => { seen.close = { code: event.code, reason: event.reason }; resolve({ ws, seen }) }
  })
  window.sockets = []
</script>`

t.test('Chromium: WebSockets over the page\'s own HTTP/2 session', async (t) => {
  if (!existsSync(executablePath)) {
    t.fail(`no browser at ${executablePath}: apt-get install -y chromium`)
    return
  }
  const app = Fastify({ http2: true, https: { ...tls, allowHTTP1: true } }) as unknown as FastifyInstance
  t.teardown(() => app.close())
  await app.register(wsHandlers, { perMessageDeflate: { clientNoContextTakeover: true } })
  const sessions: { page?: unknown, sockets: Array<{ session: unknown, version: string }> } = { sockets: [] }
  app.addHook('onRequest', async (request, reply) => {
    const raw = request.raw as unknown as { stream?: { session: unknown }, httpVersion: string }
    if (request.url === '/') sessions.page = raw.stream?.session
    else if (request.url !== '/favicon.ico') sessions.sockets.push({ session: raw.stream?.session, version: raw.httpVersion })
    if (request.url === '/secret') await reply.code(401).send({ error: 'no' })
  })
  app.get('/', async (_request, reply) => await reply.type('text/html').send(page))
  app.ws('/echo', {
    handle: (frame) => {
      if (frame.type === 'text' && frame.data.startsWith('close ')) return { reply: close(Number(frame.data.slice(6)), 'server says bye') }
      if (frame.type === 'text') return { reply: text(frame.data), hibernate: true }
      if (frame.type === 'binary') return { reply: { type: 'binary', data: frame.data } }
      return undefined
    }
  }, { protocols: ['chat'], compress: true, maxFrameSize: 2 << 20 })
  app.ws('/secret', {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo

  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--ignore-certificate-errors']
  })
  t.teardown(async () => await browser.close())
  const tab = await browser.newPage()
  await tab.goto(`https://localhost:${port}/`)

  const echo = await tab.evaluate(async () => {
    const { ws, seen } = await (window as any).open('/echo', ['chat'])
    ;(window as any).sockets.push({ ws, seen })
    ws.send('hello over h2')
    ws.send(new Uint8Array(1 << 20))
    for (let i = 0; i < 100 && seen.messages.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50))
    return { protocol: seen.protocol, extensions: seen.extensions, messages: seen.messages }
  })
  t.same(echo, { protocol: 'chat', extensions: 'permessage-deflate; client_no_context_takeover', messages: ['hello over h2', 1 << 20] },
    'echo, the subprotocol, compression, 1 MB back')
  t.ok(sessions.page !== undefined, 'the page came over HTTP/2')
  t.same(sessions.sockets.map((socket) => [socket.version, socket.session === sessions.page]), [['2.0', true]],
    'the WebSocket arrived as a CONNECT stream on the page\'s own session')

  const closes = await tab.evaluate(async () => {
    const wait = async (seen: any): Promise<void> => { for (let i = 0; i < 100 && seen.close === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 50)) }
    const byServer = await (window as any).open('/echo', ['chat'])
    byServer.ws.send('close 4001')
    await wait(byServer.seen)
    const byPage = await (window as any).open('/echo', ['chat'])
    byPage.ws.close(4002, 'page says bye')
    await wait(byPage.seen)
    const refused = await (window as any).open('/secret')
    return { byServer: byServer.seen.close, byPage: byPage.seen.close, refused: refused.seen.close }
  })
  t.same(closes.byServer, { code: 4001, reason: 'server says bye' })
  t.same(closes.byPage, { code: 4002, reason: 'page says bye' })
  t.equal(closes.refused.code, 1006, 'a hook\'s 401 is a failed connection for the page')
  t.equal(new Set(sessions.sockets.map((socket) => socket.session)).size, 1, 'every WebSocket on the one session')

  await tab.evaluate(async () => {
    const kept = await (window as any).open('/echo', ['chat'])
    ;(window as any).kept = kept
  })
  await app.close()
  const shutdown = await tab.evaluate(async () => {
    const seen = (window as any).kept.seen
    for (let i = 0; i < 100 && seen.close === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 50))
    return seen.close
  })
  t.equal(shutdown.code, 1012, 'app.close(): 1012')
})
