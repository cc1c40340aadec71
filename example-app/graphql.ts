// GraphQL over WebSocket: the graphql-transport-ws protocol (the `graphql-ws` library's) on this
// plugin. connection_init/ack, subscribe → next … complete, ping/pong and the protocol's 44xx
// closes are commands; a subscription is a `ctx.stream` of graphql-js's async iterator, fed by a
// topic: `say` (a mutation, or POST /graphql/say) publishes, every subscriber's stream delivers.
import {
  GraphQLError, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, GraphQLString,
  execute, getOperationAST, parse, subscribe, validate, type ExecutionResult
} from 'graphql'
import { close, defineHandler, json, topic, type OutFrame, type StreamRef, type WebSocketConnections, type WebSocketContext } from '../lib/index.js'

/** A chat line, as published on its room's topic and as the schema's Message. */
export interface Line { room: string, from: string, text: string }
export const roomTopic = (room: string) => topic<Line>(`graphql:${room}`)

/** What the client sends (graphql-transport-ws). */
type ClientMessage =
  | { type: 'connection_init', payload?: Record<string, unknown> }
  | { type: 'ping' | 'pong', payload?: Record<string, unknown> }
  | { type: 'subscribe', id: string, payload: { query: string, variables?: Record<string, unknown> | null, operationName?: string | null } }
  | { type: 'complete', id: string }

/** What reaches info: lines from the rooms this connection listens to, its streams' results, the init timer. */
type Info =
  | Line
  | { kind: 'next', id: string, result: ExecutionResult }
  | { kind: 'complete', id: string }
  | { kind: 'init-timeout' }

/** The protocol's messages, checked before `handle` (anything else: close 4400). */
export const clientMessageSchema = {
  type: 'object',
  required: ['type'],
  properties: { type: { enum: ['connection_init', 'ping', 'pong', 'subscribe', 'complete'] } },
  allOf: [
    {
      if: { properties: { type: { const: 'subscribe' } } },
      then: { required: ['id', 'payload'], properties: { id: { type: 'string', minLength: 1 }, payload: { type: 'object', required: ['query'], properties: { query: { type: 'string' } } } } }
    },
    { if: { properties: { type: { const: 'complete' } } }, then: { required: ['id'], properties: { id: { type: 'string' } } } }
  ]
}

interface State {
  acknowledged: boolean
  /** Operation id → its stream (subscriptions) or null (a query running). */
  operations: Map<string, StreamRef | null>
  /** Room → the pushers of this connection's subscriptions to it. */
  rooms: Map<string, Set<(line: Line) => void>>
}

const send = (message: Record<string, unknown>): OutFrame => json(message)

/** An async iterator that `info` pushes lines into and graphql-js pulls from. */
function roomFeed (state: State, ctx: WebSocketContext<Info>, room: string): AsyncIterableIterator<Line> {
  const waiting: Line[] = []
  let wake: ((result: IteratorResult<Line>) => void) | undefined
  const listeners = state.rooms.get(room) ?? new Set()
  const push = (line: Line): void => {
    if (wake === undefined) waiting.push(line)
    else {
      wake({ value: line, done: false })
      wake = undefined
    }
  }
  const stop = async (): Promise<IteratorResult<Line>> => {
    listeners.delete(push) // the room's set stays (empty): a line already queued for it finds no feed
    if (listeners.size === 0) ctx.unsubscribe(roomTopic(room))
    wake?.({ value: undefined, done: true })
    return { value: undefined, done: true }
  }
  listeners.add(push)
  state.rooms.set(room, listeners)
  ctx.subscribe(roomTopic(room))
  return {
    next: async () => {
      const line = waiting.shift()
      if (line !== undefined) return { value: line, done: false }
      return await new Promise((resolve) => { wake = resolve })
    },
    return: stop,
    [Symbol.asyncIterator] () { return this }
  }
}

interface Context { state: State, ctx: WebSocketContext<Info>, connections: WebSocketConnections }

const MessageType = new GraphQLObjectType<Line>({
  name: 'Message',
  fields: { room: { type: new GraphQLNonNull(GraphQLString) }, from: { type: new GraphQLNonNull(GraphQLString) }, text: { type: new GraphQLNonNull(GraphQLString) } }
})

