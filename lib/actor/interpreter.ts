/**
 * The command interpreter of a connection (its middle layer, between lifecycle.ts and the loop
 * of connection.ts): what a callback returns is checked whole first (nothing of an invalid
 * result applies), then each command present applies, in the order documented on `Commands`;
 * and the writes that replies and broadcasts make, which nothing makes once the connection is
 * ending.
 */
import type { BroadcastFrame, Commands, OutFrame } from '../core/types.js'
import { CloseCode, fitCloseReason } from '../core/close-codes.js'
import { frameOutChannel } from '../core/diagnostics.js'
import { InvalidResultError, OutboundOverflowError } from '../core/errors.js'
import { json } from '../core/frames.js'
import { backlogOf, writeFrames, writeShared } from '../wire/writes.js'
import { kPhase, kRoute, kWriteShared, kWs } from './context.js'
import { Hibernation } from './hibernate.js'
import type { JsonProblem } from './listeners.js'
import { Mailbox, type MailKind } from './mailbox.js'
import { resultProblem } from './results.js'
import { ConnectionLifecycle, IDLE, callbackName, kClose, kCrash, kHibernation, kLoop, kMailbox, kOptions, kSetOptions, kState } from './lifecycle.js'

export const kInterpret = Symbol('fastify-ws-handlers.interpret')
export const kAnswerInvalid = Symbol('fastify-ws-handlers.answer-invalid')
export const kWriteSharedNow = Symbol('fastify-ws-handlers.write-shared-now')
/** A broadcast frame waiting in the mailbox: written when its turn comes. */
export const kDeliverBroadcast = Symbol('fastify-ws-handlers.deliver-broadcast')

export abstract class CommandInterpreter extends ConnectionLifecycle {
  /** The loop's way in (connection.ts): run now if nothing runs, else wait in the mailbox. */
  protected abstract [kDeliverBroadcast] (encoded: Buffer, frame: BroadcastFrame): boolean

  /**
   * The whole result is checked first (nothing of an invalid one applies), then each command
   * present applies, in the order documented on `Commands`.
   */
  protected [kInterpret] (callback: MailKind, result: unknown): void {
    const problem = resultProblem(result)
    if (problem !== undefined) {
      const name = callbackName(callback)
      const error = new InvalidResultError(name, problem)
      this.log.error({ err: error }, `WebSocket ${name} returned an invalid result; closing with 1011`)
      this[kClose](CloseCode.INTERNAL_ERROR, '', { type: 'error', code: CloseCode.INTERNAL_ERROR, error })
      return
    }
    const commands = result as Commands<unknown>
    if (commands.state !== undefined) this[kState] = commands.state
    // The gate: once the connection is ending (a callback that settles after the peer left or
    // after a close), only its state is kept, for terminate. Options would re-arm the heartbeat
    // of a closed socket, `active: true` would run held frames, and nothing may be written.
    if (this[kPhase] !== 'open') return
    if (commands.options !== undefined) this[kSetOptions](commands.options)
    if (commands.active !== undefined) (this[kMailbox] ??= new Mailbox(this[kWs])).setActive(commands.active)
    const hibernation = commands.hibernate === true ? (this[kHibernation] ??= new Hibernation(this[kWs])) : undefined
    const onSent = hibernation?.callbackFor(commands.reply)
    if (commands.reply !== undefined) this.#write(commands.reply, onSent)
    if (commands.stop === true) this[kClose](CloseCode.NORMAL, '', { type: 'stop', code: CloseCode.NORMAL, reason: '' })
    if (hibernation !== undefined && this[kPhase] === 'open') hibernation.request(onSent !== undefined)
  }

  /** A JSON route's answer to a message it refused: the standard error frame, or the route's own frames. */
  protected [kAnswerInvalid] (problem: JsonProblem): void {
    const onInvalid = this[kRoute].json!.onInvalid
    if (onInvalid === 'error-frame') {
      this.#write(json({ type: 'error', code: problem.code, message: problem.reason }))
      return
    }
    let reply: unknown
    try {
      reply = (onInvalid as Exclude<typeof onInvalid, string>)(problem)
    } catch (error) {
      this[kCrash]('errorFrame', error)
      return
    }
    // Checked as a callback's reply is: a bad one closes with 1011 and says what was expected.
    this[kInterpret]('errorFrame', { reply })
  }

  #write (reply: OutFrame | readonly OutFrame[], onSent?: () => void): void {
    // Nothing is sent once the connection is ending: after a close frame, or to a closed peer.
    if (this[kPhase] !== 'open' || this.#closedForOverflow()) return
    const closeFrame = writeFrames(this[kWs], reply, onSent)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: reply })
    if (closeFrame !== undefined) {
      const code = closeFrame.code ?? CloseCode.NORMAL
      const reason = fitCloseReason(closeFrame.reason ?? '') // terminate is told what was sent
      this[kClose](code, reason, { type: 'stop', code, reason })
    }
  }

  /**
   * A broadcast frame: written now when nothing runs or waits; else it waits in the mailbox
   * behind what was posted before it (publications and broadcasts keep their order for each
   * subscriber), or is missed when the mailbox is full, as a publication would be.
   */
  [kWriteShared] (encoded: Buffer, frame: BroadcastFrame): boolean {
    if (this[kPhase] !== 'open') return false
    if (this[kLoop] === IDLE) return this[kWriteSharedNow](encoded, frame)
    if (this[kMailbox]?.refuses(this[kOptions].mailboxLimit, this) === true) return false
    return this[kDeliverBroadcast](encoded, frame)
  }

  protected [kWriteSharedNow] (encoded: Buffer, frame: BroadcastFrame): boolean {
    // readyState: the peer ended TCP and ws has not said 'close' yet.
    if (this[kPhase] !== 'open' || this[kWs].readyState !== this[kWs].OPEN || this.#closedForOverflow()) return false
    writeShared(this[kWs], encoded, frame)
    if (frameOutChannel.hasSubscribers) frameOutChannel.publish({ ctx: this, frames: [{ type: frame.binary ? 'binary' : 'text', data: frame.data }] })
    return true
  }

  /**
   * A slow reader has not taken what was sent before: the backlog before a write counts (replies
   * and broadcasts alike), so one large reply is not mistaken for it. Over the limit: close 1008.
   */
  #closedForOverflow (): boolean {
    const backlog = backlogOf(this[kWs]) // this tick's batched replies are not a backlog
    if (backlog <= this[kOptions].maxBufferedBytes) return false
    const error = new OutboundOverflowError(backlog, this[kOptions].maxBufferedBytes)
    this[kClose](CloseCode.POLICY_VIOLATION, 'outbound buffer full', { type: 'error', code: CloseCode.POLICY_VIOLATION, error })
    return true
  }
}
