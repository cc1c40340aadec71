/**
 * ws's events, turned into what the connection reacts to. The listeners are shared by every
 * connection (no closure per connection): each finds its connection in a slot on ws's receiver
 * (one slot serves both: ws keeps its receiver for life, and a slot costs 8 B per object).
 *
 * This is where the outside enters, so nothing may throw out of here (a throw in an event
 * listener is a process crash): each listener runs its work in a try and turns a throw into
 * `kFault`, a logged close with 1011 of that one connection (test/boundary.test.ts drives each).
 */
import type WebSocket from 'ws'
import { CloseCode } from '../core/close-codes.js'
import { rememberReceivedText } from '../wire/writes.js'
import { frameInChannel } from '../core/diagnostics.js'
import type { ErrorReason, InFrame, InvalidJsonMessage, JsonFrame, TerminateReason } from '../core/types.js'
import { closeCodeOfWsError, hookSocketData, internalsOf } from '../wire/ws-internals.js'

/** What went wrong with one message of a JSON route: the close code and a short reason (≤ 123 bytes). */
export type JsonProblem = InvalidJsonMessage

/** A JSON route's parser (built by the route, route/json-reader.ts): a frame for `handle`, or the problem. */
export type JsonReader = (text: string | undefined) => JsonFrame | JsonProblem

export const kReceived = Symbol('fastify-ws-handlers.received')
export const kInvalidJson = Symbol('fastify-ws-handlers.invalid-json')
export const kPeerEnded = Symbol('fastify-ws-handlers.peer-ended')
export const kFault = Symbol('fastify-ws-handlers.fault')
export const kDataReceived = Symbol('fastify-ws-handlers.data-received')

export interface ConnectionEvents {
  /** JSON routes: how text becomes `json` frames. */
  readonly jsonReader: JsonReader | undefined
  /** A frame for `handle`, and its size as received (for the mailbox's byte bound). */
  [kReceived](frame: InFrame<unknown>, bytes: number): void
  /** A message a JSON route refuses, and its size as received (for the rate limit). */
  [kInvalidJson](problem: JsonProblem, bytes: number): void
  /**
   * The connection ends without this side deciding it: the peer's close frame, a protocol
   * error (ws has sent the close frame already) or the socket gone.
   */
  [kPeerEnded](reason: TerminateReason): void
  /** Something threw on the way in: close this connection with 1011 (must not throw itself). */
  [kFault](error: unknown): void
  /** Bytes arrived on the socket (even part of a frame): the silence the idle timeout counts is over. */
  [kDataReceived](): void
}

const kEvents = Symbol('fastify-ws-handlers.events')

/** The connection's slot on ws's receiver. */
interface Slot { [kEvents]?: ConnectionEvents }

function eventsOf (ws: WebSocket): ConnectionEvents {
  return (internalsOf(ws)._receiver as Slot)[kEvents]!
}

export function listen (ws: WebSocket, events: ConnectionEvents): void {
  ws.on('message', onMessage)
  ws.on('ping', onPing)
  ws.on('pong', onPong)
  ws.on('close', onClose)
  ws.on('error', onError)
  // The peer's close frame, as soon as it is parsed: ws's own 'close' waits for the TCP teardown.
  const receiver = internalsOf(ws)._receiver
  ;(receiver as Slot)[kEvents] = events
  receiver.on('conclude', onConclude)
}

/**
 * The heartbeat hears of socket data (only while a connection has one), before ws parses it, so
 * that a slow large frame counts as life; hooked into ws's own data listener, not a second one.
 */
export function listenForData (ws: WebSocket): void {
  hookSocketData(ws, onSocketData)
}

function onSocketData (ws: WebSocket | undefined): void {
  /* c8 ignore next -- ws removes its data listener (our wrapper) before it lets the socket go; kept in case that order changes */
  if (ws === undefined) return
  const events = eventsOf(ws)
  try {
    events[kDataReceived]()
  } catch (error) {
    events[kFault](error)
  }
}

function received (events: ConnectionEvents, frame: InFrame<unknown>, bytes: number): void {
  if (frameInChannel.hasSubscribers) frameInChannel.publish({ ctx: events, frame, bytes })
  events[kReceived](frame, bytes)
}

function onMessage (this: WebSocket, data: Buffer, isBinary: boolean): void {
  const events = eventsOf(this)
  try {
    message(this, events, data, isBinary)
  } catch (error) {
    events[kFault](error)
  }
}

function message (ws: WebSocket, events: ConnectionEvents, data: Buffer, isBinary: boolean): void {
  const read = events.jsonReader
  if (read === undefined) {
    if (isBinary) {
      received(events, { type: 'binary', data }, data.length)
      return
    }
    const text = data.toString()
    // Validated UTF-8 decodes and encodes back to the same bytes: an echo can send these.
    if (!internalsOf(ws)._receiver._skipUTF8Validation) rememberReceivedText(text, data)
    received(events, { type: 'text', data: text }, data.length)
    return
  }
  const frame = read(isBinary ? undefined : data.toString())
  if ('type' in frame) received(events, frame, data.length)
  else events[kInvalidJson](frame, data.length)
}

function onPing (this: WebSocket, data: Buffer): void {
  receivedControl(eventsOf(this), { type: 'ping', data })
}

function onPong (this: WebSocket, data: Buffer): void {
  receivedControl(eventsOf(this), { type: 'pong', data })
}

function receivedControl (events: ConnectionEvents, frame: InFrame<unknown> & { readonly data: Buffer }): void {
  try {
    received(events, frame, frame.data.length)
  } catch (error) {
    events[kFault](error)
  }
}

function onConclude (this: Slot, code: number, reason: Buffer): void {
  peerEnded(this[kEvents]!, { type: 'remote', code: code === CloseCode.NO_STATUS ? undefined : code, reason: reason.toString() })
}

function onClose (this: WebSocket): void {
  // Without a close frame before it (that ended the connection already), the socket just went away.
  peerEnded(eventsOf(this), { type: 'closed' })
}

function onError (this: WebSocket, error: Error): void {
  // ws has already sent the close frame with this code; frames queued before it still run. Its
  // errors all carry a code: its receiver's WS_ERR_…, or zlib's Z_… for corrupt compressed data.
  peerEnded(eventsOf(this), { type: 'error', code: closeCodeOfWsError(error), error: error as ErrorReason['error'] })
}

function peerEnded (events: ConnectionEvents, reason: TerminateReason): void {
  try {
    events[kPeerEnded](reason)
  } catch (error) {
    events[kFault](error)
  }
}
