/**
 * What a callback returned, checked before anything of it applies: the connection's
 * interpreter (connection.ts) applies a result only when this finds no problem, and the test
 * harness checks results with the very same rules.
 */
import { isSendableCloseCode } from '../core/close-codes.js'
import { anything, liveChecks, mustBe, optionsProblem, shapeChecker, show, type Check } from '../core/options.js'
import type { Commands } from '../core/types.js'

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
