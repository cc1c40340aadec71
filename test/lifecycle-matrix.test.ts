/**
 * Cowboy's test matrix: each callback (websocketInit, handle, info) × each outcome, with what
 * the client receives and what terminate is called with.
 */
import t from 'tap'
import { binary, close, text, type Result, type WebSocketContext } from '../lib/index.js'
import { buildApp, inject, terminateRecorder } from './helpers.js'

type Outcome = () => Result<string> | Promise<Result<string>>

interface Case {
  sentence: string
  outcome: Outcome
  /** Frames the client receives from the callback under test. */
  frames: string[]
  /** The close the client sees; undefined: the connection stays open (the client closes it). */
  close?: { code: number, reason: string }
  /** What terminate sees. */
  reason: Record<string, unknown>
  state: string
}

const cases: Case[] = [
  { sentence: 'returning nothing sends nothing and keeps the state', outcome: () => undefined, frames: [], reason: { type: 'remote', code: 1000 }, state: 'initial' },
  { sentence: 'returning a state only sends nothing and passes the new state on', outcome: () => ({ state: 'changed' }), frames: [], reason: { type: 'remote', code: 1000 }, state: 'changed' },
  { sentence: 'one frame is sent', outcome: () => ({ reply: text('one') }), frames: ['text:one'], reason: { type: 'remote', code: 1000 }, state: 'initial' },
  {
    sentence: 'many frames are sent in order',
    outcome: () => ({ state: 'many', reply: [text('a'), binary(Buffer.from('b')), text('c')] }),
    frames: ['text:a', 'binary:b', 'text:c'],
    reason: { type: 'remote', code: 1000 },
    state: 'many'
  },
  {
    sentence: 'a close frame closes with its code and reason',
    outcome: () => ({ reply: close(4001, 'bye') }),
    frames: [],
    close: { code: 4001, reason: 'bye' },
    reason: { type: 'stop', code: 4001, reason: 'bye' },
    state: 'initial'
  },
  {
    sentence: 'frames before a close are sent and frames after it are not',
    outcome: () => ({ state: 'closing', reply: [text('a'), text('b'), close(4002, 'after b'), text('never')] }),
    frames: ['text:a', 'text:b'],
    close: { code: 4002, reason: 'after b' },
    reason: { type: 'stop', code: 4002, reason: 'after b' },
    state: 'closing'
  },
  {
    sentence: 'stop closes with 1000',
    outcome: () => ({ state: 'stopped', stop: true }),
    frames: [],
    close: { code: 1000, reason: '' },
    reason: { type: 'stop', code: 1000, reason: '' },
    state: 'stopped'
  },
  {
    sentence: 'a result of the wrong shape closes with 1011 and says what was expected',
    outcome: () => ({ repl: text('typo') }) as unknown as Result<string>,
    frames: [],
    close: { code: 1011, reason: '' },
    reason: { type: 'error', code: 1011 },
    state: 'initial'
  },
  {
    sentence: 'a throw closes with 1011 and terminate gets the crash',
    outcome: () => { throw new Error('boom') },
    frames: [],
    close: { code: 1011, reason: '' },
    reason: { type: 'crash' },
    state: 'initial'
  },
  {
    sentence: 'a rejection closes with 1011 and terminate gets the crash',
    outcome: async () => { throw new Error('async boom') },
    frames: [],
    close: { code: 1011, reason: '' },
    reason: { type: 'crash' },
    state: 'initial'
  }
]

type Callback = 'websocketInit' | 'handle' | 'info'

/** A handler whose `callback` returns the outcome; the client sends 'go' to trigger handle and info. */
function handlerFor (callback: Callback, outcome: Outcome, terminate: ReturnType<typeof terminateRecorder>['terminate']) {
  return {
    init: () => ({ state: 'initial' }),
    websocketInit: (state: string) => callback === 'websocketInit' ? outcome() : { state },
    handle: (frame: { type: string, data: unknown }, _state: string, ctx: WebSocketContext) => {
      if (frame.type === 'text' && frame.data === 'go') {
        if (callback === 'handle') return outcome()
        ctx.post('go')
        return undefined
      }
      // A sync point: everything the callback under test sent is before this.
      if (frame.type === 'text' && frame.data === 'check') return { reply: text('checked') }
      return undefined
    },
    info: (_message: unknown) => callback === 'info' ? outcome() : undefined,
    terminate
  }
}

for (const callback of ['websocketInit', 'handle', 'info'] as const) {
  t.test(callback, async (t) => {
    for (const c of cases) {
      t.test(`${callback}: ${c.sentence}`, async (t) => {
        const { app, errors } = await buildApp(t)
        const recorder = terminateRecorder()
        app.ws('/matrix', handlerFor(callback, c.outcome, recorder.terminate))
        const { ws, seen } = await inject(app, '/matrix')
        if (callback !== 'websocketInit') ws.send('go')
        ws.send('check')

        if (c.close === undefined) {
          await seen.frameCount(c.frames.length + 1)
          t.same(seen.frames, [...c.frames, 'text:checked'], 'the client received exactly these frames')
          ws.close(1000)
        } else {
          t.same(await seen.closed, c.close, 'the client saw this close code and reason')
          t.same(seen.frames, c.frames, 'the client received exactly these frames')
        }
        const { reason, state } = await recorder.first
        t.match(reason, c.reason)
        t.equal(state, c.state, 'terminate saw the latest state')
        t.equal(recorder.calls.length, 1, 'terminate ran once')

        if (c.reason.type === 'error') {
          const error = (reason as { error: Error & { code: string } }).error
          t.equal(error.code, 'FST_WS_INVALID_RESULT')
          t.match(error.message, `${callback} returned an invalid result: unknown key "repl"`)
          t.match(error.message, 'expected some of: state, reply, stop, hibernate, active, options')
        }
        if (c.reason.type === 'crash' || c.reason.type === 'error') {
          t.equal(errors.length, 1, 'the failure was logged once')
          t.match(errors[0], { wsRoute: '/matrix', msg: new RegExp(`^WebSocket ${callback} `) })
        } else {
          t.same(errors, [], 'nothing was logged at error level')
        }
      })
    }
  })
}
