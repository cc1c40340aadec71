/**
 * Topics with history (in this process): publications get positions; a positioned subscriber
 * receives each once, in order, as a `Publication`; one that comes back `since` a position
 * recovers what it missed, then goes on live, with no gap and no duplicate at the seam; when
 * the history cannot serve it, it is told so (`Resync`), never silently skipped.
 */
import t, { type Test } from 'tap'
import { InProcessBus, defineHandler, inProcessAdapter, text, type Position, type TopicEvent, type WebSocketHandlersOptions } from '../lib/index.js'
import { buildApp, inject, until } from './helpers.js'
import { pick, random } from './fuzz.js'
import { feed, follower, offsetsOf } from './followers.js'
import type { FastifyInstance } from 'fastify'

async function feedApp (t: Test, options: WebSocketHandlersOptions = {}): Promise<FastifyInstance> {
  const { app } = await buildApp(t, { history: { feed: { size: 100 } }, ...options })
  app.ws('/feed', follower)
  return app
}

const publish = (app: FastifyInstance, from: number, to: number): void => {
  for (let i = from; i <= to; i++) app.wsConnections.publish(feed, `m${i}`)
}
const publications = (from: number, to: number): string[] => Array.from({ length: to - from + 1 }, (_, i) => `text:p:${from + i}:m${from + i}`)

t.test('a positioned subscriber from now on: told where it is, then every publication with its position', async (t) => {
  const app = await feedApp(t)
  publish(app, 1, 3) // before anyone follows: kept, delivered to no one
  const { seen } = await inject(app, '/feed')
  await seen.frameCount(1)
  t.same(seen.frames, ['text:subscribed:3:0'])
  publish(app, 4, 6)
  await seen.frameCount(4)
  t.same(seen.frames.slice(1), publications(4, 6))
})

t.test('since a position: what was missed, in order, then where it is, then live', async (t) => {
  const app = await feedApp(t)
  const first = await inject(app, '/feed')
  await first.seen.frameCount(1)
  publish(app, 1, 9)
  const { epoch } = await app.wsConnections.publishConfirmed(feed, 'm10')
  await first.seen.frameCount(11)
  first.ws.terminate()
  publish(app, 11, 20) // missed
  const back = await inject(app, `/feed?since=${epoch}:10`)
  publish(app, 21, 22)
  await back.seen.frameCount(13)
  t.same(back.seen.frames, [...publications(11, 20), 'text:subscribed:20:10', ...publications(21, 22)])
})

/** The epoch, as a publication tells it. */
async function epochOf (app: FastifyInstance): Promise<string> {
  return (await app.wsConnections.publishConfirmed(feed, 'probe')).epoch
}

t.test('publishConfirmed resolves with the position; offsets grow by one per publication; the epoch is the history\'s', async (t) => {
  const app = await feedApp(t)
  const a = await app.wsConnections.publishConfirmed(feed, 'a')
  const b = await app.wsConnections.publishConfirmed(feed, 'b')
  t.equal(a.offset, 1)
  t.equal(b.offset, 2)
  t.equal(a.epoch, b.epoch)
  t.match(a.epoch, /^[0-9a-f]{12}$/)
  await t.rejects(app.wsConnections.publishConfirmed('elsewhere', 'x'), { code: 'FST_WS_NO_HISTORY' })
})

t.test('when the history cannot serve `since`, the subscriber is told why, and goes on live', async (t) => {
  const app = await feedApp(t, { history: { feed: { size: 5 } } })
  publish(app, 1, 20)
  const epoch = await epochOf(app) // 21: 17..21 are kept
  const cases: Array<[string, string]> = [
    [`${epoch}:3`, 'text:resync:21:trimmed'],
    [`${epoch}:99`, 'text:resync:21:ahead'],
    ['another-epoch:3', 'text:resync:21:epoch']
  ]
  for (const [since, expected] of cases) {
    const { seen, ws } = await inject(app, `/feed?since=${since}`)
    await seen.frameCount(1)
    t.same(seen.frames, [expected], since)
    ws.terminate()
  }
  // The edge of what is kept: 16 is the last one dropped, so since 16 recovers 17..21.
  const { seen } = await inject(app, `/feed?since=${epoch}:16`)
  await seen.frameCount(6)
  t.same(seen.frames, [...publications(17, 20), 'text:p:21:probe', 'text:subscribed:21:5'])
  const dropped = await inject(app, `/feed?since=${epoch}:15`)
  await dropped.seen.frameCount(1)
  t.same(dropped.seen.frames, ['text:resync:21:trimmed'])
  // Up to date already: nothing to recover, then live from the next one.
  const current = await inject(app, `/feed?since=${epoch}:21`)
  await current.seen.frameCount(1)
  publish(app, 22, 22)
  await current.seen.frameCount(2)
  t.same(current.seen.frames, ['text:subscribed:21:0', 'text:p:22:m22'])
})

