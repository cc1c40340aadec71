/**
 * A route that follows the topic `feed` with positions (`?since=<epoch>:<offset>`), and shows
 * each event as one text frame: `p:<offset>:<message>`, `subscribed:<offset>:<recovered>`,
 * `resync:<offset>:<reason>`. Shared by the history tests (in process, on Redis).
 */
import { defineHandler, parsePosition, text, topic, type Position, type TopicEvent, type WebSocketContext } from '../lib/index.js'

export const feed = topic<string>('feed')

/** `?since=` of a request's query (the plugin's parsePosition: undefined when absent or not a position). */
export function sinceOf (query: unknown): Position | undefined {
  return parsePosition((query as { since?: string }).since)
}

export function show (event: TopicEvent<string>): string {
  switch (event.kind) {
    case 'publication': return `p:${event.position.offset}:${event.message}`
    case 'subscribed': return `subscribed:${event.position.offset}:${event.recovered}`
    case 'resync': return `resync:${event.position.offset}:${event.reason}`
  }
}

/** Follow `feed` since the position in the URL (`?since=<epoch>:<offset>`), or from now. */
const followFeed = (_state: undefined, ctx: WebSocketContext<TopicEvent<string>>): void => { ctx.subscribe(feed, { since: sinceOf(ctx.request.query) }) }

export const follower = defineHandler<undefined, TopicEvent<string>>({
  websocketInit: followFeed,
  info: (event) => ({ reply: text(show(event)) })
})

/** The offsets of the publications among frames seen (`text:p:<offset>:…`). */
export function offsetsOf (frames: readonly string[]): number[] {
  return frames.filter((frame) => frame.startsWith('text:p:')).map((frame) => Number(frame.split(':')[2]))
}

/** 1, 2, … n after `from`. */
export function range (from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
}

/** The same, each event as JSON with its whole position: what a client needs to come back (the failover tests). */
export const jsonFollower = defineHandler<undefined, TopicEvent<string>>({
  websocketInit: followFeed,
  info: (event) => ({ reply: text(JSON.stringify({ ...event, topic: undefined })) })
})
