/**
 * Results in, socket writes out: checking what a callback returned, and writing frames. The
 * connection's interpreter (connection.ts) applies the commands; this module holds the parts
 * that need no connection state.
 */
import type { Socket } from 'node:net'
import type WebSocket from 'ws'
import { isSendableCloseCode } from './close-codes.js'
import { anything, liveChecks, mustBe, optionsProblem, shapeChecker, show, type Check } from './options.js'
import type { BroadcastFrame } from './adapter.js'
import type { CloseFrame, Commands, OutFrame } from './types.js'
import { SENDER_DEFAULT, internalsOf } from './ws-internals.js'

const MAX_CONTROL_PAYLOAD = 125
const isBoolean = (value: unknown): boolean => typeof value === 'boolean'

/**
 * Why a callback's result is not a valid result, as a sentence naming what was expected;
 * undefined when it is. One check per command (`satisfies`: a new command cannot go unchecked).
 */
export const resultProblem: Check = shapeChecker({
  state: anything,
  reply: (reply) => Array.isArray(reply) ? framesProblem(reply) : frameProblem(reply),
  stop: mustBe('stop', 'a boolean', isBoolean),
  hibernate: mustBe('hibernate', 'a boolean', isBoolean),
  active: mustBe('active', 'a boolean', isBoolean),
  options: (options) => optionsProblem(options, liveChecks)
} satisfies Record<keyof Commands<unknown>, Check>)

function framesProblem (frames: readonly unknown[]): string | undefined {
  for (let i = 0; i < frames.length; i++) {
    const problem = frameProblem(frames[i])
    if (problem !== undefined) return `reply[${i}]: ${problem}`
  }
  return undefined
}

function frameProblem (frame: unknown): string | undefined {
  if (frame === null || typeof frame !== 'object') return `a frame must be built with text(), binary(), ping(), pong() or close(), got ${show(frame)}`
  const { type, data, code, reason } = frame as Record<string, unknown>
  switch (type) {
    case 'text':
      return typeof data === 'string' ? undefined : `a text frame needs string data, got ${show(data)}`
    case 'binary':
      return data instanceof Uint8Array ? undefined : `a binary frame needs a Buffer or Uint8Array, got ${show(data)}`
    case 'ping':
    case 'pong':
      if (data === undefined) return undefined
      if (typeof data !== 'string' && !(data instanceof Uint8Array)) return `a ${type} payload must be a string, Buffer or Uint8Array, got ${show(data)}`
      return byteLength(data) <= MAX_CONTROL_PAYLOAD ? undefined : `a ${type} payload is at most ${MAX_CONTROL_PAYLOAD} bytes, got ${byteLength(data)}`
    case 'close':
      if (code !== undefined && !isSendableCloseCode(code)) return `close code ${show(code)} cannot be sent (1000-1003, 1007-1014 or 3000-4999)`
      // A longer reason is cut when it is sent (fitCloseReason): the close code is what matters.
      return reason === undefined || typeof reason === 'string' ? undefined : `a close reason must be a string, got ${show(reason)}`
    default:
      return `unknown frame type ${show(type)}, expected text, binary, ping, pong or close`
  }
}

function byteLength (data: string | Uint8Array): number {
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

/**
 * Write checked frames in order, batched with what else this tick writes. Stops at a close
 * frame and returns it without sending it: closing belongs to the connection. `onSent` is
 * ws's send callback for each text and binary frame.
 */
export function writeFrames (ws: WebSocket, reply: OutFrame | readonly OutFrame[], onSent?: () => void): CloseFrame | undefined {
  batchUntilNextTick(ws)
  if (!Array.isArray(reply)) return writeFrame(ws, reply as OutFrame, onSent)
  for (const frame of reply as readonly OutFrame[]) {
    const closeFrame = writeFrame(ws, frame, onSent)
    if (closeFrame !== undefined) return closeFrame
  }
  return undefined
}

/**
 * Everything written to this socket until the current tick ends leaves in one writev: the
 * replies to all the frames of one TCP read (ws emits them in one go), or of a run of async
 * callbacks settled in one microtask drain. A syscall per frame is most of an echo's CPU.
 */
export function batchUntilNextTick (ws: WebSocket): void {
  const socket = internalsOf(ws)._socket
  if (socket.writableCorked !== 0) return
  backlogAtBatch.set(socket, ws.bufferedAmount)
  socket.cork()
  process.nextTick(uncork, socket)
}

function uncork (socket: Socket): void {
  socket.uncork()
  backlogAtBatch.delete(socket)
}

/**
 * The sockets corked this tick and what earlier writes had left in them when their batch began.
 * Entries live for one tick only (nothing per idle connection).
 */
const backlogAtBatch = new Map<Socket, number>()

/**
 * What earlier writes left behind, for `maxBufferedBytes`: while a batch is open, `bufferedAmount`
 * also counts this tick's replies, which leave at its end; a prompt reader is judged by the rest.
 */
export function backlogOf (ws: WebSocket): number {
  return backlogAtBatch.get(internalsOf(ws)._socket) ?? ws.bufferedAmount
}

const asText = { binary: false }

/**
 * The last text received (on any connection) and its bytes: a reply of that same text (an echo,
 * a relay) is sent from the bytes instead of encoded again. Only for text whose bytes are
 * exactly its UTF-8 (validated on receipt) and small (the slot keeps its read buffer alive).
 */
let receivedText: string | undefined
let receivedBytes: Buffer | undefined
const REUSE_LIMIT = 16 * 1024

export function rememberReceivedText (text: string, bytes: Buffer): void {
  if (bytes.length > REUSE_LIMIT) return
  receivedText = text
  receivedBytes = bytes
}

function writeFrame (ws: WebSocket, frame: OutFrame, onSent?: () => void): CloseFrame | undefined {
  switch (frame.type) {
    case 'text':
      // Encoded here: ws would write the string beside its header buffer, and a writev of mixed
      // strings and buffers (writevGeneric) costs more than encoding a small string into the pool.
      ws.send(frame.data === receivedText ? receivedBytes! : Buffer.from(frame.data), asText, onSent)
      return undefined
    case 'binary':
      ws.send(frame.data, onSent)
      return undefined
    case 'ping':
      ws.ping(frame.data)
      return undefined
    case 'pong':
      ws.pong(frame.data)
      return undefined
  }
  return frame // the type system has narrowed it to the close frame
}

/**
 * `broadcast`'s write: the frame encoded once for every subscriber goes straight to the socket
 * when ws's sender is idle; otherwise (it is compressing a reply) through ws after what it
 * queued, uncompressed, so that frames keep their order.
 */
export function writeShared (ws: WebSocket, encoded: Buffer, frame: BroadcastFrame): void {
  const { _sender: sender, _socket: socket } = internalsOf(ws)
  if (sender._state === SENDER_DEFAULT && sender._queue.length === 0) socket.write(encoded)
  else ws.send(frame.data, { binary: frame.binary, compress: false })
}
