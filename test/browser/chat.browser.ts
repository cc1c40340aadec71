/// <reference lib="dom" />
/**
 * The chat in two real browsers pages, on two instances of the example app sharing Redis:
 * a message typed on instance A appears on instance B, both see who is in the room, and a
 * screenshot is saved (test-output/chat.png) for a person to look at.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { chromium, type Page } from 'playwright-core'
import t from 'tap'
import { buildExampleApp } from '../../example-app/app.js'
import { redisAdapter } from '../../lib/redis.js'

const executablePath = '/usr/bin/chromium'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

t.test('Chromium: a chat across two instances sharing Redis', async (t) => {
  if (!existsSync(executablePath)) {
    t.fail(`no browser at ${executablePath}: apt-get install -y chromium`)
    return
  }
  const channelPrefix = `fws-chat-${randomBytes(4).toString('hex')}:`
  const instances: Array<{ app: Awaited<ReturnType<typeof buildExampleApp>>['app'], url: string }> = []
  for (let i = 0; i < 2; i++) {
    const { app } = await buildExampleApp({}, { adapter: redisAdapter({ url: redisUrl, channelPrefix }) })
    await app.listen({ port: 0, host: '127.0.0.1' })
    instances.push({ app, url: `http://127.0.0.1:${(app.server.address() as { port: number }).port}` })
  }
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
  })
  t.teardown(async () => {
    await browser.close()
    for (const { app } of instances) await app.close()
  })

  async function join (url: string, name: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 900, height: 560 } })
    await page.goto(`${url}/chat`)
    await page.fill('#name', name)
    await page.fill('#room', 'lobby')
    await page.click('#join button')
    await page.waitForSelector('#status.online')
    return page
  }

  const ada = await join(instances[0]!.url, 'Ada') // instance A
  const grace = await join(instances[1]!.url, 'Grace') // instance B
  await ada.waitForFunction(() => document.querySelector('#members')!.textContent === 'AdaGrace')
  await grace.waitForFunction(() => document.querySelector('#members')!.textContent === 'AdaGrace')
  t.pass('each page lists both people, across instances')

  await ada.fill('#text', 'Hello from instance A!')
  await ada.press('#text', 'Enter')
  await grace.waitForFunction(() => document.querySelector('#messages')!.textContent!.includes('AdaHello from instance A!'))
  await grace.fill('#text', 'Hi Ada, this is B.')
  await grace.click('#say button')
  await ada.waitForFunction(() => document.querySelector('#messages')!.textContent!.includes('GraceHi Ada, this is B.'))
  t.pass('messages typed on one instance appear on the other, both ways')

  mkdirSync('test-output', { recursive: true })
  await ada.screenshot({ path: 'test-output/chat.png' })
  t.ok(existsSync('test-output/chat.png'), 'screenshot saved to test-output/chat.png')

  await grace.close()
  await ada.waitForFunction(() => document.querySelector('#members')!.textContent === 'Ada')
  t.pass('a closed page leaves the room on the other instance')
})
