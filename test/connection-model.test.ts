/**
 * The connection against a model (fast-check `fc.scheduler`): async `handle` and `info` whose
 * results settle in an order fast-check chooses, interleaved with frames, posts, the peer's
 * close and closes the server decides (`stop`, a throw, a drain). Whatever the order, the
 * connection keeps its promises: one callback at a time, none after `terminate`, `terminate`
 * exactly once, nothing written and no ping after the connection ended. A connection whose
 * reading is paused sees its peer go at the idle timeout (as Cowboy's), so every run has one.
 */
import fc from 'fast-check'
import t from 'tap'
import WebSocket from 'ws'
import { defineHandler, text, type Commands, type WebSocketContext } from '../lib/index.js'
import { buildApp, inject, modelRuns, pingsToClosedSockets, until } from './helpers.js'

/** What a frame or a post asks the handler to return (each as a promise the scheduler settles). */
const asks = ['nothing', 'reply', 'options', 'pause', 'resume', 'stop', 'throw', 'state'] as const
type Ask = typeof asks[number]

function resultOf (ask: Ask, count: number): Commands<unknown> | undefined {
  switch (ask) {
    case 'nothing': return undefined
    case 'reply': return { reply: text(`r${count}`) }
    case 'options': return { options: { pingInterval: 5, idleTimeout: 40 } }
    case 'pause': return { active: false }
    case 'resume': return { active: true }
    case 'stop': return { stop: true }
    case 'state': return { state: count }
    case 'throw': throw new Error('the handler failed')
  }
}

type Action = { kind: 'frame', ask: Ask } | { kind: 'post', ask: Ask } | { kind: 'settle' } | { kind: 'peerCloses' } | { kind: 'drain' }

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.constantFrom(...asks).map((ask) => ({ kind: 'frame' as const, ask })),
  fc.constantFrom(...asks).map((ask) => ({ kind: 'post' as const, ask })),
  fc.constant({ kind: 'settle' as const }),
  fc.constant({ kind: 'settle' as const }),
  fc.constant({ kind: 'peerCloses' as const }),
  fc.constant({ kind: 'drain' as const })
)

/** Writes by the server to sockets that are no longer open (there must be none). */
function sendsToClosedSockets (t: { teardown(fn: () => unknown): void }): { count: number } {
  const seen = { count: 0 }
  const send = WebSocket.prototype.send
  WebSocket.prototype.send = function (this: WebSocket, ...args: unknown[]) {
    if (this.readyState !== WebSocket.OPEN) seen.count++
    return (send as (...args: unknown[]) => void).apply(this, args)
  } as WebSocket['send']
  t.teardown(() => { WebSocket.prototype.send = send })
  return seen
}

t.test('whatever order async results settle in, a connection runs one callback at a time, none after terminate, terminate once, no write or ping after its end', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 })
  const pings = pingsToClosedSockets(t)
  const sends = sendsToClosedSockets(t)
  interface Run { scheduler: fc.Scheduler, running: number, overlapped: boolean, terminated: number, afterTerminate: string[], count: number, state: unknown }
  const runs = new Map<WebSocketContext<string>, Run>()
  let current: Run | undefined
  const callback = async (ctx: WebSocketContext<string>, name: string, ask: Ask): Promise<Commands<unknown> | undefined> => {
    const run = runs.get(ctx)!
    if (run.terminated > 0) run.afterTerminate.push(name)
    if (++run.running > 1) run.overlapped = true
    const count = ++run.count
    return await run.scheduler.schedule(Promise.resolve(), `${name} ${ask}`).then(() => {
      run.running--
      return resultOf(ask, count)
    })
  }
  app.ws('/model', defineHandler<unknown, string>({
    websocketInit: (_state, ctx) => { runs.set(ctx, current!) },
    handle: async (frame, _state, ctx) => await callback(ctx, 'handle', frame.type === 'text' ? frame.data as Ask : 'nothing'),
    info: async (message: string, _state, ctx) => await callback(ctx, 'info', message as Ask),
    terminate: (_reason, request, state) => {
      for (const [ctx, run] of runs) if (ctx.request.id === request.id) { run.terminated++; run.state = state }
    }
  }), { idleTimeout: 50, pingInterval: 0 }) // reading paused by `active: false` sees the peer go only at the idle timeout, as in Cowboy

  await fc.assert(fc.asyncProperty(fc.scheduler(), fc.array(action, { minLength: 1, maxLength: 12 }), async (scheduler, actions) => {
    const run: Run = { scheduler, running: 0, overlapped: false, terminated: 0, afterTerminate: [], count: 0, state: undefined }
    current = run
    const { ws } = await inject(app, '/model')
    await until(() => [...runs.values()].includes(run), 'websocketInit ran')
    const ctx = [...runs].find(([, r]) => r === run)![0]
    for (const step of actions) {
      if (step.kind === 'frame' && ws.readyState === WebSocket.OPEN) ws.send(step.ask)
      else if (step.kind === 'post') ctx.post(step.ask)
      else if (step.kind === 'settle' && scheduler.count() > 0) await scheduler.waitOne()
      else if (step.kind === 'peerCloses') ws.terminate()
      else if (step.kind === 'drain') ctx.post('stop')
      await new Promise((resolve) => setImmediate(resolve))
    }
    ws.terminate() // the peer goes in the end, whatever else happened
    while (run.terminated === 0) {
      if (scheduler.count() > 0) await scheduler.waitAll()
      await new Promise((resolve) => setImmediate(resolve))
    }
    await scheduler.waitAll()
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
    runs.delete(ctx)
    if (run.overlapped) throw new Error('two callbacks ran at once')
    if (run.terminated !== 1) throw new Error(`terminate ran ${run.terminated} times`)
    if (run.afterTerminate.length > 0) throw new Error(`${run.afterTerminate.join(', ')} after terminate`)
  }), { ...modelRuns(150), timeout: 5000 })
  t.equal(sends.count, 0, 'nothing written to a socket that had ended')
  t.equal(pings.count, 0, 'no ping to a socket that had ended')
  await until(() => app.wsConnections.size === 0, 'every connection gone')
})
