/**
 * The check that the ws @fastify/websocket resolves still does what this plugin relies on
 * (ws-internals.ts lists each private part and why). It runs once per process at registration:
 * it drives a real server-side ws, from that copy, through each of them on an in-memory socket,
 * and refuses to start (FST_WS_WS_INTERNALS, naming the ws version and the pin that fixes it)
 * when any of it fails. `npm run check:ws-latest` runs the same check against the newest ws on
 * the registry (CI runs it and says when a new ws would break the plugin).
 */
import { once } from 'node:events'
import { constants as zlib, deflateRawSync } from 'node:zlib'
import type WebSocket from 'ws'
import { WsInternalsError } from '../core/errors.js'
import { settledWithin } from '../core/timeout.js'
import { memorySocketPair, type MemorySocket } from './memory-socket.js'
import { RECEIVER_INFLATING, SENDER_DEFAULT, internalsOf, resolveWs, sentCloseCodeOf, wsInternalsProblem } from './ws-internals.js'
import { recycle, zlibPoolStats } from './zlib-pool.js'

/** The ws versions the test suite runs on (package.json pins ws to these: what installs is what is tested). */
export const TESTED_WS = '8.23.x'
/** What an app pins when another ws fails the check: npm's overrides (pnpm.overrides, Yarn's resolutions alike). */
export const WS_PIN_FIX = 'add "overrides": { "ws": "~8.23.0" } to your package.json (pnpm: "pnpm": { "overrides": … }; Yarn: "resolutions") and reinstall'

let checked: Promise<void> | undefined

/**
 * Once per process: the ws that @fastify/websocket uses still does what this plugin relies on.
 * Another ws (`resolve`: the newest on the registry, a test's) is checked each time, not cached.
 */
export async function checkWs (resolve = resolveWs): Promise<void> {
  if (resolve !== resolveWs) return await check(resolve())
  checked ??= check(resolve())
  try {
    await checked
  } catch (error) {
    checked = undefined // a later registration checks again (and fails again, loudly)
    throw error
  }
}

async function check ({ ws, version }: ReturnType<typeof resolveWs>): Promise<void> {
  const fail = (problem: string): never => {
    throw new WsInternalsError(version, problem, TESTED_WS, WS_PIN_FIX)
  }
  // Another 8.x is accepted when it behaves as the plugin relies on (the behaviour check
  // decides, not the version number); another major is not.
  if (!version.startsWith('8.')) fail(`version ${version} is not ws 8`)
  const problem = await behaviourProblem(ws)
  if (problem !== undefined) fail(problem)
}

// ---- the behaviour check, on an in-memory socket pair ----------------------

/** The event's arguments, or [] if it does not come within a second. */
async function within<T> (promise: Promise<T>): Promise<T | []> {
  return (await settledWithin(promise, 1000)) ?? []
}

/** A small (≤ 125 bytes) masked client frame, with RSV1 for a compressed one. */
function clientFrame (opcode: number, payload: Buffer, rsv1 = false): Buffer {
  const mask = Buffer.from([1, 2, 3, 4])
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))
  return Buffer.concat([Buffer.from([0x80 | (rsv1 ? 0x40 : 0) | opcode, 0x80 | payload.length]), mask, masked])
}

async function serverSide (ws: typeof import('ws')): Promise<{ server: WebSocket, client: MemorySocket, fromServer: Buffer[] }> {
  const [serverEnd, client] = memorySocketPair()
  const fromServer: Buffer[] = []
  client.on('data', (chunk: Buffer) => fromServer.push(chunk))
  const wss = new ws.WebSocketServer({ noServer: true, perMessageDeflate: { threshold: 0 } })
  const request = {
    method: 'GET',
    headers: {
      upgrade: 'websocket',
      connection: 'upgrade',
      'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      'sec-websocket-version': '13',
      'sec-websocket-extensions': 'permessage-deflate; client_no_context_takeover'
    },
    socket: {}
  }
  const server = await new Promise<WebSocket>((resolve) => {
    wss.handleUpgrade(request as never, serverEnd as never, Buffer.alloc(0), resolve)
  })
  server.on('error', () => {})
  return { server, client, fromServer }
}

/** The first thing ws does not do as this plugin expects, or undefined. */
async function behaviourProblem (ws: typeof import('ws')): Promise<string | undefined> {
  const opened: WebSocket[] = []
  try {
    return await drive(async () => {
      const pair = await serverSide(ws)
      opened.push(pair.server)
      return pair
    })
  } finally {
    for (const server of opened) server.terminate() // whatever failed, nothing stays open
  }
}

