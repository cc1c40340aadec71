/**
 * `ctx.stream(source, to)`: what an async iterator yields reaches `info` in order, one item at a
 * time, and the next item is pulled only after the previous one's `info` has run; the source is
 * released (`return()`) when the handler stops it or the connection ends; a throwing source is
 * the handler's to answer (`to.error`) or its crash.
 */
import t from 'tap'
import { defineHandler, json, text, type StreamRef } from '../lib/index.js'
import { handlerHarness, wsClient } from '../lib/testing.js'
import { buildApp, terminateRecorder, until } from './helpers.js'

type Feed = { type: 'item', n: number } | { type: 'done' } | { type: 'failed', message: string }

/** 1, 2, … up to `count` (forever without), logging each pull and its release. */
async function * numbers (log: string[], count = Infinity): AsyncGenerator<number> {
  try {
    for (let n = 1; n <= count; n++) {
      log.push(`pull ${n}`)
      yield n
    }
  } finally {
    log.push('released')
  }
}

const toFeed = {
  next: (n: number): Feed => ({ type: 'item', n }),
  complete: (): Feed => ({ type: 'done' }),
  error: (error: unknown): Feed => ({ type: 'failed', message: (error as Error).message })
}

t.test('items reach info in order, one at a time: the next is pulled only after the previous info has run', async (t) => {
  const { app } = await buildApp(t)
  const log: string[] = []
  app.ws('/feed', defineHandler<undefined, Feed>({
    websocketInit: (_state, ctx) => { ctx.stream(numbers(log, 3), toFeed) },
    info: async (message) => {
      log.push(`info ${message.type === 'item' ? message.n : message.type} start`)
      await new Promise((resolve) => setImmediate(resolve)) // a slow consumer
      log.push(`info ${message.type === 'item' ? message.n : message.type} end`)
      return { reply: json(message) }
    }
  }))
  const client = await wsClient(app, '/feed')
  t.same([await client.nextJson(), await client.nextJson(), await client.nextJson(), await client.nextJson()],
    [{ type: 'item', n: 1 }, { type: 'item', n: 2 }, { type: 'item', n: 3 }, { type: 'done' }])
  t.same(log, [
    'pull 1', 'info 1 start', 'info 1 end',
    'pull 2', 'info 2 start', 'info 2 end',
    'pull 3', 'info 3 start', 'info 3 end',
    'released', 'info done start', 'info done end'
  ], 'back-pressure: one item in flight')
  client.close()
})

t.test('stopStream releases the source at once; the stream ends with the connection too', async (t) => {
  const { app } = await buildApp(t)
  const stopped: string[] = []
  const endless: string[] = []
  app.ws('/stop', defineHandler<{ ref: StreamRef }, Feed>({
    websocketInit: (_state, ctx) => ({ state: { ref: ctx.stream(numbers(stopped), toFeed) } }),
    info: (message, state, ctx) => {
      if (message.type === 'item' && message.n === 3) t.equal(ctx.stopStream(state.ref), true, 'it was running')
      t.equal(ctx.stopStream(12345), false, 'an unknown ref')
      return { reply: json(message) }
    }
  }))
  const recorder = terminateRecorder()
  let infos = 0
  app.ws('/endless', defineHandler<undefined, Feed>({
    websocketInit: (_state, ctx) => { ctx.stream(numbers(endless), toFeed) },
    info: async () => {
      infos++
      await new Promise((resolve) => setImmediate(resolve))
    },
    terminate: recorder.terminate
  }))
  const client = await wsClient(app, '/stop')
  for (let n = 1; n <= 3; n++) t.same(await client.nextJson(), { type: 'item', n })
  await until(() => stopped.includes('released'), 'the source released')
  t.same(stopped, ['pull 1', 'pull 2', 'pull 3', 'released'], 'nothing pulled after the stop')
  client.close()

  const closing = await wsClient(app, '/endless')
  await until(() => infos >= 5, 'a few items')
  closing.close(1000)
  await recorder.first
  await until(() => endless.includes('released'), 'the source released at terminate')
  const at = infos
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(infos, at, 'no info after terminate')
})

