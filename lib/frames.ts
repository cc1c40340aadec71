/**
 * Frame builders, so replies read like Cowboy's `{text, Data}`: `reply: [text('Hello'), close(1000)]`.
 */
import type { BroadcastFrame } from './adapter.js'
import type { CloseFrame, OutFrame, TextFrame } from './types.js'

export function text (data: string): TextFrame {
  return { type: 'text', data }
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
 * A whole server frame (unmasked, RFC 6455 §5.2) as the buffers to write: the header built
 * here and the payload as it is. `broadcast` builds it once for every subscriber.
 */
export function encodeFrame ({ binary, data }: BroadcastFrame): readonly [Buffer, Buffer] {
  const length = data.length
  const header = Buffer.allocUnsafe(length < 126 ? 2 : length < 65536 ? 4 : 10)
  header[0] = 0x80 | (binary ? 0x2 : 0x1)
  if (length < 126) {
    header[1] = length
  } else if (length < 65536) {
    header[1] = 126
    header.writeUInt16BE(length, 2)
  } else {
    header[1] = 127
    header.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    header.writeUInt32BE(length >>> 0, 6)
  }
  return [header, data]
}
