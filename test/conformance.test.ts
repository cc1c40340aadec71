/**
 * RFC 6455 §5 on a raw socket: each frame a client can get wrong, with the close code read off
 * the wire and the terminate reason, which must agree. One row per ws error code it can raise.
 */
import { deflateRawSync, constants as zlib } from 'node:zlib'
import t from 'tap'
import { RawClient, buildApp, listen, terminateRecorder } from './helpers.js'

const frame = RawClient.frame

/** A frame header with a 64-bit length, and nothing after it. */
function hugeLengthHeader (high: number): Buffer {
  const header = Buffer.from([0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0])
  header.writeUInt32BE(high, 2)
  return Buffer.concat([header, Buffer.from([1, 2, 3, 4])]) // and a mask key
}

const compressedHello = deflateRawSync('hello', { finishFlush: zlib.Z_SYNC_FLUSH }).subarray(0, -4)

const cases: Array<{ name: string, bytes: Buffer, code: number, wsError: string, path?: string }> = [
  { name: 'RSV2 or RSV3 set', bytes: Buffer.from([0xa1, 0x80, 1, 2, 3, 4]), code: 1002, wsError: 'WS_ERR_UNEXPECTED_RSV_2_3' },
  { name: 'RSV1 set without permessage-deflate', bytes: Buffer.from([0xc1, 0x80, 1, 2, 3, 4]), code: 1002, wsError: 'WS_ERR_UNEXPECTED_RSV_1' },
  { name: 'a reserved opcode (0x3)', bytes: frame(0x3, 'x'), code: 1002, wsError: 'WS_ERR_INVALID_OPCODE' },
  { name: 'a continuation with nothing to continue', bytes: frame(0x0, 'x'), code: 1002, wsError: 'WS_ERR_INVALID_OPCODE' },
  { name: 'a new message inside a fragmented one', bytes: Buffer.concat([frame(0x1, 'a', { fin: false }), frame(0x1, 'b')]), code: 1002, wsError: 'WS_ERR_INVALID_OPCODE' },
  { name: 'a fragmented control frame', bytes: frame(0x9, 'x', { fin: false }), code: 1002, wsError: 'WS_ERR_EXPECTED_FIN' },
  { name: 'a control frame over 125 bytes', bytes: frame(0x9, 'x'.repeat(126)), code: 1002, wsError: 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH' },
  { name: 'a close frame of one byte', bytes: frame(0x8, Buffer.from([3])), code: 1002, wsError: 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH' },
  { name: 'an unmasked client frame', bytes: frame(0x1, 'x', { masked: false }), code: 1002, wsError: 'WS_ERR_EXPECTED_MASK' },
  { name: 'a close code that may not be sent (1005)', bytes: frame(0x8, Buffer.from([0x03, 0xed])), code: 1002, wsError: 'WS_ERR_INVALID_CLOSE_CODE' },
  { name: 'a close code out of range (999)', bytes: frame(0x8, Buffer.from([0x03, 0xe7])), code: 1002, wsError: 'WS_ERR_INVALID_CLOSE_CODE' },
  // RFC 6455 §5.2 says the top bit must be 0; ws answers every length past 2^53 - 1 with 1009.
  { name: 'a 64-bit length with its top bit set', bytes: hugeLengthHeader(0x80000000), code: 1009, wsError: 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH' },
  { name: 'a frame over maxFrameSize', bytes: frame(0x2, Buffer.alloc(1001)), code: 1009, wsError: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' },
  { name: 'fragments over maxFrameSize together', bytes: Buffer.concat([frame(0x2, Buffer.alloc(600), { fin: false }), frame(0x0, Buffer.alloc(600))]), code: 1009, wsError: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' },
  { name: 'invalid UTF-8 in a text frame', bytes: frame(0x1, Buffer.from([0xc3, 0x28])), code: 1007, wsError: 'WS_ERR_INVALID_UTF8' },
  { name: 'invalid UTF-8 in a close reason', bytes: frame(0x8, Buffer.from([0x03, 0xe8, 0xc3, 0x28])), code: 1007, wsError: 'WS_ERR_INVALID_UTF8' },
  {
    name: 'corrupt compressed data',
    bytes: Buffer.concat([Buffer.from([0xc1, 0x80 | 4]), Buffer.from([1, 2, 3, 4]), Buffer.from([0xff, 0xff, 0xff, 0xff].map((b, i) => b ^ [1, 2, 3, 4][i]!))]),
    code: 1007,
    wsError: 'Z_DATA_ERROR',
    path: '/compressed'
  },
  {
    name: 'a compressed message that inflates past maxFrameSize',
    bytes: (() => {
      const data = deflateRawSync(Buffer.alloc(5000), { finishFlush: zlib.Z_SYNC_FLUSH }).subarray(0, -4)
      const masked = frame(0x2, data)
      masked[0] = masked[0]! | 0x40
      return masked
    })(),
    code: 1009,
    wsError: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH',
    path: '/compressed'
  }
]

t.test('every frame a client can get wrong: the wire and terminate agree', async (t) => {
  const { app } = await buildApp(t, { maxFrameSize: 1000, closeTimeout: 200 })
  const reasons = new Map<string, ReturnType<typeof terminateRecorder>>()
  for (const path of ['/plain', '/compressed']) {
    app.ws(path, {
      init: (request) => {
        const recorder = terminateRecorder()
        reasons.set(String((request.query as { case: string }).case), recorder)
        return { state: undefined }
      },
      terminate: (reason, request, state) => reasons.get(String((request.query as { case: string }).case))!.terminate(reason, request, state)
    }, { compress: path === '/compressed', keepHeaders: [] })
  }
  const base = await listen(app)
  for (const [index, { name, bytes, code, wsError, path = '/plain' }] of cases.entries()) {
    const client = await RawClient.open(base, `${path}?case=${index}`, path === '/compressed' ? { extensions: 'permessage-deflate' } : {})
    client.send(bytes)
    t.equal(await client.closeCode(), code, `${name}: close ${code} on the wire`)
    const { reason } = await reasons.get(String(index))!.first
    t.match(reason, { type: 'error', code, error: { code: wsError } }, `${name}: terminate says ${code} (${wsError})`)
  }
})

t.test('a frame split at every byte is still one frame', async (t) => {
  const { app } = await buildApp(t)
  const got: string[] = []
  app.ws('/bytes', { handle: (frame) => { if (frame.type === 'text') got.push(frame.data) } })
  const base = await listen(app)
  const client = await RawClient.open(base, '/bytes')
  const bytes = Buffer.concat([frame(0x1, 'héllo', { fin: false }), frame(0x9, 'ping'), frame(0x0, ' wörld')])
  for (const byte of bytes) client.send(Buffer.from([byte]))
  client.send(frame(0x8, Buffer.from([0x03, 0xe8])))
  t.equal(await client.closeCode(), 1000)
  t.same(got, ['héllo wörld'])
  t.ok(client.frames.some((f) => f.opcode === 0xa && String(f.payload) === 'ping'), 'the ping between fragments was answered')
})

t.test('a compressed message is inflated where compression was negotiated', async (t) => {
  const { app } = await buildApp(t, { compress: true })
  const got: string[] = []
  app.ws('/deflate', { handle: (frame) => { if (frame.type === 'text') got.push(frame.data) } })
  const base = await listen(app)
  const client = await RawClient.open(base, '/deflate', { extensions: 'permessage-deflate' })
  const compressed = frame(0x1, compressedHello)
  compressed[0] = compressed[0]! | 0x40
  client.send(compressed)
  client.send(frame(0x8, Buffer.from([0x03, 0xe8])))
  t.equal(await client.closeCode(), 1000)
  t.same(got, ['hello'])
})