t.test('a source that throws: to.error answers it, or the connection crashes with 1011; a throwing `to` is a crash too', async (t) => {
  const { app } = await buildApp(t)
  async function * failing (): AsyncGenerator<number> {
    yield 1
    throw new Error('feed broke')
  }
  const plain = {
    [Symbol.iterator]: () => ({ next: (): IteratorResult<number> => { throw new Error('sync source broke') } })
  }
  const handler = (source: AsyncIterable<number> | Iterable<number>, to: { next: (n: number) => Feed, error?: (error: unknown) => Feed }) => defineHandler<undefined, Feed>({
    websocketInit: (_state, ctx) => { ctx.stream(source, to) },
    info: (message) => ({ reply: json(message) })
  })
  app.ws('/answered', handler(failing(), toFeed))
  app.ws('/crashes', handler(failing(), { next: toFeed.next }))
  app.ws('/sync', handler(plain, { next: toFeed.next }))
  app.ws('/bad-to', handler([1, 2], { next: () => { throw new Error('mapping broke') } }))
  const answered = await wsClient(app, '/answered')
  t.same([await answered.nextJson(), await answered.nextJson()], [{ type: 'item', n: 1 }, { type: 'failed', message: 'feed broke' }])
  answered.close()
  for (const [path, message] of [['/crashes', 'feed broke'], ['/sync', 'sync source broke'], ['/bad-to', 'mapping broke']]) {
    const client = await wsClient(app, path!)
    t.equal((await client.closed()).code, 1011, `${path}: 1011`)
    t.match(await client.terminated(), { type: 'crash', error: { message } })
  }
})

t.test('a plain iterable streams too', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/plain', defineHandler<undefined, string>({
    websocketInit: (_state, ctx) => { ctx.stream(['a', 'b'], { next: (item) => item, complete: () => 'end' }) },
    info: (message) => ({ reply: text(message) })
  }))
  const client = await wsClient(app, '/plain')
  t.same([await client.nextText(), await client.nextText(), await client.nextText()], ['a', 'b', 'end'])
  client.close()
})

t.test('the harness pulls streams one item at a time, as the server does', async (t) => {
  const log: string[] = []
  const h = handlerHarness(defineHandler<undefined, Feed>({
    websocketInit: (_state, ctx) => {
      ctx.stream(numbers(log, 1), toFeed)
      ctx.stream((async function * () { throw new Error('no') })(), { next: toFeed.next })
      ctx.stream(numbers([], Infinity), { next: toFeed.next })
    },
    info: (message) => ({ reply: json(message) })
  }))
  await h.websocketInit()
  const [first, failing, endless] = h.streams as [StreamRef, StreamRef, StreamRef]
  t.same((await h.streamNext())!.replies, [json({ type: 'item', n: 1 })])
  t.same((await h.streamNext(first))!.replies, [json({ type: 'done' })])
  t.same(h.streams, [failing, endless])
  await t.rejects(h.streamNext(failing), { message: 'no' }, 'without to.error: the crash')
  t.equal(h.ctx.stopStream(endless), true)
  t.equal(h.ctx.stopStream(endless), false)
  await t.rejects(h.streamNext(), { message: 'no stream is running' })
  await t.rejects(h.streamNext(99), { message: 'stream 99 is not running' })
  const released: string[] = []
  const ended = handlerHarness(defineHandler<undefined, Feed>({
    websocketInit: (_state, ctx) => {
      ctx.stream([] as number[], { next: toFeed.next })
      ctx.stream((async function * () { throw new Error('answered') })(), toFeed)
      ctx.stream(numbers(released), toFeed)
    },
    info: (message) => ({ reply: json(message) })
  }))
  await ended.websocketInit()
  t.equal(await ended.streamNext(), undefined, 'an end without to.complete runs nothing')
  t.same((await ended.streamNext())!.replies, [json({ type: 'failed', message: 'answered' })])
  t.same((await ended.streamNext())!.replies, [json({ type: 'item', n: 1 })], 'started (a generator not started has nothing to release)')
  await ended.terminate()
  await until(() => released.includes('released'), 'terminate releases the sources')
  t.same(ended.streams, [])
})

