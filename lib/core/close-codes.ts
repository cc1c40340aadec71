/**
 * Close codes (RFC 6455 §7.4): the ones the plugin sends, which may be sent, and how a reason
 * is fitted into a close frame. (The close code of ws's own errors: wire/ws-internals.ts.)
 */

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  NO_STATUS: 1005,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012
} as const

/** The codes an endpoint may put in a close frame (the same rule as ws's `close()`). */
export function isSendableCloseCode (code: unknown): code is number {
  return Number.isInteger(code) && (
    ((code as number) >= 1000 && (code as number) <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    ((code as number) >= 3000 && (code as number) <= 4999))
}

/** Longest close reason in bytes: a control payload is 125 bytes, 2 of them the code. */
export const MAX_CLOSE_REASON_BYTES = 123

/**
 * `reason` as it can go in a close frame: unchanged when it fits in 123 bytes of UTF-8, else cut
 * on a character boundary to at most 120 bytes and ended with '…' (3 bytes). Every close this
 * plugin sends goes through here, so a close never throws (ws's close() throws a RangeError on a
 * longer reason) and a protocol that puts client input in its reason keeps its close code.
 */
export function fitCloseReason (reason: string): string {
  // A UTF-16 code unit is at most 3 bytes of UTF-8: short strings need no counting.
  if (reason.length <= MAX_CLOSE_REASON_BYTES / 3 || Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason
  const bytes = Buffer.from(reason)
  let end = MAX_CLOSE_REASON_BYTES - 3
  while ((bytes[end]! & 0xc0) === 0x80) end-- // back to the first byte of the character cut in two
  return bytes.toString('utf8', 0, end) + '…'
}
