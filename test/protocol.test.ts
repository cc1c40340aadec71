/**
 * Protocol duties on a real socket, with frames written byte by byte: close codes are read off
 * the wire (DESIGN.md §5).
 */
import type net from 'node:net'
import t from 'tap'
import { CloseCode, text, type InFrame } from '../lib/index.js'
import { RawClient, buildApp, connect, listen, terminateRecorder, until } from './helpers.js'

const TEXT = 0x1
const BINARY = 0x2
const CLOSE = 0x8
const PING = 0x9

async function rawApp (t: Parameters<typeof buildApp>[0], options = {}) {
  const { app, errors } = await buildApp(t)
  const recorder = terminateRecorder()
  const frames: InFrame[] = []
  app.ws('/raw', {
    handle: (frame) => {
      frames.push(frame)
      return frame.type === 'text' ? { reply: text(`echo:${frame.data.length}`) } : undefined
    },
    terminate: recorder.terminate
  }, options)
  const base = await listen(app)
  return { app, errors, recorder, frames, base }
}

t.test('a frame over maxFrameSize is refused with 1009 from its header alone', async (t) => {
  const { base, recorder } = await rawApp(t, { maxFrameSize: 100 })
  const client = await RawClient.open(base, '/raw')
  // Only the header announcing 101 bytes is sent: the limit is checked before the payload.
  client.send(RawClient.frame(TEXT, 'x'.repeat(101)).subarray(0, 6))
  t.equal(await client.closeCode(), CloseCode.MESSAGE_TOO_BIG)
  const { reason } = await recorder.first
  t.match(reason, { type: 'error', code: 1009, error: { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' } })
})

t.test('maxFrameSize is inclusive: a frame of exactly the limit is delivered', async (t) => {
  const { base, frames } = await rawApp(t, { maxFrameSize: 100 })
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, 'x'.repeat(100)))
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  t.equal(await client.closeCode(), 1000, 'the close handshake echoes the code')
  t.same(frames.map((f) => f.type === 'text' && f.data.length), [100])
  t.equal(client.frames[0]!.payload.toString(), 'echo:100')
})

t.test('fragments are reassembled and the reassembled size counts against maxFrameSize', async (t) => {
  const { base, frames } = await rawApp(t, { maxFrameSize: 10 })
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, 'hello', { fin: false }))
  client.send(RawClient.frame(PING, 'between')) // control frames may come between fragments
  client.send(RawClient.frame(0x0, 'world'))
  client.send(RawClient.frame(TEXT, 'abcdef', { fin: false }))
  client.send(RawClient.frame(0x0, 'ghijk'))
  t.equal(await client.closeCode(), 1009)
  t.same(frames.map((f) => [f.type, String(f.data)]), [['ping', 'between'], ['text', 'helloworld']])
})

t.test('the default maxFrameSize is 1,000,000 bytes, as in Cowboy', async (t) => {
  const { base } = await rawApp(t)
  const ok = await RawClient.open(base, '/raw')
  ok.send(RawClient.frame(BINARY, Buffer.alloc(1_000_000)))
  ok.send(RawClient.frame(TEXT, 'after'))
  ok.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  t.equal(await ok.closeCode(), 1000)
  const tooBig = await RawClient.open(base, '/raw')
  tooBig.send(RawClient.frame(BINARY, Buffer.alloc(1_000_001)).subarray(0, 14))
  t.equal(await tooBig.closeCode(), 1009)
})

t.test('maxFrameSize: Infinity lifts the limit', async (t) => {
  const { app } = await buildApp(t, { maxFrameSize: Infinity })
  const sizes: number[] = []
  app.ws('/unlimited', { handle: (frame) => { sizes.push(frame.data.length) } })
  const base = await listen(app)
  const client = await RawClient.open(base, '/unlimited')
  client.send(RawClient.frame(BINARY, Buffer.alloc(3_000_000)))
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  t.equal(await client.closeCode(), 1000)
  t.same(sizes, [3_000_000])
})

t.test('maxFrameSize can be changed live by a result', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/live', {
    handle: (frame) => frame.type === 'text' && frame.data === 'shrink' ? { options: { maxFrameSize: 4 }, reply: text('shrunk') } : undefined,
    terminate: recorder.terminate
  })
  const base = await listen(app)
  const client = await RawClient.open(base, '/live')
  client.send(RawClient.frame(TEXT, 'longer than four'))
  client.send(RawClient.frame(TEXT, 'shrink'))
  client.send(RawClient.frame(TEXT, 'abcde'))
  t.equal(await client.closeCode(), 1009)
  t.equal(client.frames[0]!.payload.toString(), 'shrunk')
})

