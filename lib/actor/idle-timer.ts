/**
 * Cowboy's idle timeout, and our heartbeat, on one timer per connection: only received bytes
 * (socket data, even a partial frame or a pong) count as life. After `pingInterval` ms of
 * silence the server pings (again every `pingInterval`); after `idleTimeout` ms of silence the
 * owner is told to close. Data restarts the count with a `refresh()`, not a new timer.
 */
import type WebSocket from 'ws'
import { internalsOf } from '../wire/ws-internals.js'

/** The owner's method called when `idleTimeout` ms passed without data. */
export const kIdleTimeout = Symbol('fastify-ws-handlers.idle-timeout')

export interface IdleTimerOwner {
  [kIdleTimeout](): void
}

const kIdleTimer = Symbol('fastify-ws-handlers.idle-timer')

/** The timer's slot on the socket, so that one shared 'data' listener finds it. */
interface Slot { [kIdleTimer]?: IdleTimer }

export class IdleTimer {
  readonly #owner: IdleTimerOwner
  readonly #ws: WebSocket
  #timer: NodeJS.Timeout | undefined
  #idleTimeout = 0
  #pingInterval = 0
  /** The period the timer fires at: `pingInterval` while pinging, else `idleTimeout`. */
  #tickMs = 0
  /** Milliseconds of silence counted by the timer so far. */
  #silentMs = 0

  constructor (owner: IdleTimerOwner, ws: WebSocket) {
    this.#owner = owner
    this.#ws = ws
    const socket = internalsOf(ws)._socket
    ;(socket as Slot)[kIdleTimer] = this
    socket.on('data', IdleTimer.#onData)
  }

  /** (Re)start counting from now with these periods; 0 turns either off. */
  arm (idleTimeout: number, pingInterval: number): void {
    this.stop()
    this.#idleTimeout = idleTimeout
    this.#pingInterval = pingInterval
    this.#silentMs = 0
    const pinging = pingInterval > 0 && (idleTimeout === 0 || pingInterval < idleTimeout)
    this.#tickMs = pinging ? pingInterval : idleTimeout
    if (this.#tickMs !== 0) this.#timer = setTimeout(IdleTimer.#onSilence, this.#tickMs, this).unref()
  }

  stop (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  static #onSilence (self: IdleTimer): void {
    const idleTimeout = self.#idleTimeout
    const pingInterval = self.#pingInterval
    const silent = self.#silentMs += self.#tickMs
    if (idleTimeout !== 0 && silent >= idleTimeout) {
      self.#timer = undefined
      self.#owner[kIdleTimeout]()
      return
    }
    self.#ws.ping()
    // The last stretch may be shorter than pingInterval, so that the idle timeout stays exact.
    const next = idleTimeout === 0 ? pingInterval : Math.min(pingInterval, idleTimeout - silent)
    if (next === self.#tickMs) {
      self.#timer!.refresh()
    } else {
      self.#tickMs = next
      self.#timer = setTimeout(IdleTimer.#onSilence, next, self).unref()
    }
  }

  static #onData (this: Slot): void {
    const self = this[kIdleTimer]!
    if (self.#timer === undefined) return // stopped (the connection is ending), or both periods are 0
    if (self.#silentMs === 0) self.#timer.refresh()
    else self.arm(self.#idleTimeout, self.#pingInterval) // data after a ping: back to the full period
  }
}
