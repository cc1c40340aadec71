/**
 * Frame builders, so replies read like Cowboy's `{text, Data}`: `reply: [text('Hello'), close(1000)]`.
 */
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
