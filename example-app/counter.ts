// State threaded through async callbacks, kept headers, live options and terminate reasons.
import type { FastifyBaseLogger } from 'fastify'
import { close, defineHandler, text } from '../lib/index.js'

interface CounterState { user: string, count: number, log?: FastifyBaseLogger }

export const counter = defineHandler<CounterState>({
  // Before the upgrade: refuse without a name (HTTP 400), otherwise build the initial state.
  init (request, reply) {
    const { name } = request.query as { name?: string }
    if (name === undefined || name === '') return reply.code(400).send({ error: 'add ?name=…' })
    return { state: { user: name, count: 0 }, options: { idleTimeout: 30_000 } }
  },
  // ctx.log is the connection's logger (route, request and connection ids): keep it for terminate.
  websocketInit: (state, ctx) => ({
    state: { ...state, log: ctx.log },
    reply: text(`hi ${state.user}, send "+" to count, "bye" to leave`)
  }),
  async handle (frame, state) {
    if (frame.type !== 'text') return undefined
    if (frame.data === 'bye') return { reply: [text(`final count ${state.count}`), close(1000, 'bye')] }
    if (frame.data !== '+') return { reply: text('only "+" and "bye" are understood') }
    await new Promise((resolve) => setTimeout(resolve, 5)) // async is fine: frames wait their turn
    const next = { ...state, count: state.count + 1 }
    return { state: next, reply: text(String(next.count)) }
  },
  terminate (reason, request, state) {
    state.log?.info({ user: state.user, ip: request.ip, reason: reason.type, count: state.count }, 'counter ended')
  }
})
