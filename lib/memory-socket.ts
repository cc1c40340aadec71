/**
 * An in-memory socket pair: what one end writes, the other reads. Used by the registration-time
 * ws check and by the test toolkit's injected clients (no port, no kernel).
 */
import { Duplex } from 'node:stream'

export class MemorySocket extends Duplex {
  peer: MemorySocket | undefined
  /** What Fastify and ws read off a socket. */
  readonly remoteAddress = '127.0.0.1'
  readonly encrypted = false

  override _read (): void {}

  override _write (chunk: Buffer, _encoding: string, done: () => void): void {
    this.peer!.push(chunk)
    done()
  }

  override _final (done: () => void): void {
    this.peer!.push(null)
    done()
  }

  override _destroy (error: Error | null, done: (error: Error | null) => void): void {
    if (this.peer !== undefined && !this.peer.readableEnded) this.peer.push(null) // the other end sees the end
    done(error)
  }

  setTimeout (): this { return this }
  setNoDelay (): this { return this }
}

/** Two connected ends. */
export function memorySocketPair (): [MemorySocket, MemorySocket] {
  const a = new MemorySocket()
  const b = new MemorySocket()
  a.peer = b
  b.peer = a
  return [a, b]
}
