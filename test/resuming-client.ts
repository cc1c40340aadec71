/**
 * A client of the JSON follower route (followers.ts) as a real one behaves: it records every
 * publication's offset, and after any close but its own it reconnects, to the next of the
 * instances it knows, `since` the last position it saw (as the example pages do).
 */
import WebSocket from 'ws'
import type { Position, TopicEvent } from '../lib/index.js'

export class ResumingClient {
  readonly offsets: number[] = []
  readonly resyncs: Array<{ reason: string, offset: number }> = []
  readonly closeCodes: number[] = []
  /** Where its first subscription started (its first `subscribed` offset). */
  start: number | undefined
  #since: Position | undefined
  #next: number
  #stopped = false
  #ws: WebSocket | undefined
  readonly #urls: string[]

  constructor (urls: string[], first = 0) {
    this.#urls = urls
    this.#next = first
    this.#open()
  }

  get last (): number | undefined {
    return this.offsets.at(-1)
  }

  #open (): void {
    if (this.#stopped) return
    const url = this.#urls[this.#next++ % this.#urls.length]!
    const ws = this.#ws = new WebSocket(this.#since === undefined ? url : `${url}?since=${this.#since.epoch}:${this.#since.offset}`)
    ws.on('error', () => {}) // a refused or dead instance: the close comes next
    ws.on('message', (data: Buffer) => {
      const event = JSON.parse(data.toString()) as TopicEvent<string>
      if (event.kind === 'publication') this.offsets.push(event.position.offset)
      else if (event.kind === 'subscribed') this.start ??= event.position.offset
      else this.resyncs.push({ reason: event.reason, offset: event.position.offset })
      this.#since = event.position
    })
    ws.on('close', (code) => {
      this.closeCodes.push(code)
      if (!this.#stopped) setTimeout(() => { this.#open() }, Math.random() * 50)
    })
  }

  close (): void {
    this.#stopped = true
    this.#ws?.terminate()
  }
}