/** A behaviour that ws no longer has: the check stops at the first. */
function expect (holds: boolean, problem: string): void {
  if (!holds) throw new Error(problem)
}

/** The first problem, as a sentence: a failed expectation, or whatever ws threw on the way. */
async function drive (open: () => ReturnType<typeof serverSide>): Promise<string | undefined> {
  try {
    await driveChecks(open)
    return undefined
  } catch (error) {
    return (error as Error).message
  }
}

async function driveChecks (open: () => ReturnType<typeof serverSide>): Promise<void> {
  // 1. Fields, per-connection limits, and the close code carried by ws's errors.
  {
    const { server, client } = await open()
    const shape = wsInternalsProblem(server)
    expect(shape === undefined, shape!)
    const { _receiver: receiver } = internalsOf(server)
    // (Events are awaited from before the write: an in-memory write may be read at once.)
    receiver._skipUTF8Validation = true
    const invalidUtf8 = within(once(server, 'message'))
    client.write(clientFrame(0x1, Buffer.from([0xff])))
    expect((await invalidUtf8).length !== 0, 'setting _receiver._skipUTF8Validation does not skip UTF-8 checks')
    receiver._maxPayload = 4
    const failed = within(once(server, 'error'))
    client.write(clientFrame(0x2, Buffer.alloc(8)))
    const [error] = await failed as [Error | undefined] | []
    expect(error !== undefined, 'setting _receiver._maxPayload does not limit frames')
    expect(sentCloseCodeOf(error!) === 1009, 'ws errors do not carry the close code sent (the "status-code" symbol)')
  }
  // 2. Compression: zlib state guards, releasing contexts, and the peer's close frame.
  const { server, client, fromServer } = await open()
  const deflate = internalsOf(server)._extensions['permessage-deflate']
  expect(typeof deflate?._maxPayload === 'number' && deflate.params?.client_no_context_takeover === true,
    'permessage-deflate state (_extensions, _maxPayload, params) not found')
  // As a peer sends it: a sync-flushed block without its 00 00 ff ff tail (RFC 7692 §7.2.1).
  const compressed = deflateRawSync('hello', { finishFlush: zlib.Z_SYNC_FLUSH }).subarray(0, -4)
  const received = within(once(server, 'message'))
  client.write(clientFrame(0x1, compressed, true))
  const [message] = await received as [Buffer] | []
  expect(String(message) === 'hello' && deflate!._inflate !== null, 'permessage-deflate does not keep its inflater in _inflate')
  const sent = new Promise<void>((resolve) => server.send('hello', () => resolve()))
  const { _sender: sender, _receiver: receiver } = internalsOf(server)
  expect(sender._state !== SENDER_DEFAULT, 'the sender does not show a message being compressed')
  await sent
  expect(sender._state === SENDER_DEFAULT && receiver._state !== RECEIVER_INFLATING && deflate!._deflate !== null,
    'the sender, receiver or deflater state at rest is not as expected')
  expect((fromServer.at(-1)![0]! & 0x40) !== 0, 'the server did not compress')
  // Released contexts go to the pool, and ws takes them from there on the next message.
  expect(typeof deflate!._compress === 'function' && typeof deflate!._decompress === 'function',
    'permessage-deflate has no _compress/_decompress')
  const reused = zlibPoolStats.reused
  recycle(deflate!, 'deflate', deflate!._deflate!)
  deflate!._deflate = null
  recycle(deflate!, 'inflate', deflate!._inflate!)
  deflate!._inflate = null
  const again = within(once(server, 'message'))
  client.write(clientFrame(0x1, compressed, true))
  await new Promise<void>((resolve) => server.send('again', () => resolve()))
  expect(String((await again as [Buffer] | [])[0]) === 'hello', 'ws does not rebuild released zlib contexts')
  expect(zlibPoolStats.reused === reused + 2, 'ws does not take pooled zlib contexts (or its inflater has no "permessage-deflate" owner slot)')
  const concluded = within(once(receiver, 'conclude'))
  client.write(clientFrame(0x8, Buffer.from([0x03, 0xe8, 0x62, 0x79, 0x65]))) // 1000 "bye"
  const conclusion = await concluded as [number, Buffer] | []
  expect(conclusion[0] === 1000 && String(conclusion[1]) === 'bye', 'the receiver does not emit "conclude" for a close frame')
}
