/**
 * Frames onto the socket: a tick's replies batched into one write (and the backlog that
 * `maxBufferedBytes` judges), the bytes of received text reused for an echo, and a broadcast
 * frame encoded once for every subscriber. Needs no connection state: the actor decides what
 * to write, this writes it.
 */
import type { Socket } from 'node:net'
import type WebSocket from 'ws'
import type { BroadcastFrame, CloseFrame, OutFrame } from '../core/types.js'
import { SENDER_DEFAULT, internalsOf } from './ws-internals.js'

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

/**
 * A whole server frame (unmasked, RFC 6455 §5.2) in one buffer, header and payload: `broadcast`
 * builds it once, and each subscriber's socket gets the very same bytes in one write.
 */
export function encodeFrame ({ binary, data }: BroadcastFrame): Buffer {
  const length = data.length
  const offset = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(offset + length)
  frame[0] = 0x80 | (binary ? 0x2 : 0x1)
  if (length < 126) {
    frame[1] = length
  } else if (length < 65536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  data.copy(frame, offset)
  return frame
}
