/**
 * Fuzzing what comes from outside, with fixed seeds and bounded counts (the same inputs every
 * run): JSON routes (random text, schema-shaped and mutated messages, huge numbers, deep
 * nesting, long multi-byte keys), handshake headers (origin, subprotocols, extensions, key and
 * version), and floods of invalid messages on an error-frame route. The process stays up, every
 * connection ends with a documented code, and nothing is left behind. (Frames: conformance.test.ts;
 * the Redis wire format: redis.test.ts.)
 */
import net from 'node:net'
import { once } from 'node:events'
import t from 'tap'
import { json } from '../lib/index.js'
import { wsClient } from '../lib/testing.js'
import { RawClient, buildApp, listen, terminateRecorder, until } from './helpers.js'
import { bytes, mutate, pick, random } from './fuzz.js'

const schema = {
  type: 'object',
  properties: {
    type: { enum: ['say', 'join'] },
    text: { type: 'string', maxLength: 200 },
    tags: { type: 'object', additionalProperties: { type: 'number' } },
    nested: { type: 'array', items: { type: 'array' } }
  },
  required: ['type'],
  additionalProperties: false
}

/** Codes a JSON route may end a connection with (README: JSON messages, Limits). */
const documented = new Set([1000, 1003, 1007, 1008, 1009])

/** One message as a fuzzer would write it. */
function message (next: (n: number) => number): string | Buffer {
  const multiByte = ['é', '€', '😀', 'ü', 'a', '"', '\\', '\u0000']
  const word = (length: number): string => Array.from({ length }, () => pick(next, multiByte)).join('')
  switch (next(9)) {
    case 0: return bytes(next, next(40)).toString('latin1') // random text
    case 1: return bytes(next, next(40)) // a binary frame
    case 2: return JSON.stringify({ type: 'say', text: word(next(300)) })
    case 3: return JSON.stringify({ type: 'join', tags: { [word(20 + next(80))]: 'not a number' } }) // the key lands in the reason
    case 4: return `{"type":"say","n":${'9'.repeat(1 + next(400))}}` // huge numbers
    case 5: return `{"type":"say","n":1e${next(1000)}}`
    case 6: { const depth = 1 + next(20_000); return `{"type":"say","nested":[${'['.repeat(depth)}${']'.repeat(depth)}]}` } // deep nesting
    case 7: return mutate(next, Buffer.from(JSON.stringify({ type: 'say', text: word(10) }))).toString()
    default: return JSON.stringify({ type: pick(next, ['say', 'join', 'leave', 7, null]), text: word(next(10)) })
  }
}

t.test('fuzz: 400 messages on a JSON route that closes on bad input: every connection ends with a documented code', async (t) => {
  const { app, errors } = await buildApp(t)
  app.ws('/json', { handle: (frame) => frame.type === 'json' ? { reply: json('ok') } : undefined }, { json: { schema } })
  const next = random(7)
  const codes = new Map<number, number>()
  for (let i = 0; i < 400; i++) {
    const client = await wsClient(app, '/json')
    client.send(message(next))
    const answer = await Promise.race([client.next().then(() => 'answered', () => 'closed'), client.closed().then(() => 'closed')])
    if (answer === 'answered') client.close(1000)
    const { code } = await client.closed()
    codes.set(code, (codes.get(code) ?? 0) + 1)
  }
  const undocumented = [...codes.keys()].filter((code) => !documented.has(code))
  t.same(undocumented, [], `codes seen: ${JSON.stringify(Object.fromEntries(codes))}`)
  t.ok(codes.size >= 3, 'the fuzz reached several outcomes')
  t.same(errors, [], 'nothing logged at error level: no crash, no internal fault')
  await until(() => app.wsConnections.size === 0, 'every connection gone')
})

t.test('fuzz: a flood of messages on an error-frame route is answered in order, then the connection goes on', async (t) => {
  const { app, errors } = await buildApp(t)
  app.ws('/json', { handle: (frame) => frame.type === 'json' ? { reply: json('ok') } : undefined }, { json: { schema, onInvalid: 'error-frame' } })
  const next = random(11)
  const client = await wsClient(app, '/json', { timeoutMs: 10_000 })
  const sent: Array<string | Buffer> = []
  for (let i = 0; i < 2000; i++) {
    let text = message(next)
    if (Buffer.isBuffer(text) || !Buffer.from(text).equals(Buffer.from(text.toString()))) text = 'not json' // text frames must be UTF-8 here
    sent.push(text)
    client.send(text)
  }
  let ok = 0
  let refused = 0
  for (let i = 0; i < sent.length; i++) {
    const reply = await client.nextJson<string | { type: string, code: number }>()
    if (reply === 'ok') ok++
    else if (typeof reply === 'object' && reply.type === 'error' && documented.has(reply.code)) refused++
  }
  t.equal(ok + refused, sent.length, `every message answered once, in order (${ok} ok, ${refused} error frames)`)
  client.sendJson({ type: 'say', text: 'still here' })
  t.equal(await client.nextJson(), 'ok', 'the connection goes on')
  client.close()
  t.same(errors, [])
})

