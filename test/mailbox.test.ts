/**
 * The mailbox: one callback at a time, in arrival order, state threaded through, async or not;
 * bounded; messages from the app (post, timers) in the same queue.
 */
import t from 'tap'
import { defineHandler, text, type TimeoutMessage, type WebSocketContext } from '../lib/index.js'
import { buildApp, connect, inject, listen, sleep, until, terminateRecorder } from './helpers.js'

t.test('1,000 messages to an async handler with random delays come back in order, none lost', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  let running = 0
  let overlapped = false
  app.ws('/slow', defineHandler<number[]>({
    init: () => ({ state: [] }),
    handle: async (frame, seen) => {
      running++
      overlapped ||= running > 1
      await sleep(Math.random() < 0.1 ? Math.random() * 3 : 0)
      running--
      if (frame.type !== 'text') return undefined
      return { state: [...seen, Number(frame.data)], reply: text(frame.data) }
    },
    terminate: recorder.terminate
  }))
  const { ws, seen } = await inject(app, '/slow')
  const sent = Array.from({ length: 1000 }, (_, i) => String(i))
  for (const message of sent) ws.send(message)
  t.same(await seen.frameCount(1000), sent.map((m) => `text:${m}`))
  ws.close()
  t.same((await recorder.first).state, sent.map(Number), 'the state was threaded through every call')
  t.notOk(overlapped, 'no two callbacks ever ran at the same time')
})

t.test('frames sent right after the upgrade wait while websocketInit awaits', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/init-slow', defineHandler<string>({
    websocketInit: async () => {
      await sleep(100)
      return { state: 'ready', reply: text('init done') }
    },
    handle: (frame, state) => frame.type === 'text' ? { reply: text(`${state}:${frame.data}`) } : undefined
  }))
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/init-slow`)
  ws.send('first')
  ws.send('second')
  t.same(await seen.frameCount(3), ['text:init done', 'text:ready:first', 'text:ready:second'])
  ws.close()
})

t.test('a full mailbox stops reading from the socket until it drains, and nothing is lost', async (t) => {
  const { app } = await buildApp(t)
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let handled = 0
  let connection: WebSocketContext | undefined
  app.ws('/blocked', {
    websocketInit: (_state, ctx) => { connection = ctx },
    handle: async () => {
      await gate
      handled++
      return undefined
    },
    info: () => ({ reply: text(`handled ${handled}`) })
  }, { mailboxLimit: 4 })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/blocked`)
  const chunk = 'x'.repeat(64 * 1024)
  for (let i = 0; i < 600; i++) ws.send(chunk) // ~39 MB: more than the kernel buffers hold (32 MB + 4 MB here)
  await sleep(300)
  t.ok(ws.bufferedAmount > 1024 * 1024, `the server stopped reading: ${ws.bufferedAmount} bytes still wait in the client`)
  release()
  await until(() => handled === 600)
  connection!.post('count') // the info queues behind every frame: all 600 were handled first
  t.same(await seen.frameCount(1), ['text:handled 600'])
  ws.close()
})