t.test('invalid UTF-8 in a text frame closes with 1007', async (t) => {
  const { base, recorder, frames } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, 'fine'))
  client.send(RawClient.frame(TEXT, Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80])))
  t.equal(await client.closeCode(), CloseCode.INVALID_PAYLOAD)
  t.match((await recorder.first).reason, { type: 'error', code: 1007, error: { code: 'WS_ERR_INVALID_UTF8' } })
  t.same(frames.map((f) => f.type), ['text'], 'the frame before the bad one was still handled')
})

t.test('invalid UTF-8 in a close reason closes with 1007', async (t) => {
  const { base } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8, 0xff, 0xfe])))
  t.equal(await client.closeCode(), 1007)
})

t.test('validateUtf8: false delivers invalid text as it came', async (t) => {
  const { base, frames } = await rawApp(t, { validateUtf8: false })
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, Buffer.from([0x61, 0xff, 0x62])))
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  t.equal(await client.closeCode(), 1000)
  t.same(frames.map((f) => f.type), ['text'])
})

t.test('an unmasked client frame closes with 1002', async (t) => {
  const { base, recorder } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, 'naked', { masked: false }))
  t.equal(await client.closeCode(), CloseCode.PROTOCOL_ERROR)
  t.match((await recorder.first).reason, { type: 'error', code: 1002, error: { code: 'WS_ERR_EXPECTED_MASK' } })
})

t.test('a reserved opcode and an oversized control frame close with 1002', async (t) => {
  const { base } = await rawApp(t)
  const reserved = await RawClient.open(base, '/raw')
  reserved.send(RawClient.frame(0x3, 'x'))
  t.equal(await reserved.closeCode(), 1002)
  const bigPing = await RawClient.open(base, '/raw')
  bigPing.send(RawClient.frame(PING, Buffer.alloc(126)))
  t.equal(await bigPing.closeCode(), 1002)
})

t.test('a ping is answered with a pong of the same payload and still delivered to handle', async (t) => {
  const { base, frames } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(PING, 'are you there'))
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  await client.closeCode()
  t.same(client.frames[0], { opcode: 0xa, payload: Buffer.from('are you there') })
  t.same(frames, [{ type: 'ping', data: Buffer.from('are you there') }])
})

t.test('an unsolicited pong is delivered to handle and not answered', async (t) => {
  const { base, frames } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(0xa, 'heartbeat'))
  client.send(RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])))
  await client.closeCode()
  t.same(frames, [{ type: 'pong', data: Buffer.from('heartbeat') }])
  t.same(client.frames.map((f) => f.opcode), [CLOSE])
})

t.test("the peer's close is answered with its code and terminate gets it", async (t) => {
  const { base, recorder } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(CLOSE, Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('see you')])))
  t.equal(await client.closeCode(), 4001)
  t.same((await recorder.first).reason, { type: 'remote', code: 4001, reason: 'see you' })
})

t.test('an empty close frame is answered and terminate sees no code', async (t) => {
  const { base, recorder } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(CLOSE, Buffer.alloc(0)))
  t.equal(await client.closeCode(), undefined)
  t.same((await recorder.first).reason, { type: 'remote', code: undefined, reason: '' })
})

t.test('a socket that drops without a close frame still gets terminate, with closed', async (t) => {
  const { base, recorder } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(RawClient.frame(TEXT, 'then gone'))
  client.socket.destroy()
  t.same((await recorder.first).reason, { type: 'closed' })
  t.equal(recorder.calls.length, 1)
})

t.test('a close the peer never answers does not hold the socket past closeTimeout', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 })
  app.ws('/stop', { websocketInit: () => ({ stop: true }) })
  const base = await listen(app)
  const client = await RawClient.open(base, '/stop')
  client.socket.pause() // never read, never answer the close
  const started = Date.now()
  await client.ended
  t.ok(Date.now() - started < 2000, 'the server destroyed the socket')
})