t.test('fuzz: a client that floods bad input and never reads is closed with 1008, and memory stays bounded', async (t) => {
  const { app } = await buildApp(t, { closeTimeout: 100 })
  const recorder = terminateRecorder()
  app.ws('/json', { terminate: recorder.terminate }, { json: { onInvalid: 'error-frame' }, maxBufferedBytes: 64 * 1024 })
  const base = await listen(app)
  const client = await RawClient.open(base, '/json')
  client.socket.on('error', () => {}) // the server resets it: expected
  client.socket.pause() // reads nothing: the error frames pile up on the server
  const bad = RawClient.frame(0x1, 'x'.repeat(1000))
  global.gc?.()
  const before = process.memoryUsage().heapUsed
  let written = 0
  while (!client.socket.destroyed && written < 200_000) {
    if (!client.socket.write(Buffer.concat(Array.from({ length: 100 }, () => bad)))) {
      await Promise.race([once(client.socket, 'drain').catch(() => {}), client.ended]) // 'error' when the server resets it
    }
    written += 100
  }
  await client.ended
  t.match((await recorder.first).reason, { type: 'error', code: 1008, error: { code: 'FST_WS_OUTBOUND_OVERFLOW' } })
  await until(() => app.wsConnections.size === 0, 'the flooder gone')
  global.gc?.()
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 64 * 1024 * 1024, `heap grew by ${Math.round(grown / 1024 / 1024)} MB while ${written} messages were sent`)
  t.ok(written < 200_000, `stopped after ${written} messages: the server closed the connection`)
})

t.test('fuzz: 300 handshakes with random origin, subprotocol, extension, key and version headers get a documented answer', async (t) => {
  const { app, errors } = await buildApp(t, { compress: true, allowOrigins: ['https://*.example.com'] })
  app.ws('/p', {}, { protocols: ['mqtt', 'chat'] })
  const base = await listen(app)
  const { port } = new URL(base)
  const next = random(3)
  const printable = (length: number): string => Array.from({ length }, () => String.fromCharCode(0x20 + next(0x5f))).join('')
  // Mostly the choices (valid and near-valid values), sometimes random printable text.
  const headerValue = (choices: string[]): string => next(6) === 0 ? printable(next(60)) : pick(next, choices)
  const statuses = new Map<string, number>()
  for (let i = 0; i < 300; i++) {
    const headers: Record<string, string> = {
      Origin: headerValue(['https://a.example.com', 'https://example.com', 'null', 'http://evil.example', 'https://a.example.com:99999', '']),
      'Sec-WebSocket-Protocol': headerValue(['mqtt', 'chat, mqtt', 'v12.stomp', ',', 'mqtt,,chat', 'a b']),
      'Sec-WebSocket-Extensions': headerValue(['permessage-deflate', 'permessage-deflate; client_max_window_bits=7', 'permessage-deflate; server_max_window_bits', 'x-unknown', 'permessage-deflate;;']),
      'Sec-WebSocket-Key': next(8) === 0 ? headerValue(['short', '', 'dGhlIHNhbXBsZSBub25jZQ']) : 'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version': next(8) === 0 ? headerValue(['8', '12', 'x']) : '13'
    }
    for (const name of Object.keys(headers)) if (next(6) === 0) delete headers[name]
    const socket = net.connect(Number(port), '127.0.0.1')
    await once(socket, 'connect')
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.write('GET /p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('') + '\r\n')
    await until(() => Buffer.concat(chunks).includes('\r\n\r\n'), 'an answer')
    const status = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'))?.[1] ?? 'none'
    statuses.set(status, (statuses.get(status) ?? 0) + 1)
    socket.destroy()
  }
  const unexpected = [...statuses.keys()].filter((status) => !['101', '400', '403'].includes(status))
  t.same(unexpected, [], `statuses: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.ok(statuses.has('101') && statuses.has('400') && statuses.has('403'), `the fuzz reached upgrades and both refusals: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.same(errors, [], 'nothing logged at error level')
  await until(() => app.wsConnections.size === 0, 'every connection gone')
})