t.test('active: false stops reading until a later result says active: true', async (t) => {
  const { app } = await buildApp(t)
  const events: string[] = []
  app.ws('/flow', {
    handle: (frame, _state, ctx: WebSocketContext) => {
      if (frame.type !== 'text') return undefined
      events.push(frame.data)
      if (frame.data === 'pause') {
        ctx.sendAfter(100, 'resume')
        return { active: false }
      }
      return frame.data === 'last' ? { reply: text('done') } : undefined
    },
    info: (message) => {
      events.push(`info:${String(message)}`)
      return { active: true }
    }
  })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/flow`)
  ws.send('pause')
  ws.send('m1')
  ws.send('last')
  await seen.frameCount(1)
  t.same(events, ['pause', 'info:resume', 'm1', 'last'], 'frames after the pause waited for the resume')
  ws.close()
})

t.test('the app posts to a connection by id, and ctx is a handle it can keep', async (t) => {
  const { app } = await buildApp(t)
  const kept: Array<WebSocketContext<string>> = []
  app.ws('/room', defineHandler<undefined, string>({
    websocketInit: (_state, ctx) => {
      kept.push(ctx)
      return { reply: text(ctx.id) }
    },
    info: (message) => ({ reply: text(`info:${String(message)}`) })
  }))
  app.post('/notify/:id', async (request) => {
    const { id } = request.params as { id: string }
    return { delivered: app.wsConnections.post(id, String(request.body)) }
  })
  const { ws, seen } = await inject(app, '/room')
  const [idFrame] = await seen.frameCount(1)
  const id = idFrame!.slice('text:'.length)
  t.equal(app.wsConnections.get(id), kept[0], 'the registry finds the connection by id')
  t.equal(app.wsConnections.size, 1)
  const response = await app.inject({ method: 'POST', url: `/notify/${id}`, payload: 'from http', headers: { 'content-type': 'text/plain' } })
  t.same(response.json(), { delivered: true })
  t.ok(kept[0]!.post('from a kept handle'))
  t.same(await seen.frameCount(3), [`text:${id}`, 'text:info:from http', 'text:info:from a kept handle'])
  ws.close()
  await until(() => app.wsConnections.size === 0)
  t.notOk(kept[0]!.alive)
  t.notOk(kept[0]!.post('too late'), 'posting to a closed connection returns false')
  t.notOk(app.wsConnections.post(id, 'too late'))
  t.equal(app.wsConnections.get(id), undefined)
})

t.test('ids that only look like a live connection\'s find nothing', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/room', { websocketInit: (_state, ctx) => ({ reply: text(ctx.id) }) })
  const { ws, seen } = await inject(app, '/room')
  const [idFrame] = await seen.frameCount(1)
  const id = idFrame!.slice('text:'.length)
  const [instance, serial] = id.split('-') as [string, string]
  t.ok(app.wsConnections.get(id), 'the id itself')
  for (const alike of [`${instance}-0${serial}`, `${instance}-${serial.toUpperCase()}x`, `${instance}-`, `${instance}-${'z'.repeat(40)}`, instance, `${serial}-${instance}`, '']) {
    t.equal(app.wsConnections.get(alike), undefined, JSON.stringify(alike))
    t.notOk(app.wsConnections.post(alike, 'hello'), `post to ${JSON.stringify(alike)}`)
  }
  ws.close()
})

t.test('one connection posts to another (a chat room in miniature)', async (t) => {
  const { app } = await buildApp(t)
  const members = new Set<WebSocketContext<string>>()
  app.ws('/chat', defineHandler<undefined, string>({
    websocketInit: (_state, ctx) => { members.add(ctx) },
    handle: (frame, _state, ctx) => {
      if (frame.type === 'text') for (const member of members) if (member !== ctx) member.post(frame.data)
    },
    info: (message) => ({ reply: text(String(message)) }),
    terminate: () => {}
  }))
  const a = await inject(app, '/chat')
  const b = await inject(app, '/chat')
  a.ws.send('hello b')
  t.same(await b.seen.frameCount(1), ['text:hello b'])
  t.same(a.seen.frames, [])
  a.ws.close()
  b.ws.close()
})

t.test('sendAfter delivers the message; startTimer delivers { type: timeout, ref, message }; cancelTimer stops one', async (t) => {
  const { app } = await buildApp(t)
  const infos: unknown[] = []
  let refs: Record<string, number> = {}
  app.ws('/timers', defineHandler<undefined, string | TimeoutMessage<string>>({
    websocketInit: (_state, ctx) => {
      t.notOk(ctx.cancelTimer(12345), 'cancelTimer is false before any timer')
      refs = {
        after: ctx.sendAfter(10, 'after'),
        timer: ctx.startTimer(20, 'timer'),
        cancelled: ctx.startTimer(30, 'cancelled')
      }
      t.ok(ctx.cancelTimer(refs.cancelled!), 'cancelTimer is true for a pending timer')
      t.notOk(ctx.cancelTimer(refs.cancelled!), 'and false the second time')
      ctx.sendAfter(60, 'last')
    },
    info: (message, _state, ctx) => {
      infos.push(message)
      if (message === 'after') t.notOk(ctx.cancelTimer(refs.after!), 'cancelTimer is false once fired')
      return message === 'last' ? { reply: text('done') } : undefined
    }
  }))
  const { ws, seen } = await inject(app, '/timers')
  await seen.frameCount(1)
  t.same(infos, ['after', { type: 'timeout', ref: refs.timer, message: 'timer' }, 'last'])
  ws.close()
})

t.test('timers end at terminate: nothing is delivered after, no timer is left', async (t) => {
  const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  let delivered = 0
  let ctxOf: WebSocketContext | undefined
  app.ws('/t', {
    websocketInit: (_state, ctx) => {
      ctxOf = ctx
      ctx.sendAfter(200, 'late')
      ctx.startTimer(200, 'late')
    },
    info: () => { delivered++ },
    terminate: recorder.terminate
  })
  const base = await listen(app)
  const before = timeouts()
  const { ws, seen } = await connect(`${base}/t`)
  t.ok(timeouts() > before, 'the connection has timers while open')
  ws.close()
  await recorder.first
  await seen.closed
  // Exact counts are in leaks.test.ts; here other tests' timers may expire meanwhile.
  t.ok(timeouts() <= before, 'the connection timers were cleared')
  ctxOf!.sendAfter(1, 'after the end')
  t.type(ctxOf!.startTimer(1, 'after the end'), 'number', 'a ref, and nothing else')
  await sleep(300)
  t.equal(delivered, 0)
})

t.test('a timer with a bad delay is a crash with a coded error', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/bad-timer', {
    websocketInit: (_state, ctx) => { ctx.sendAfter(Number.NaN, 'x') },
    terminate: recorder.terminate
  })
  const { seen } = await inject(app, '/bad-timer')
  t.equal((await seen.closed).code, 1011)
  t.match((await recorder.first).reason, { type: 'crash', error: { code: 'FST_WS_INVALID_TIMER' } })
})

t.test("terminate's own throw or rejection is logged and never reaches the server", async (t) => {
  const { app, errors } = await buildApp(t)
  app.ws('/sync', { terminate: () => { throw new Error('sync terminate failure') } })
  app.ws('/async', { terminate: async () => { throw new Error('async terminate failure') } })
  for (const url of ['/sync', '/async']) {
    const { ws } = await inject(app, url)
    ws.close()
  }
  await until(() => app.wsConnections.size === 0)
  t.same(errors.map((e) => [e.msg, (e.err as { message: string }).message]), [
    ['WebSocket terminate threw', 'sync terminate failure'],
    ['WebSocket terminate threw', 'async terminate failure']
  ])
})

t.test('a reply from a callback that settles after the peer closed is dropped; terminate sees its state', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/late', {
    handle: async () => {
      await sleep(50)
      return { state: 'from the late callback', reply: text('too late') }
    },
    terminate: recorder.terminate
  })
  const { ws, seen } = await inject(app, '/late')
  ws.send('slow')
  ws.close(4001)
  const { reason, state } = await recorder.first
  t.match(reason, { type: 'remote', code: 4001 })
  t.equal(state, 'from the late callback', 'terminate waited for the callback in progress')
  t.same(seen.frames, [])
})

t.test('a handler without info ignores posted messages', async (t) => {
  const { app } = await buildApp(t)
  app.ws('/no-info', {
    websocketInit: (_state, ctx) => { ctx.post('ignored') },
    handle: () => ({ reply: text('still here') })
  })
  const { ws, seen } = await inject(app, '/no-info')
  ws.send('x')
  t.same(await seen.frameCount(1), ['text:still here'])
  ws.close()
})

t.test('ctx is what the typed API says: no socket or internal state to reach around the mailbox', async (t) => {
  const { app } = await buildApp(t)
  let ctxOf: WebSocketContext | undefined
  app.ws('/ctx', { websocketInit: (_state, ctx) => { ctxOf = ctx } })
  const { ws } = await inject(app, '/ctx')
  t.same(Object.keys(ctxOf!), ['request'], 'its own keys: the request (id is a getter: the string is made when asked for)')
  t.match(ctxOf!.id, /^[0-9a-f]{8}-1$/)
  for (const name of ['ws', 'route', 'phase', 'socket']) t.equal((ctxOf as unknown as Record<string, unknown>)[name], undefined, `no ctx.${name}`)
  ws.close()
})
