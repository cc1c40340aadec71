/**
 * The ws internals check: a ws that keeps its fields elsewhere is refused loudly, once per
 * process, on the first connection. (Every other test runs on the real ws, which passes.)
 */
import { EventEmitter } from 'node:events'
import t from 'tap'
import type WebSocket from 'ws'
import { assertWsInternals, wsInternalsProblem } from '../lib/ws-internals.js'

const fake = (shape: object): WebSocket => shape as WebSocket
const receiver = Object.assign(new EventEmitter(), { _maxPayload: 0, _skipUTF8Validation: false, _state: 0, _fragmented: 0 })
const good = fake({ _socket: { cork () {} }, _receiver: receiver, _sender: { _state: 0, _queue: [] }, _extensions: {} })

t.test('a ws without the expected fields is named field by field', async (t) => {
  t.equal(wsInternalsProblem(fake({})), 'ws _socket, _receiver, _sender._state/_queue, _extensions not found')
  t.equal(wsInternalsProblem(fake({ ...good, _receiver: Object.assign(new EventEmitter(), { _maxPayload: '0' }) })),
    'ws _receiver._maxPayload, _receiver._state, _receiver._fragmented, _receiver._skipUTF8Validation not found')
  t.equal(wsInternalsProblem(good), undefined)
})

t.test('the first connection on an unsupported ws throws a coded error; once checked, never again', async (t) => {
  t.throws(() => assertWsInternals(fake({})), { code: 'FST_WS_WS_INTERNALS', message: /use ws 8\.23\.x/ })
  t.doesNotThrow(() => assertWsInternals(good))
  t.doesNotThrow(() => assertWsInternals(fake({})), 'checked once per process')
})
