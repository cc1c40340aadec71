/**
 * `npm run test:browser`: a real browser against the plugin (Debian's Chromium, driven by
 * playwright-core; never a downloaded browser). Not part of `npm test`: it needs
 * `apt-get install -y chromium`. It proves what only a browser can: the subprotocol answer, and
 * that Chromium accepts the `client_no_context_takeover` that hibernating endpoints impose
 * (RFC 7692 lets a server add it), with compressed echoes intact across hibernations.
 */
import { existsSync } from 'node:fs'
import Fastify from 'fastify'
import { chromium } from 'playwright-core'
import t from 'tap'
import wsHandlers, { text } from '../../lib/index.js'

const executablePath = '/usr/bin/chromium'

t.test('Chromium: subprotocol, compression with client_no_context_takeover, hibernate between messages', async (t) => {
  if (!existsSync(executablePath)) {
    t.fail(`no browser at ${executablePath}: apt-get install -y chromium`)
    return
  }
  const app = Fastify()
  await app.register(wsHandlers, { perMessageDeflate: { clientNoContextTakeover: true, threshold: 0 } })
  app.get('/', async (_request, reply) => await reply.type('text/html').send('<!doctype html><title>ws</title>'))
  app.ws('/mqtt', { handle: () => undefined }, { protocols: ['mqtt'] })
  app.ws('/hibernating', {
    handle: (frame) => frame.type === 'text' ? { reply: text(frame.data.toUpperCase()), hibernate: true } : undefined
  }, { compress: true })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
  })
  t.teardown(async () => {
    await browser.close()
    await app.close()
  })
  const page = await browser.newPage()
  await page.goto(`http://127.0.0.1:${port}/`)

  const protocol = await page.evaluate(async (url) => await new Promise<string>((resolve, reject) => {
    const ws = new WebSocket(url, ['v12.stomp', 'mqtt'])
    ws.onopen = () => { resolve(ws.protocol); ws.close() }
    ws.onerror = () => reject(new Error('refused'))
  }), `ws://127.0.0.1:${port}/mqtt`)
  t.equal(protocol, 'mqtt', 'Chromium got mqtt for "v12.stomp, mqtt"')

  const refused = await page.evaluate(async (url) => await new Promise<string>((resolve) => {
    const ws = new WebSocket(url, ['v12.stomp'])
    ws.onopen = () => resolve('open')
    ws.onclose = (event) => resolve(`closed ${event.code}`)
  }), `ws://127.0.0.1:${port}/mqtt`)
  t.equal(refused, 'closed 1006', 'Chromium fails the handshake that got HTTP 400 (v12.stomp only)')

  const result = await page.evaluate(async (url) => await new Promise<{ extensions: string, echoes: string[] }>((resolve, reject) => {
    const ws = new WebSocket(url)
    const echoes: string[] = []
    const send = (i: number): void => ws.send(`message ${i} `.repeat(50))
    ws.onopen = () => send(0)
    ws.onmessage = (event) => {
      echoes.push(String(event.data).slice(0, 12))
      // 50 ms of idle between messages: the server hibernates each time
      if (echoes.length < 10) setTimeout(() => send(echoes.length), 50)
      else {
        resolve({ extensions: ws.extensions, echoes })
        ws.close()
      }
    }
    ws.onerror = () => reject(new Error('socket error'))
  }), `ws://127.0.0.1:${port}/hibernating`)
  t.match(result.extensions, /permessage-deflate/)
  t.match(result.extensions, /client_no_context_takeover/, 'Chromium accepted client_no_context_takeover')
  t.same(result.echoes, Array.from({ length: 10 }, (_, i) => `MESSAGE ${i} `.repeat(50).slice(0, 12)), 'every echo intact')
})
