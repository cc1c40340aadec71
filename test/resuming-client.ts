/**
 * A client of the JSON follower route (followers.ts) as a real one behaves: the package's
 * `resumingSocket` (lib/client.ts) with ws's WebSocket, reconnecting to the next of the instances
 * it knows, `since` the last position it saw; it records every publication's offset, the
 * resyncs it was told of and the close codes it saw.
 */
import WebSocket from 'ws'
import { resumingSocket, type ResumingSocket, type WebSocketConstructor } from '../lib/client.js'
import type { TopicEvent } from '../lib/index.js'

export class ResumingClient {
  readonly offsets: number[] = []
  readonly resyncs: Array<{ reason: string, offset: number }> = []
  readonly closeCodes: number[] = []
  /** Where its first subscription started (its first `subscribed` offset). */
  start: number | undefined
  readonly #socket: ResumingSocket

  constructor (urls: string[]) {
    let next = 0
    this.#socket = resumingSocket<TopicEvent<string>>({
      url: (since) => `${urls[next++ % urls.length]!}${since === '' ? '' : `?since=${since}`}`,
      positionOf: ({ position }) => `${position.epoch}:${position.offset}`,
      onMessage: (event) => {
        if (event.kind === 'publication') this.offsets.push(event.position.offset)
        else if (event.kind === 'subscribed') this.start ??= event.position.offset
        else this.resyncs.push({ reason: event.reason, offset: event.position.offset })
      },
      onStatus: (_status, code) => { if (code !== undefined) this.closeCodes.push(code) },
      backoff: { initialMs: 25, maxMs: 200 },
      WebSocket: WebSocket as unknown as WebSocketConstructor
    })
  }

  get last (): number | undefined {
    return this.offsets.at(-1)
  }

  close (): void {
    this.#socket.close()
  }
}
