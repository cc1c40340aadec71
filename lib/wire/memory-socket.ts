/**
 * An in-memory socket pair: what one end writes, the other reads. Used by the registration-time
 * ws check and by the test toolkit's injected clients (no port, no kernel).
 */
import { Duplex } from 'node:stream'

export class MemorySocket extends Duplex {
  peer: MemorySocket | undefined
  /** The peer has ended its side: what this end reads has ended. */
  peerEnded = false
  /** What Fastify and ws read off a socket. */
  readonly remoteAddress = '127.0.0.1'
  readonly encrypted = false

  override _read (): void {}

  // What one end writes reaches the other on a later tick, as over TCP: delivered on the writer's
  // stack, a close frame would be answered before ws's close() had finished (ws then starts a
  // second close timer and loses the first, which holds the process for closeTimeout).
  override _write (chunk: Buffer, _encoding: string, done: () => void): void {
    process.nextTick(deliver, this.peer!, chunk)
    done()
  }

  override _final (done: () => void): void {
    process.nextTick(deliver, this.peer!, null)
    done()
  }

  override _destroy (error: Error | null, done: (error: Error | null) => void): void {
    if (this.peer !== undefined) process.nextTick(deliver, this.peer, null) // the other end sees the end
    done(error)
  }

  setTimeout (): this { return this }
  setNoDelay (): this { return this }
}

function deliver (to: MemorySocket, chunk: Buffer | null): void {
  if (to.destroyed || to.peerEnded) return // nothing after the end (ended once by _final or _destroy)
  if (chunk === null) to.peerEnded = true
  to.push(chunk)
}

/** Two connected ends. */
export function memorySocketPair (): [MemorySocket, MemorySocket] {
  const a = new MemorySocket()
  const b = new MemorySocket()
  a.peer = b
  b.peer = a
  return [a, b]
}
