/**
 * The Redis adapter's wire format: one message on a channel, built and checked (what does not
 * parse is reported as a string, never thrown: any bytes can arrive on a channel).
 */
import { isUtf8 } from 'node:buffer'
import type { BroadcastFrame, Position } from '../core/types.js'

/**
 * The wire format of one message on a channel (all of it checked on receipt; what does not
 * parse is dropped and logged, never thrown):
 *
 *   [version 1 B = 4][kind 1 B][origin instance id 4 B][sent at 8 B][field length 4 B, big-endian][field, UTF-8][body]
 *
 * "sent at" is the publisher's wall clock (ms since the epoch, a big-endian double): the
 * receiving instance reports the delivery lag (`fastify-ws-handlers:adapter`, and the metric).
 * kind PUBLISH: no field (length 0), body JSON; TEXT/BINARY (broadcast): field = the `except`
 * id ('' for none), body the payload; POST: field = the target connection id, body JSON; KEPT
 * (a publication of a topic with history, sent by the append script of redis-history.ts):
 * field = `<epoch> <offset>`, body JSON.
 * Versions 1 (one-byte lengths, no version byte: its first byte is a kind, 1-4), 2 (no time)
 * and 3 (topic channels without a hash tag) are not read: upgrade every instance together, or
 * give the new ones their own channelPrefix.
 */
const VERSION = 4
export const PUBLISH = 1
export const TEXT = 2
export const BINARY = 3
export const POST = 4
const KEPT = 5
const HEAD = 18 // version, kind, origin, sent at, field length

/** What arrived on a channel, once checked; or why it is dropped. */
export type WireMessage =
  | { readonly kind: 'publish', readonly message: unknown }
  | { readonly kind: 'kept', readonly message: unknown, readonly position: Position }
  | { readonly kind: 'broadcast', readonly frame: BroadcastFrame, readonly except: string | undefined }
  | { readonly kind: 'post', readonly id: string, readonly message: unknown }

/** The envelope of one message (exported for the wire-format tests). */
export function encodeWire (origin: Buffer, kind: number, field: string, body: Buffer, sentAt = Date.now()): Buffer {
  const fieldBytes = Buffer.from(field)
  const head = Buffer.allocUnsafe(HEAD)
  head[0] = VERSION
  head[1] = kind
  origin.copy(head, 2, 0, 4)
  head.writeDoubleBE(sentAt, 6)
  head.writeUInt32BE(fieldBytes.length, 14)
  return Buffer.concat([head, fieldBytes, body])
}

/** The head of a KEPT message up to its field length: the append script adds the rest. */
export function keptHead (origin: Buffer, sentAt = Date.now()): Buffer {
  return encodeWire(origin, KEPT, '', Buffer.alloc(0), sentAt).subarray(0, HEAD - 4)
}

/** The origin's 4 bytes (to skip our own), when it was sent, and the message; a string says why it cannot be read. */
export function decodeWire (payload: Buffer): { origin: Buffer, sentAt: number, message: WireMessage } | string {
  if (payload.length < HEAD) return `${payload.length} bytes, shorter than a header`
  if (payload[0] !== VERSION) return `unknown format version ${payload[0]!}`
  const kind = payload[1]
  const sentAt = payload.readDoubleBE(6)
  const fieldLength = payload.readUInt32BE(14)
  if (fieldLength > payload.length - HEAD) return `a field of ${fieldLength} bytes in a message of ${payload.length}`
  const origin = payload.subarray(2, 6)
  const field = payload.toString('utf8', HEAD, HEAD + fieldLength)
  const body = payload.subarray(HEAD + fieldLength)
  const except = field === '' ? undefined : field
  switch (kind) {
    case PUBLISH:
      return { origin, sentAt, message: { kind: 'publish', message: JSON.parse(body.toString()) } }
    case POST:
      return { origin, sentAt, message: { kind: 'post', id: field, message: JSON.parse(body.toString()) } }
    case KEPT: {
      const [epoch = '', offset = ''] = field.split(' ')
      const position = { epoch, offset: Number(offset) }
      if (epoch === '' || !Number.isSafeInteger(position.offset) || position.offset < 1) return `a kept publication at "${field}", not a position`
      return { origin, sentAt, message: { kind: 'kept', message: JSON.parse(body.toString()), position } }
    }
    case TEXT:
      // Written as a text frame to every subscriber: text that is not UTF-8 would break their clients (1007).
      if (!isUtf8(body)) return 'a text broadcast that is not UTF-8'
      return { origin, sentAt, message: { kind: 'broadcast', frame: { binary: false, data: body }, except } }
    case BINARY:
      return { origin, sentAt, message: { kind: 'broadcast', frame: { binary: true, data: body }, except } }
    default:
      return `unknown kind ${kind!}`
  }
}