t.test('a source whose return() fails is released all the same; after terminate, stream and stopStream do nothing', async (t) => {
  const { app } = await buildApp(t)
  const sources = ['rejects', 'throws'].map((how) => ({
    [Symbol.asyncIterator]: () => ({
      next: async (): Promise<IteratorResult<number>> => ({ done: false, value: 1 }),
      return: (): Promise<IteratorResult<number>> => {
        if (how === 'throws') throw new Error('cannot close')
        return Promise.reject(new Error('cannot close'))
      }
    })
  }))
  let kept: import('../lib/index.js').WebSocketContext<number> | undefined
  let quiet: import('../lib/index.js').WebSocketContext<number> | undefined
  const recorder = terminateRecorder()
  app.ws('/sources', defineHandler<undefined, number>({
    websocketInit: (_state, ctx) => {
      kept = ctx
      for (const source of sources) ctx.stream(source, { next: (n) => n })
    },
    info: async () => { await new Promise((resolve) => setImmediate(resolve)) },
    terminate: recorder.terminate
  }))
  app.ws('/quiet', defineHandler<undefined, number>({ websocketInit: (_state, ctx) => { quiet = ctx } }))
  const client = await wsClient(app, '/sources')
  const other = await wsClient(app, '/quiet')
  client.close()
  await recorder.first
  await until(() => kept?.alive === false, 'terminated')
  t.equal(kept!.stream([1, 2], { next: (n) => n }), 0, 'no stream after terminate')
  t.equal(quiet!.stopStream(1), false, 'a connection that never streamed')
  other.close()
})

t.test('what a stopped source still delivers, an item or a failure, is dropped', async (t) => {
  const { app, errors } = await buildApp(t)
  const pending: Array<{ resolve: (result: IteratorResult<number>) => void, reject: (error: Error) => void }> = []
  const source = {
    [Symbol.asyncIterator]: () => ({
      next: async () => await new Promise<IteratorResult<number>>((resolve, reject) => { pending.push({ resolve, reject }) }),
      return: async (): Promise<IteratorResult<number>> => ({ done: true, value: undefined })
    })
  }
  const infos: number[] = []
  const recorder = terminateRecorder()
  app.ws('/late', defineHandler<undefined, number>({
    websocketInit: (_state, ctx) => {
      ctx.stream(source, { next: (n) => n })
      ctx.stream(source, { next: (n) => n })
    },
    info: (n) => { infos.push(n) },
    terminate: recorder.terminate
  }))
  const client = await wsClient(app, '/late')
  await until(() => pending.length === 2, 'both sources asked for an item')
  client.close()
  await recorder.first
  pending[0]!.resolve({ done: false, value: 1 })
  pending[1]!.reject(new Error('too late'))
  await new Promise((resolve) => setImmediate(resolve))
  t.same(infos, [], 'no info after terminate')
  t.same(errors, [], 'no crash logged')
})

t.test('an item in flight when stopStream runs is dropped, the connection still open (after a GraphQL complete, no next goes out)', async (t) => {
  const { app } = await buildApp(t)
  const pending: Array<(result: IteratorResult<number>) => void> = []
  const source = {
    [Symbol.asyncIterator]: () => ({
      next: async () => await new Promise<IteratorResult<number>>((resolve) => { pending.push(resolve) }),
      return: async (): Promise<IteratorResult<number>> => ({ done: true, value: undefined })
    })
  }
  const infos: Array<number | string> = []
  let ref: StreamRef | undefined
  app.ws('/stopped', defineHandler<undefined, number | string>({
    websocketInit: (_state, ctx) => { ref = ctx.stream(source, { next: (n) => n }) },
    handle: (frame, _state, ctx) => {
      if (frame.type === 'text' && frame.data === 'stop') return { reply: text(String(ctx.stopStream(ref!))) }
      return undefined
    },
    info: (message) => {
      infos.push(message)
      return typeof message === 'string' ? { reply: text(message) } : undefined
    }
  }))
  const client = await wsClient(app, '/stopped')
  await until(() => pending.length === 1, 'the source asked for an item')
  client.send('stop')
  t.equal(await client.nextText(), 'true', 'stopped while its item was in flight')
  pending[0]!({ done: false, value: 1 })
  await new Promise((resolve) => setImmediate(resolve)) // the item's promise has settled
  app.wsConnections.post([...app.wsConnections][0]!.id, 'marker')
  t.equal(await client.nextText(), 'marker')
  t.same(infos, ['marker'], 'the late item never reached info')
  client.close()
})

t.test('a source that is not iterable is refused with a coded error: the callback\'s crash, and the harness throws it too', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/bad', defineHandler<undefined, number>({ websocketInit: (_state, ctx) => { ctx.stream(5 as never, { next: (n) => n as number }) } }))
  const client = await wsClient(app, '/bad')
  t.equal((await client.closed()).code, 1011)
  t.match(await client.terminated(), { type: 'crash', error: { code: 'FST_WS_INVALID_STREAM', message: /got 5$/ } })
  const h = handlerHarness(defineHandler<undefined, number>({ websocketInit: (_state, ctx) => { ctx.stream(null as never, { next: (n) => n as number }) } }))
  await t.rejects(h.websocketInit(), { code: 'FST_WS_INVALID_STREAM' })
})
