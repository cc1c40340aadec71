// A chat: rooms are topics, messages are JSON. The page (chat-page.ts) and the WebSocket share
// the path /chat. Said messages are broadcast, encoded once for the whole room; presence travels
// as published infos and posts by id, so it works across instances sharing Redis too.
import { close, defineHandler, text, type WebSocketConnections } from '../lib/index.js'

/** What the server tells a browser. */
export type ChatEvent =
  | { type: 'welcome', id: string, name: string, room: string, members: string[] }
  | { type: 'said', from: string, text: string, at: number }
  | { type: 'joined' | 'left', name: string, members: string[] }
  | { type: 'members', members: string[] }
  | { type: 'error', message: string }

/** What connections of one room tell each other (published, or posted by id). */
type Presence =
  | { type: 'join', id: string, name: string } // published by a newcomer
  | { type: 'here', id: string, name: string } // posted back to the newcomer by each member
  | { type: 'leave', id: string, name: string } // published from terminate

interface ChatState {
  id: string
  name: string
  room: string
  /** Connection id → name, of everyone in the room (self included). */
  members: Map<string, string>
}

const NAME = /^[\p{L}\p{N} _.-]{1,24}$/u
const MAX_TEXT = 2000

const send = (event: ChatEvent) => text(JSON.stringify(event))
const roomTopic = (room: string): string => `chat:${room}`
const names = (state: ChatState): string[] => [...state.members.values()].sort((a, b) => a.localeCompare(b))

export function chat (connections: WebSocketConnections) {
  return defineHandler<ChatState, Presence>({
    init (request, reply) {
      const { name = '', room = '' } = request.query as { name?: string, room?: string }
      if (!NAME.test(name) || !NAME.test(room)) {
        return reply.code(400).send({ error: 'name and room: 1 to 24 letters, digits, spaces, _ . or -' })
      }
      return { state: { id: '', name, room, members: new Map() } }
    },

    websocketInit (state, ctx) {
      ctx.subscribe(roomTopic(state.room))
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
      // One frame for the whole room, the sender included: everyone sees the same order and time.
      connections.broadcast(roomTopic(state.room), send({ type: 'said', from: state.name, text: words.trim(), at: Date.now() }))
      ctx.log.debug({ room: state.room }, 'said')
      return undefined
    },

    info (message, state) {
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