t.test('the seam: publications made while a subscriber recovers come after the history, each once', async (t) => {
  const app = await feedApp(t, { history: { feed: { size: 10_000 } } })
  publish(app, 1, 2000)
  const epoch = await epochOf(app) // 2001
  const clients = []
  for (let i = 0; i < 20; i++) {
    // Each comes back from another point, while publications go on between the connects.
    clients.push({ from: i * 50, client: await inject(app, `/feed?since=${epoch}:${i * 50}`) })
    app.wsConnections.publish(feed, `m${2002 + i}`)
  }
  publish(app, 2022, 2100)
  for (const { from, client } of clients) {
    const expected = 2100 - from + 1 // each publication after `from`, and the subscribed event
    await client.seen.frameCount(expected)
    const offsets = offsetsOf(client.seen.frames)
    t.same(offsets, Array.from({ length: 2100 - from }, (_, i) => from + 1 + i), `since ${from}: every one once, in order`)
  }
})

t.test('a follower whose mailbox is full misses nothing: what it could not take is read back from the history', async (t) => {
  const { app } = await buildApp(t, { history: { feed: { size: 1000 } }, mailboxLimit: 4 })
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const seen: number[] = []
  app.ws('/slow', defineHandler<undefined, TopicEvent<string>>({
    websocketInit: (_state, ctx) => { ctx.subscribe(feed, {}) },
    info: async (event) => {
      if (event.kind !== 'publication') return
      await gate
      seen.push(event.position.offset)
    }
  }))
  await inject(app, '/slow')
  await until(() => app.wsConnections.subscriberCount(feed) === 1, 'subscribed')
  publish(app, 1, 50) // most are refused by the mailbox
  release()
  await until(() => seen.length === 50, 'every publication')
  t.same(seen, Array.from({ length: 50 }, (_, i) => i + 1))
})

t.test('positioned subscriptions are checked: a topic without history, a bad position', async (t) => {
  const { app } = await buildApp(t, { history: { 'chat:*': { size: 10 } } })
  const errors: unknown[] = []
  app.ws('/nohistory', {
    websocketInit: (_state, ctx) => { ctx.subscribe('plain', {}) },
    terminate: (reason) => { errors.push(reason) }
  })
  app.ws('/badposition', {
    websocketInit: (_state, ctx) => { ctx.subscribe('chat:1', { since: { offset: -1, epoch: 'x' } }) },
    terminate: (reason) => { errors.push(reason) }
  })
  app.ws('/badoptions', {
    websocketInit: (_state, ctx) => { ctx.subscribe('chat:1', null as never) },
    terminate: (reason) => { errors.push(reason) }
  })
  for (const path of ['/nohistory', '/badposition', '/badoptions']) {
    const { seen } = await inject(app, path)
    t.equal((await seen.closed).code, 1011, path)
    await until(() => errors.length === 1, `${path}: its terminate`)
    t.match(errors.pop(), {
      type: 'crash',
      error: { code: { '/nohistory': 'FST_WS_NO_HISTORY', '/badposition': 'FST_WS_INVALID_POSITION', '/badoptions': 'FST_WS_INVALID_OPTION' }[path] }
    })
  }
})

t.test('plain subscribers of a topic with history get the messages as they are; patterns and exact names choose the limits', async (t) => {
  const bus = new InProcessBus()
  const { app } = await buildApp(t, { history: { 'chat:*': { size: 2 }, 'chat:big': { size: 5 } }, adapter: inProcessAdapter({ bus }) })
  app.ws('/plain', { websocketInit: (_state, ctx) => { ctx.subscribe('chat:1') }, info: (message) => ({ reply: text(String(message)) }) })
  const { seen } = await inject(app, '/plain')
  await until(() => app.wsConnections.subscriberCount('chat:1') === 1, 'subscribed')
  t.equal(app.wsConnections.publish('chat:1', 'hello'), 1)
  await seen.frameCount(1)
  t.same(seen.frames, ['text:hello'])
  for (const [name, kept] of [['chat:1', 2], ['chat:big', 5]] as const) {
    for (let i = 0; i < 10; i++) await app.wsConnections.publishConfirmed(name, i)
    const { epoch } = await app.wsConnections.publishConfirmed(name, 'last')
    const read = bus.history.read(name, 0, { size: 100 })
    t.equal(read.entries.length, kept, `${name} keeps ${kept}`)
    t.equal(read.epoch, epoch)
  }
})

