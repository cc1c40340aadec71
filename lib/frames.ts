/**
 * Frame builders, so replies read like Cowboy's `{text, Data}`: `reply: [text('Hello'), close(1000)]`.
 */
import type { BroadcastFrame } from './adapter.js'
import type { CloseFrame, OutFrame, TextFrame } from './types.js'

export function text (data: string): TextFrame {
  return { type: 'text', data }
}

/** A text frame holding `JSON.stringify(value)`. */
export function json (value: unknown): TextFrame {
  return { type: 'text', data: JSON.stringify(value) }
}

export function binary (data: Buffer | Uint8Array): OutFrame {
  return { type: 'binary', data }
}

export function ping (data?: Buffer | Uint8Array | string): OutFrame {
  return { type: 'ping', data }
}

export function pong (data?: Buffer | Uint8Array | string): OutFrame {
  return { type: 'pong', data }
}

/** A close frame; the code defaults to 1000 (Cowboy's bare `close` sends no code, which peers see as 1005). */
export function close (code?: number, reason?: string): CloseFrame {
  return { type: 'close', code, reason }
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
