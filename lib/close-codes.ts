/**
 * Close codes (RFC 6455 §7.4) and the one table that maps ws's protocol errors to them.
 */

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  NO_STATUS: 1005,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011
} as const

/** The codes an endpoint may put in a close frame (the same rule as ws's `close()`). */
export function isSendableCloseCode (code: unknown): code is number {
  return Number.isInteger(code) && (
    ((code as number) >= 1000 && (code as number) <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    ((code as number) >= 3000 && (code as number) <= 4999))
}

/** Longest close reason in bytes: a control payload is 125 bytes, 2 of them the code. */
export const MAX_CLOSE_REASON_BYTES = 123

/** ws error codes whose close code is not 1002 (protocol error); see ws/lib/receiver.js. */
const closeCodeByWsError: Readonly<Record<string, number>> = {
  WS_ERR_INVALID_UTF8: CloseCode.INVALID_PAYLOAD,
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: CloseCode.MESSAGE_TOO_BIG,
  WS_ERR_TOO_MANY_BUFFERED_PARTS: CloseCode.POLICY_VIOLATION
}

/** The close code ws sent for one of its errors. Corrupt deflate data (zlib's `Z_…`) is 1007 in ws. */
export function closeCodeOfWsError (error: Error & { code?: unknown }): number {
  const code = typeof error.code === 'string' ? error.code : ''
  if (code.startsWith('Z_')) return CloseCode.INVALID_PAYLOAD
  return closeCodeByWsError[code] ?? CloseCode.PROTOCOL_ERROR
}
