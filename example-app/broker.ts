// Where the MQTT gateway's bytes go: an embedded aedes broker (the default: `npm start` needs
// nothing else), or an external broker over TCP when MQTT_BROKER_URL is set (for example
// mqtt://127.0.0.1:1883 for a local Mosquitto). Either way each WebSocket connection gets its
// own broker connection, a Duplex stream.
import net from 'node:net'
import { Duplex } from 'node:stream'
import { Aedes } from 'aedes'

export interface Broker {
  readonly description: string
  /** A new broker connection for one client. */
  connect(): Duplex
  close(): Promise<void>
}

export async function embeddedBroker (): Promise<Broker & { aedes: Aedes }> {
  const aedes = await Aedes.createBroker()
  return {
    description: 'embedded aedes broker',
    aedes,
    connect () {
      const [ours, theirs] = duplexPair()
      aedes.handle(theirs)
      return ours
    },
    close: async () => await new Promise<void>((resolve) => aedes.close(() => resolve()))
  }
}

export function externalBroker (url: string): Broker {
  const { protocol, hostname, port } = new URL(url)
  if (protocol !== 'mqtt:' && protocol !== 'tcp:') throw new Error(`MQTT_BROKER_URL must be mqtt://host:port, got ${url}`)
  const brokerPort = port === '' ? 1883 : Number(port)
  return {
    description: `MQTT broker at ${hostname}:${brokerPort}`,
    connect: () => net.connect(brokerPort, hostname),
    close: async () => {}
  }
}

/**
 * Two connected in-memory Duplex streams, like a socket's two ends: what one writes the other
 * reads, a full reader holds the writer's callback (back-pressure), and destroying one end
 * closes the other (Node 22 has stream.duplexPair; Node 20 does not).
 */
export function duplexPair (): [Duplex, Duplex] {
  const a = new PairEnd()
  const b = new PairEnd()
  a.other = b
  b.other = a
  return [a, b]
}

class PairEnd extends Duplex {
  other!: PairEnd
  #pendingWrite: (() => void) | undefined

  override _read (): void {
    const resume = this.other.#pendingWrite
    this.other.#pendingWrite = undefined
    resume?.()
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    if (this.other.push(chunk)) callback()
    else this.#pendingWrite = callback
  }

  override _final (callback: () => void): void {
    this.other.push(null)
    callback()
  }

  override _destroy (error: Error | null, callback: (error: Error | null) => void): void {
    if (!this.other.destroyed) this.other.destroy()
    callback(error)
  }
}
