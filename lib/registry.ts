/**
 * The app-wide table of connections: look-up by id, post by id, and the shutdown that
 * app.close() runs (close 1001 for each, then wait for every terminate to settle).
 */
import { kShutdown, type Connection, type ConnectionRegistry } from './connection.js'
import type { WebSocketConnections } from './types.js'

export class Registry implements ConnectionRegistry, WebSocketConnections {
  readonly #live = new Map<string, Connection>()
  #onEmpty: (() => void) | undefined
  #closing = false

  /** app.close() has begun: new upgrades are refused, late ones closed with 1001. */
  get closing (): boolean {
    return this.#closing
  }

  get size (): number {
    return this.#live.size
  }

  add (connection: Connection): void {
    this.#live.set(connection.id, connection)
    // init refuses upgrades once app.close() began (503); one that was already between that
    // check and the 101 (a microtask's gap) opens, then closes with 1001.
    /* c8 ignore next */
    if (this.#closing) queueMicrotask(() => connection[kShutdown]())
  }

  remove (connection: Connection): void {
    this.#live.delete(connection.id)
    if (this.#live.size === 0) this.#onEmpty?.()
  }

  get (id: string): Connection | undefined {
    return this.#live.get(id)
  }

  post (id: string, message: unknown): boolean {
    return this.#live.get(id)?.post(message) ?? false
  }

  /** Close every connection with 1001 and wait, at most `timeoutMs`, for their terminates. */
  async shutdown (timeoutMs: number): Promise<void> {
    this.#closing = true
    for (const connection of this.#live.values()) connection[kShutdown]()
    if (this.#live.size === 0) return
    await new Promise<void>((resolve) => {
      // A terminate or callback that never settles must not hold app.close() forever.
      const timer = setTimeout(resolve, timeoutMs)
      this.#onEmpty = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
