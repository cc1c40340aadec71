// A chat: rooms are topics, messages are JSON. The page (chat-page.ts) and the WebSocket share
// the path /chat. What is said is published to the room's log, a topic with history: each
// message carries its position (`pos`), and a page that comes back with `?since=<pos>` (after a
// lost network, a killed instance, a deploy) gets what it missed, once, in order. Presence
// travels as published infos and posts by id, so it works across instances sharing Redis too.
import { close, defineHandler, text, type Position, type TopicEvent, type WebSocketConnections } from '../lib/index.js'
import { posOf, sinceOf } from './positions.js'

/** Topics of said messages keep a history (see `chatHistory`). */
export const logTopic = (room: string): string => `chat-log:${room}`
/** The plugin's `history` option for the chat: the last 500 messages of each room, for an hour. */
export const chatHistory = { 'chat-log:*': { size: 500, maxAgeMs: 3_600_000 } }

/** What is said, as it is kept in the room's log. */
interface Said { from: string, text: string, at: number }

/** What the server tells a browser. `pos` ("<epoch>:<offset>"): where the page is in the room's log. */
export type ChatEvent =
  | { type: 'welcome', id: string, name: string, room: string, members: string[] }
  | { type: 'said', from: string, text: string, at: number, pos: string }
  | { type: 'caught-up', recovered: number, pos: string }
  | { type: 'missed', reason: string, pos: string }
  | { type: 'joined' | 'left', name: string, members: string[] }
  | { type: 'members', members: string[] }
  | { type: 'error', message: string }

/** What connections of one room tell each other (published, or posted by id). */
type Presence =
  | TopicEvent<Said> // the room's log
  | { type: 'join', id: string, name: string } // published by a newcomer
  | { type: 'here', id: string, name: string } // posted back to the newcomer by each member
  | { type: 'leave', id: string, name: string } // published from terminate

interface ChatState {
  id: string
  name: string
  room: string
  /** Connection id → name, of everyone in the room (self included). */
  members: Map<string, string>
  /** Where the page was in the room's log (from its reconnect URL). */
  since?: Position | undefined
}

const NAME = /^[\p{L}\p{N} _.-]{1,24}$/u
const MAX_TEXT = 2000

const send = (event: ChatEvent) => text(JSON.stringify(event))
const roomTopic = (room: string): string => `chat:${room}`
const names = (state: ChatState): string[] => [...state.members.values()].sort((a, b) => a.localeCompare(b))

export function chat (connections: WebSocketConnections) {
  return defineHandler<ChatState, Presence>({
    init (request, reply) {
      const { name = '', room = '', since } = request.query as { name?: string, room?: string, since?: string }
      if (!NAME.test(name) || !NAME.test(room)) {
        return reply.code(400).send({ error: 'name and room: 1 to 24 letters, digits, spaces, _ . or -' })
      }
      return { state: { id: '', name, room, members: new Map(), since: sinceOf(since) } }
    },

    websocketInit (state, ctx) {
      ctx.subscribe(roomTopic(state.room))
      // What was said since the page's last message (or from now on): first, then live.
      ctx.subscribe(logTopic(state.room), { since: state.since })
      connections.publish(roomTopic(state.room), { type: 'join', id: ctx.id, name: state.name })
      const next = { ...state, id: ctx.id, members: new Map([[ctx.id, state.name]]) }
      return { state: next, reply: send({ type: 'welcome', id: ctx.id, name: state.name, room: state.room, members: names(next) }) }
    },

    handle (frame, state, ctx) {
      if (frame.type === 'binary') return { reply: close(1003, 'chat messages are JSON text') }
      if (frame.type !== 'text') return undefined
      let said: unknown
      try {
        said = JSON.parse(frame.data)
      } catch {
        return { reply: send({ type: 'error', message: 'not JSON' }) }
      }
      const { type, text: words } = said as { type?: unknown, text?: unknown }
      if (type !== 'say' || typeof words !== 'string' || words.trim() === '' || words.length > MAX_TEXT) {
        return { reply: send({ type: 'error', message: `expected {"type":"say","text":"…"} (at most ${MAX_TEXT} characters)` }) }
      }
      // Into the room's log: everyone, the sender included, sees the same order and time.
      connections.publish(logTopic(state.room), { from: state.name, text: words.trim(), at: Date.now() } satisfies Said)
      ctx.log.debug({ room: state.room }, 'said')
      return undefined
    },

    info (message, state) {
      if ('kind' in message) {
        if (message.kind === 'publication') return { reply: send({ type: 'said', ...message.message, pos: posOf(message.position) }) }
        if (message.kind === 'subscribed') return { reply: send({ type: 'caught-up', recovered: message.recovered, pos: posOf(message.position) }) }
        return { reply: send({ type: 'missed', reason: message.reason, pos: posOf(message.position) }) }
      }
      if (message.id === state.id) return undefined // our own join
      const members = new Map(state.members)
      if (message.type === 'leave') {
        members.delete(message.id)
        const next = { ...state, members }
        return { state: next, reply: send({ type: 'left', name: message.name, members: names(next) }) }
      }
      members.set(message.id, message.name)
      const next = { ...state, members }
      if (message.type === 'join') {
        // Tell the newcomer we are here, on whichever instance it is.
        connections.post(message.id, { type: 'here', id: state.id, name: state.name })
        return { state: next, reply: send({ type: 'joined', name: message.name, members: names(next) }) }
      }
      return { state: next, reply: send({ type: 'members', members: names(next) }) }
    },

    terminate (_reason, _request, state) {
      if (state.id !== '') connections.publish(roomTopic(state.room), { type: 'leave', id: state.id, name: state.name })
    }
  })
}