t.test('data after the close frame in the same write is ignored', async (t) => {
  const { base, frames } = await rawApp(t)
  const client = await RawClient.open(base, '/raw')
  client.send(Buffer.concat([RawClient.frame(TEXT, 'a'), RawClient.frame(CLOSE, Buffer.from([0x03, 0xe8])), RawClient.frame(TEXT, 'b')]))
  t.equal(await client.closeCode(), 1000)
  t.same(frames.map((f) => f.type === 'text' && f.data), ['a'])
})

t.test('compression is negotiated only where the route turns it on', async (t) => {
  const { app } = await buildApp(t)
  const echo = { handle: (frame: InFrame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }
  app.ws('/plain', echo)
  app.ws('/deflate', echo, { compress: true })
  const base = await listen(app)
  const plain = await connect(`${base}/plain`)
  t.equal(plain.headers['sec-websocket-extensions'], undefined)
  const deflate = await connect(`${base}/deflate`)
  t.match(deflate.headers['sec-websocket-extensions'], /permessage-deflate/)
  deflate.ws.send('x'.repeat(5000))
  t.same(await deflate.seen.frameCount(1), ['text:' + 'x'.repeat(5000)])
  plain.ws.close()
  deflate.ws.close()
})

t.test('the inflated size of a compressed message counts against maxFrameSize', async (t) => {
  const { app } = await buildApp(t)
  const recorder = terminateRecorder()
  app.ws('/bomb', { terminate: recorder.terminate }, { compress: true, maxFrameSize: 1000 })
  const base = await listen(app)
  const { ws, seen } = await connect(`${base}/bomb`, undefined, { perMessageDeflate: { threshold: 0 } })
  ws.send('x'.repeat(50_000)) // a few dozen bytes on the wire
  t.equal((await seen.closed).code, 1009)
  t.match((await recorder.first).reason, { type: 'error', code: 1009 })
})

t.test('replies to frames read together leave in one write: one syscall, not one per frame', async (t) => {
  const { app, base } = await rawApp(t)
  let writes = 0
  app.websocketServer.on('connection', (ws) => {
    const socket = (ws as unknown as { _socket: net.Socket & { _write: Function, _writev: Function } })._socket
    const write = socket._write
    const writev = socket._writev
    socket._write = function (...args: unknown[]) { writes++; return write.apply(this, args) }
    socket._writev = function (...args: unknown[]) { writes++; return writev.apply(this, args) }
  })
  const client = await RawClient.open(base, '/raw')
  client.socket.write(Buffer.concat(['a', 'bb', 'ccc', 'dddd', 'eeeee'].map((data) => RawClient.frame(TEXT, data))))
  await until(() => client.frames.length === 5, 'five replies')
  t.same(client.frames.map((frame) => frame.payload.toString()), ['echo:1', 'echo:2', 'echo:3', 'echo:4', 'echo:5'])
  t.equal(writes, 1)
  client.socket.destroy()
})

t.test('an echo sends the received bytes again, without encoding; unvalidated text is encoded from the string', async (t) => {
  const { app } = await buildApp(t)
  const echo = { handle: (frame: InFrame) => frame.type === 'text' ? { reply: text(frame.data) } : undefined }
  app.ws('/checked', echo)
  app.ws('/unchecked', echo, { validateUtf8: false })
  const received: Buffer[] = []
  const sent: unknown[] = []
  app.websocketServer.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => received.push(data))
    const send = ws.send.bind(ws) as (...args: unknown[]) => void
    ws.send = ((data: unknown, ...rest: unknown[]) => {
      sent.push(data)
      send(data, ...rest)
    }) as typeof ws.send
  })
  const base = await listen(app)
  const checked = await RawClient.open(base, '/checked')
  checked.send(RawClient.frame(TEXT, 'héllo'))
  await until(() => checked.frames.length === 1, 'the echo')
  t.equal(checked.frames[0]!.payload.toString(), 'héllo')
  t.equal(sent[0], received[0], 'the very Buffer that was received')
  const unchecked = await RawClient.open(base, '/unchecked')
  unchecked.send(RawClient.frame(TEXT, Buffer.from([0x61, 0xff, 0x62])))
  await until(() => unchecked.frames.length === 1, 'the echo')
  t.same([...unchecked.frames[0]!.payload], [0x61, 0xef, 0xbf, 0xbd, 0x62], 'what the handler saw (U+FFFD), not the invalid bytes')
  t.not(sent[1], received[1])
  checked.socket.destroy()
  unchecked.socket.destroy()
})
