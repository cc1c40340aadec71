/**
 * Every private field of ws (8.23) that this plugin touches, in one place, with the reason.
 * ws offers no public way to do these per connection; the tests cover each use, and the first
 * connection checks that the fields are where they are expected, so that a ws release that
 * moves them fails loudly (FST_WS_WS_INTERNALS) instead of quietly dropping a duty.
 */
import type { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type WebSocket from 'ws'
import { WsInternalsError } from './errors.js'

interface Closable { close(): void }

export interface PermessageDeflateInternals {
  /** Its own copy of the size limit, checked on the inflated size. */
  _maxPayload: number
  /** The zlib contexts; ws creates them on demand, so hibernate may close and drop them. */
  _deflate: Closable | null
  _inflate: Closable | null
  /** The negotiated parameters (`client_no_context_takeover`). */
  params: Record<string, unknown>
}

export interface WsInternals {
  /** The TCP socket: corked for multi-frame replies, read for the idle timer, detached from the HTTP response. */
  _socket: Socket
  /** The frame parser: per-connection limits, 'conclude' (the peer's close frame), whether zlib is busy. */
  _receiver: EventEmitter & { _maxPayload: number, _skipUTF8Validation: boolean, _state: number, _fragmented: number }
  /** The frame writer: whether zlib is busy or a message waits. */
  _sender: { _state: number, _queue: unknown[] }
  _extensions: { 'permessage-deflate'?: PermessageDeflateInternals }
}

export function internalsOf (ws: WebSocket): WsInternals {
  return ws as unknown as WsInternals
}

/** What is not where this plugin expects it, or undefined. */
export function wsInternalsProblem (ws: WebSocket): string | undefined {
  const { _socket: socket, _receiver: receiver, _sender: sender, _extensions: extensions } = internalsOf(ws)
  const missing: string[] = []
  if (typeof socket?.cork !== 'function') missing.push('_socket')
  if (typeof receiver?.on !== 'function') missing.push('_receiver')
  else {
    for (const field of ['_maxPayload', '_state', '_fragmented'] as const) {
      if (typeof receiver[field] !== 'number') missing.push(`_receiver.${field}`)
    }
    if (typeof receiver._skipUTF8Validation !== 'boolean') missing.push('_receiver._skipUTF8Validation')
  }
  if (typeof sender?._state !== 'number' || !Array.isArray(sender._queue)) missing.push('_sender._state/_queue')
  if (extensions === null || typeof extensions !== 'object') missing.push('_extensions')
  return missing.length === 0 ? undefined : `ws ${missing.join(', ')} not found`
}

let checked = false

/** Once per process, on the first connection. */
export function assertWsInternals (ws: WebSocket): void {
  if (checked) return
  const problem = wsInternalsProblem(ws)
  if (problem !== undefined) throw new WsInternalsError(problem)
  checked = true
}