export const schema = new GraphQLSchema({
  query: new GraphQLObjectType({
    name: 'Query',
    fields: { hello: { type: GraphQLString, resolve: () => 'world' }, rooms: { type: new GraphQLList(GraphQLString), resolve: (_root, _args, { connections }: Context) => [...connections.topics()].filter((name) => name.startsWith('graphql:')).map((name) => name.slice('graphql:'.length)) } }
  }),
  mutation: new GraphQLObjectType({
    name: 'Mutation',
    fields: {
      say: {
        type: MessageType,
        args: { room: { type: new GraphQLNonNull(GraphQLString) }, from: { type: new GraphQLNonNull(GraphQLString) }, text: { type: new GraphQLNonNull(GraphQLString) } },
        resolve: (_root, line: Line, { connections }: Context) => {
          connections.publish(roomTopic(line.room), line)
          return line
        }
      }
    }
  }),
  subscription: new GraphQLObjectType({
    name: 'Subscription',
    fields: {
      countdown: { // a subscription that ends by itself: next … complete
        type: new GraphQLNonNull(GraphQLString),
        args: { from: { type: new GraphQLNonNull(GraphQLString) } },
        subscribe: async function * (_root, { from }: { from: string }) { for (let n = Number(from); n > 0; n--) yield String(n) },
        resolve: (n) => n
      },
      messages: {
        type: new GraphQLNonNull(MessageType),
        args: { room: { type: new GraphQLNonNull(GraphQLString) } },
        subscribe: (_root, { room }: { room: string }, { state, ctx }: Context) => roomFeed(state, ctx, room),
        resolve: (line) => line
      }
    }
  })
})

export function graphqlOverWebSocket (connections: WebSocketConnections) {
  return defineHandler<State, Info, ClientMessage>({
    init: () => ({ state: { acknowledged: false, operations: new Map(), rooms: new Map() } }),

    // The protocol's timeout for connection_init (3 s, as graphql-ws's server).
    websocketInit: (_state, ctx) => { ctx.sendAfter(3000, { kind: 'init-timeout' }) },

    async handle (frame, state, ctx) {
      if (frame.type !== 'json') return undefined // pings and pongs of WebSocket itself
      const message = frame.data
      switch (message.type) {
        case 'connection_init':
          if (state.acknowledged) return { reply: close(4429, 'Too many initialisation requests') }
          return { state: { ...state, acknowledged: true }, reply: send({ type: 'connection_ack' }) }
        case 'ping':
          return { reply: send({ type: 'pong' }) }
        case 'pong':
          return undefined
        case 'complete': {
          const ref = state.operations.get(message.id)
          if (ref !== undefined && ref !== null) ctx.stopStream(ref)
          state.operations.delete(message.id)
          return undefined
        }
        case 'subscribe':
          return await subscribeTo(message, state, ctx, connections)
      }
    },

    info (message, state) {
      if ('room' in message) { // a line on a room's topic: to this connection's feeds of that room
        for (const push of state.rooms.get(message.room)!) push(message)
        return undefined
      }
      if (message.kind === 'init-timeout') return state.acknowledged ? undefined : { reply: close(4408, 'Connection initialisation timeout') }
      /* c8 ignore next -- the client completed while this item waited in the mailbox (at most one: a stream pulls after info ran) */
      if (!state.operations.has(message.id)) return undefined
      if (message.kind === 'next') return { reply: send({ type: 'next', id: message.id, payload: message.result }) }
      state.operations.delete(message.id)
      return { reply: send({ type: 'complete', id: message.id }) }
    },

    terminate: (_reason, _request, state) => {
      // Streams stop with the connection (their iterators' return() runs): nothing else to release.
      state.operations.clear()
    }
  })
}

async function subscribeTo (
  message: Extract<ClientMessage, { type: 'subscribe' }>, state: State, ctx: WebSocketContext<Info>, connections: WebSocketConnections
) {
  const { id, payload } = message
  if (!state.acknowledged) return { reply: close(4401, 'Unauthorized') }
  if (state.operations.has(id)) return { reply: close(4409, `Subscriber for ${id} already exists`) }
  let document
  try {
    document = parse(payload.query)
  } catch (error) {
    return { reply: send({ type: 'error', id, payload: [(error as GraphQLError).toJSON()] }) }
  }
  const errors = validate(schema, document)
  if (errors.length > 0) return { reply: send({ type: 'error', id, payload: errors.map((error) => error.toJSON()) }) }
  const args = { schema, document, variableValues: payload.variables, operationName: payload.operationName, contextValue: { state, ctx, connections } }
  if (getOperationAST(document, payload.operationName)?.operation !== 'subscription') {
    const result = await execute(args)
    return { reply: [send({ type: 'next', id, payload: result }), send({ type: 'complete', id })] }
  }
  const results = await subscribe(args)
  if (!(Symbol.asyncIterator in results)) return { reply: [send({ type: 'next', id, payload: results }), send({ type: 'complete', id })] }
  // Each result reaches info in order, one at a time; the iterator is released at complete or close.
  state.operations.set(id, ctx.stream(results, {
    next: (result) => ({ kind: 'next', id, result }),
    complete: () => ({ kind: 'complete', id })
  }))
  return undefined
}