t.test('maxAgeMs: what is older is not recovered', async (t) => {
  const { app } = await buildApp(t, { history: { feed: { size: 100, maxAgeMs: 1000 } } })
  app.ws('/feed', follower)
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  publish(app, 1, 5)
  now += 2000
  publish(app, 6, 7)
  const epoch = await epochOf(app) // 8
  const { seen } = await inject(app, `/feed?since=${epoch}:2`)
  await seen.frameCount(1)
  t.same(seen.frames, ['text:resync:8:trimmed'])
  const justExpired = await inject(app, `/feed?since=${epoch}:4`) // 5, the newest that expired, is gone too
  await justExpired.seen.frameCount(1)
  t.same(justExpired.seen.frames, ['text:resync:8:trimmed'])
  const recent = await inject(app, `/feed?since=${epoch}:5`)
  await recent.seen.frameCount(4)
  t.same(recent.seen.frames, [...publications(6, 7), 'text:p:8:probe', 'text:subscribed:8:3'])
})

t.test('apps on one bus share the history: a client recovers on another app what it missed on the first', async (t) => {
  const bus = new InProcessBus()
  const a = await feedApp(t, { adapter: inProcessAdapter({ bus }) })
  const b = await feedApp(t, { adapter: inProcessAdapter({ bus }) })
  const onA = await inject(a, '/feed')
  await onA.seen.frameCount(1)
  publish(a, 1, 3)
  await onA.seen.frameCount(4)
  onA.ws.terminate()
  publish(a, 4, 5)
  const epoch = (await a.wsConnections.publishConfirmed(feed, 'm6')).epoch
  const onB = await inject(b, `/feed?since=${epoch}:3`)
  publish(b, 7, 7)
  await onB.seen.frameCount(5)
  t.same(onB.seen.frames, [...publications(4, 6), 'text:subscribed:6:3', 'text:p:7:m7'])
})

t.test('history needs an adapter that keeps it; the option is checked', async (t) => {
  const adapter = { ...inProcessAdapter(), history: undefined }
  await t.rejects(buildApp(t, { history: { feed: { size: 1 } }, adapter }), { code: 'FST_WS_INVALID_OPTION', message: /keeps no history/ })
  for (const history of [{ feed: { size: 0 } }, { 'a*b': { size: 1 } }, { feed: { size: 1, extra: 1 } }, { feed: { size: 1, maxAgeMs: 0.5 } }, [], { feed: null }]) {
    await t.rejects(buildApp(t, { history } as unknown as WebSocketHandlersOptions), { code: 'FST_WS_INVALID_OPTION' }, JSON.stringify(history))
  }
})

t.test('bounded under a flood: the history holds `size`; apps on one bus with other limits for a topic keep the newest', async (t) => {
  const bus = new InProcessBus()
  const a = await feedApp(t, { adapter: inProcessAdapter({ bus }), history: { feed: { size: 100 } } })
  const b = await feedApp(t, { adapter: inProcessAdapter({ bus }), history: { feed: { size: 10, maxAgeMs: 60_000 } } })
  publish(a, 1, 10_000)
  t.equal(bus.history.kept, 100, 'a flood of 10,000 keeps 100')
  publish(b, 10_001, 10_001) // b's limits: the newest 10 stay, with times from now on
  t.equal(bus.history.kept, 10)
  const read = bus.history.read('feed', 0, { size: 10, maxAgeMs: 60_000 })
  t.same(read.entries.map((entry) => entry.offset), Array.from({ length: 10 }, (_, i) => 9992 + i))
  t.same(read.entries.map((entry) => entry.message), Array.from({ length: 10 }, (_, i) => `m${9992 + i}`), 'each with its own message')
  publish(a, 10_002, 10_002) // and back
  for (let i = 0; i <= 10_000; i++) a.wsConnections.publish(`other-${i}`, i) // topics without history, more than the look-up remembers
  t.same(bus.history.read('feed', 0, { size: 100 }).entries.map((entry) => entry.offset), Array.from({ length: 11 }, (_, i) => 9992 + i))
})

t.test('a history that cannot keep a publication: publish logs it, publishConfirmed rejects', async (t) => {
  for (const failure of ['throws', 'rejects'] as const) {
    const base = inProcessAdapter()
    const adapter = {
      ...base,
      history: {
        read: base.history!.read.bind(base.history),
        append: failure === 'throws'
          ? () => { throw new Error('the store is down') }
          : async () => await Promise.reject(new Error('the store is down'))
      }
    }
    const { app, errors } = await buildApp(t, { adapter, history: { feed: { size: 10 } } })
    t.equal(app.wsConnections.publish(feed, 'lost'), 0)
    await t.rejects(app.wsConnections.publishConfirmed(feed, 'lost'), /the store is down/)
    await until(() => errors.length === 1, 'the error log')
    t.match(errors[0], { msg: /publication lost/, topic: 'feed', err: { message: 'the store is down' } }, failure)
  }
})

