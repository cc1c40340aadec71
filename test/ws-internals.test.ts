/**
 * ws drift fails loudly at startup: registration drives the ws that @fastify/websocket resolves
 * through everything the plugin relies on, and refuses to start (FST_WS_WS_INTERNALS, naming the
 * ws version) when something moved. A failed check is not cached: each registration checks again.
 */
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import Fastify from 'fastify'
import t from 'tap'
import WebSocket from 'ws'
import wsHandlers from '../lib/index.js'
import { checkWs } from '../lib/wire/ws-check.js'
import { hookSocketData, resolveWs, wsInternalsProblem } from '../lib/wire/ws-internals.js'

type Patchable = { prototype: Record<string, (...args: any[]) => any> }
// The ws that @fastify/websocket loads (CommonJS), whose prototypes its sockets share.
const Receiver = (resolveWs().ws as unknown as { Receiver: Patchable }).Receiver

/** A WebSocket-shaped object; its socket (if it has one) links back to it, as ws's sockets do. */
function fake (shape: { _socket?: object, [field: string]: unknown }): WebSocket {
  const ws = { ...shape, _socket: shape._socket === undefined ? undefined : { ...shape._socket } }
  if (ws._socket !== undefined) Object.assign(ws._socket, { [Symbol('websocket')]: ws })
  return ws as unknown as WebSocket
}
const receiver = Object.assign(new EventEmitter(), { _maxPayload: 0, _skipUTF8Validation: false, _state: 0, _fragmented: 0 })
const good = { _closeTimeout: 1, _socket: { cork () {} }, _receiver: receiver, _sender: { _state: 0, _queue: [] }, _extensions: {} }

t.test('fields that moved are named field by field', async (t) => {
  t.equal(wsInternalsProblem(fake({})), '_closeTimeout, _socket, _receiver, _sender._state/_queue, _extensions not found')
  t.equal(wsInternalsProblem(fake({ ...good, _receiver: Object.assign(new EventEmitter(), { _maxPayload: '0' }) })),
    '_receiver._maxPayload, _receiver._state, _receiver._fragmented, _receiver._skipUTF8Validation not found')
  t.equal(wsInternalsProblem(fake(good)), undefined)
  t.equal(wsInternalsProblem({ ...good } as unknown as WebSocket), '_socket[websocket] not found')
})

t.test('the ws that @fastify/websocket resolves is the one checked; another 8.x passes by behaviour, another major does not', async (t) => {
  const { ws } = resolveWs()
  t.equal(ws.WebSocket, WebSocket, 'the same ws as this project (deduped)')
  await t.rejects(checkWs(() => ({ ws, version: '9.0.0' })), {
    code: 'FST_WS_WS_INTERNALS',
    message: /ws 9\.0\.0 \(used by @fastify\/websocket\).*not ws 8.*8\.23\.x.*"overrides": \{ "ws": "~8\.23\.0" \}/
  })
  await checkWs(() => ({ ws, version: '8.24.0' })) // behaves as 8.23 does: accepted
  t.pass('a newer 8.x that passes the behaviour check is accepted')
})

t.test('package.json pins ws to the tested minor, so a fresh install gets what is tested', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> }
  t.equal(pkg.dependencies.ws, '~8.23.0')
})

t.test('a ws release that renames the private "conclude" event stops registration', async (t) => {
  const emit = Receiver.prototype.emit!
  // Simulated drift: the receiver announces the peer's close frame under another name.
  Receiver.prototype.emit = function (this: EventEmitter, name: string | symbol, ...args: unknown[]) {
    return emit.call(this, name === 'conclude' ? 'close-frame' : name, ...args)
  }
  t.teardown(() => { Receiver.prototype.emit = emit })
  const app = Fastify()
  await t.rejects(async () => { await app.register(wsHandlers) }, { code: 'FST_WS_WS_INTERNALS', message: /"conclude"/ })
})

t.test('a ws release whose errors no longer carry the close code sent stops registration', async (t) => {
  const createError = Receiver.prototype.createError!
  // Simulated drift: the same error, without the private "status-code" symbol.
  Receiver.prototype.createError = function (this: unknown, ...args: unknown[]) {
    const original = createError.apply(this, args) as Error & { code: string }
    return Object.assign(new RangeError(original.message), { code: original.code })
  }
  t.teardown(() => { Receiver.prototype.createError = createError })
  await t.rejects(checkWs(), { code: 'FST_WS_WS_INTERNALS', message: /status-code/ })
})

t.test('the real ws passes, and later registrations do not check again', async (t) => {
  await checkWs()
  // The check passed once: drift introduced now (it would fail a check, as above) goes unseen.
  const emit = Receiver.prototype.emit!
  let conclusions = 0
  Receiver.prototype.emit = function (this: EventEmitter, name: string | symbol, ...args: unknown[]) {
    if (name === 'conclude') conclusions++
    return emit.call(this, name === 'conclude' ? 'close-frame' : name, ...args)
  }
  t.teardown(() => { Receiver.prototype.emit = emit })
  const app = Fastify()
  await app.register(wsHandlers)
  await app.ready()
  t.equal(conclusions, 0, 'no close frame went through a receiver: nothing was checked')
  await app.close()
})

t.test('hookSocketData: ws\'s one data listener is wrapped (no second listener), hooking twice is once, and ws still removes it', async (t) => {
  const kWebSocket = Symbol('websocket')
  const socket = new EventEmitter()
  const ws = { _socket: socket } as unknown as WebSocket
  Object.assign(socket, { [kWebSocket]: ws })
  const parsed: string[] = []
  function socketOnData (chunk: Buffer): void { parsed.push(`ws:${chunk.toString()}`) }
  socket.on('data', socketOnData)
  const heard: Array<WebSocket | undefined> = []
  const onData = (of: WebSocket | undefined): void => { heard.push(of); parsed.push('heard') }
  hookSocketData(ws, onData)
  hookSocketData(ws, onData)
  t.equal(socket.rawListeners('data').length, 1, 'still one listener')
  t.same(socket.listeners('data'), [socketOnData], 'it unwraps to ws\'s own, as a once wrapper does')
  socket.emit('data', Buffer.from('a'))
  t.same(parsed, ['heard', 'ws:a'], 'heard before ws parses the chunk')
  t.same(heard, [ws])
  Object.assign(socket, { [kWebSocket]: undefined }) // ws lets the socket go at its close
  socket.emit('data', Buffer.from('b'))
  t.same(heard, [ws, undefined])
  socket.removeListener('data', socketOnData) // as ws does at its close
  t.equal(socket.listenerCount('data'), 0, 'ws\'s removeListener removed the wrapper')
})

t.test('hookSocketData: a socket with other data listeners gets a listener of its own', async (t) => {
  const socket = new EventEmitter()
  const ws = { _socket: socket } as unknown as WebSocket
  Object.assign(socket, { [Symbol('websocket')]: ws })
  socket.on('data', () => {})
  socket.on('data', () => {})
  const heard: Array<WebSocket | undefined> = []
  hookSocketData(ws, (of) => { heard.push(of) })
  t.equal(socket.listenerCount('data'), 3)
  socket.emit('data', Buffer.from('a'))
  t.same(heard, [ws])
})
