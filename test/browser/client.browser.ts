/// <reference lib="dom" />
/**
 * `fastify-ws-handlers/client` in Chromium: the same source (lib/client.ts, its types stripped)
 * runs in a page with the browser's own WebSocket; drained off instance A (1012), it comes back
 * on instance B since its last position, and has every publication once, in order.
 */
import { existsSync, readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import t from 'tap'
import ts from 'typescript'
import { InProcessBus, defineHandler, inProcessAdapter, json, type TopicEvent } from '../../lib/index.js'
import { buildApp, listen, until } from '../helpers.js'
import { feed, range, sinceOf } from '../followers.js'

const executablePath = '/usr/bin/chromium'

t.test('Chromium: the resuming client misses nothing across a drain', async (t) => {
  if (!existsSync(executablePath)) {
    t.fail(`no browser at ${executablePath}: apt-get install -y chromium`)
    return
  }
  const bus = new InProcessBus()
  const urls: string[] = []
  const apps = []
  for (let i = 0; i < 2; i++) {
    const { app } = await buildApp(t, { adapter: inProcessAdapter({ bus }), history: { feed: { size: 1000 } }, allowOrigins: '*' })
    app.get('/', async (_request, reply) => await reply.type('text/html').send('<!doctype html><title>client</title>'))
    app.ws('/feed', defineHandler<undefined, TopicEvent<string>>({
      websocketInit: (_state, ctx) => { ctx.subscribe(feed, { since: sinceOf(ctx.request.query) }) },
      info: (event) => ({ reply: json({ kind: event.kind, offset: event.position.offset, pos: `${event.position.epoch}:${event.position.offset}` }) })
    }))
    urls.push(await listen(app))
    apps.push(app)
  }
  const [a, b] = apps as [typeof apps[0], typeof apps[0]]
  // The module as a plain script: its `export`s become globals of the page.
  const source = readFileSync(new URL('../../lib/client.ts', import.meta.url), 'utf8').replace(/^export /gm, '')
  const script = ts.transpileModule(source, { compilerOptions: { target: ts.ScriptTarget.ES2022 } }).outputText
  const browser = await chromium.launch({ executablePath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
  t.teardown(async () => { await browser.close() })
  const page = await browser.newPage()
  await page.goto(`${urls[0]!.replace('ws:', 'http:')}/`)
  await page.addScriptTag({ content: script })
  await page.evaluate(([first, second]) => {
    const state = { offsets: [] as number[], statuses: [] as string[], connects: 0 }
    ;(window as unknown as { state: typeof state }).state = state
    const resuming = (window as unknown as { resumingSocket: (options: unknown) => unknown }).resumingSocket
    resuming({
      url: (since: string) => `${state.connects++ === 0 ? first! : second!}/feed${since === '' ? '' : `?since=${since}`}`,
      onMessage: (message: { kind: string, offset: number }) => { if (message.kind === 'publication') state.offsets.push(message.offset) },
      onStatus: (status: string, code?: number) => { state.statuses.push(code === undefined ? status : `${status}:${code}`) },
      backoff: { initialMs: 20 }
    })
  }, urls)
  const state = async (): Promise<{ offsets: number[], statuses: string[], connects: number }> =>
    await page.evaluate(() => (window as unknown as { state: { offsets: number[], statuses: string[], connects: number } }).state)
  await until(() => a.wsConnections.subscriberCount(feed) === 1, 'following on A')
  for (let i = 1; i <= 5; i++) a.wsConnections.publish(feed, `m${i}`)
  await until(async () => (await state()).offsets.length === 5, 'the first five')
  await a.wsConnections.drain()
  for (let i = 6; i <= 10; i++) b.wsConnections.publish(feed, `m${i}`)
  await until(() => b.wsConnections.subscriberCount(feed) === 1, 'following on B')
  b.wsConnections.publish(feed, 'm11')
  await until(async () => (await state()).offsets.length === 11, 'all eleven')
  const { offsets, statuses } = await state()
  t.same(offsets, range(1, 11), 'every one once, in order')
  t.same(statuses, ['online', 'reconnecting:1012', 'online'])
})