t.test('fuzz: whatever `since` a client makes the app pass, the connection gets one subscribed or resync event, or closes 1011 with FST_WS_INVALID_POSITION', async (t) => {
  const next = random(17)
  const { app } = await buildApp(t, { history: { feed: { size: 20 } } })
  const sinces: unknown[] = []
  app.ws('/fuzz', defineHandler<undefined, TopicEvent<unknown>>({
    websocketInit: (_state, ctx) => { ctx.subscribe(feed.name, { since: sinces.shift() as Position }) },
    info: (event) => ({ reply: text(event.kind) })
  }))
  const { epoch } = await app.wsConnections.publishConfirmed(feed, 'first')
  publish(app, 2, 40)
  const values = [0, 1, 19, 20, 21, 40, 41, -1, 0.5, NaN, Infinity, 2 ** 53, '3', null, undefined, {}, []]
  const epochs = [epoch, '', 'x', 'ffffffffffff', 42, null, undefined, epoch.toUpperCase()]
  for (let i = 0; i < 200; i++) {
    const since = next(10) === 0
      ? pick(next, [null, 'e:1', 3, [], { offset: 1 }, { epoch }])
      : { offset: pick(next, values), epoch: pick(next, epochs), ...(next(4) === 0 ? { extra: true } : {}) }
    sinces.push(since)
    const { seen } = await inject(app, '/fuzz')
    const first = await Promise.race([seen.frameCount(1).then(() => seen.frames[0]), seen.closed.then(({ code }) => `closed:${code}`)])
    t.ok(['text:subscribed', 'text:resync', 'text:publication', 'closed:1011'].includes(first!), `${JSON.stringify(since)} → ${first!}`)
  }
  t.equal(app.wsConnections.subscriberCount(feed) > 0, true, 'the app goes on')
})

t.test('a publication to a topic with history is observed on the deliver channel', async (t) => {
  const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
  const app = await feedApp(t)
  const { seen } = await inject(app, '/feed')
  await seen.frameCount(1)
  const events: unknown[] = []
  const listen = (event: unknown): void => { events.push(event) }
  subscribe('fastify-ws-handlers:deliver', listen)
  t.teardown(() => unsubscribe('fastify-ws-handlers:deliver', listen))
  app.wsConnections.publish(feed, 'observed')
  t.match(events, [{ operation: 'publish', delivered: 1, instanceId: app.wsConnections.instanceId }])
})

t.test('plain and positioned subscribers of one topic on one instance: each gets its own form', async (t) => {
  const app = await feedApp(t)
  app.ws('/plain', { websocketInit: (_state, ctx) => { ctx.subscribe(feed) }, info: (message) => ({ reply: text(String(message)) }) })
  const positioned = await inject(app, '/feed')
  await positioned.seen.frameCount(1)
  const plain = await inject(app, '/plain')
  await until(() => app.wsConnections.subscriberCount(feed) === 2, 'both subscribed')
  publish(app, 1, 2)
  await positioned.seen.frameCount(3)
  await plain.seen.frameCount(2)
  t.same(positioned.seen.frames, ['text:subscribed:0:0', ...publications(1, 2)])
  t.same(plain.seen.frames, ['text:m1', 'text:m2'])
})

t.test('the in-process history lets go of what expired by age, whether or not its topic is used again; its offsets go on', async (t) => {
  const { install } = await import('@sinonjs/fake-timers')
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
  t.teardown(() => { clock.uninstall() })
  const bus = new InProcessBus()
  const limits = { size: 60_000, maxAgeMs: 60_000 }
  bus.history.append('forever', 'kept without an age limit', undefined, { size: 10 })
  for (let i = 1; i <= 50_000; i++) bus.history.append('quiet', { n: i, pad: 'x'.repeat(100) }, undefined, limits)
  clock.tick(30_000)
  bus.history.append('quiet', 'newest', undefined, limits)
  t.equal(bus.history.kept, 50_002)
  clock.tick(30_001) // the first 50,000 are past their age: nobody appends to the topic or reads it
  t.equal(bus.history.kept, 2, 'expired without a touch of the topic')
  t.same(bus.history.read('quiet', 0, limits), { epoch: bus.history.epoch, top: 50_001, entries: [{ offset: 50_001, message: 'newest' }] })
  clock.tick(30_000)
  t.equal(bus.history.kept, 1, 'what has no age limit stays')
  t.equal(clock.countTimers(), 0, 'no sweep left for nobody')
  t.equal(bus.history.append('quiet', 'later', undefined, limits).offset, 50_002, 'an emptied topic keeps its offsets')
  t.same(bus.history.read('quiet', 50_001, limits).entries, [{ offset: 50_002, message: 'later' }])
  clock.uninstall()
})
