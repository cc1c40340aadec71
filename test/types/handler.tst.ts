import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import wsHandlers, {
  close, defineHandler, text, topic, type ErrorReasonCode, type InFrame, type Position, type RequestSnapshot, type TerminateReason, type TimeoutMessage,
  type TopicEvent, type WebSocketContext, type WebSocketHandler
} from '../../lib/index.js'
import { handlerHarness } from '../../lib/testing.js'

test('defineHandler<State> types the state in every callback', () => {
  defineHandler<{ count: number }>({
    init: () => ({ state: { count: 0 } }),
    websocketInit: (state) => {
      expect(state).type.toBe<{ count: number }>()
    },
    handle: (frame, state, ctx) => {
      expect(frame).type.toBe<InFrame>()
      expect(state).type.toBe<{ count: number }>()
      expect(ctx).type.toBe<WebSocketContext<unknown>>()
      return { state: { count: state.count + 1 }, reply: text(String(state.count)) }
    },
    terminate: (reason, request, state) => {
      expect(reason).type.toBe<TerminateReason>()
      expect(request).type.toBe<RequestSnapshot>()
      expect(state).type.toBe<{ count: number }>()
      if (reason.type === 'error') {
        expect(reason.error.code).type.toBe<ErrorReasonCode>() // FST_WS_…, WS_ERR_… or Z_…: switch on it without a cast
        expect(reason.error).type.toBeAssignableTo<Error>()
      }
    }
  })
})

test('the state type is inferred from init without naming it', () => {
  defineHandler({
    init: () => ({ state: { user: 'ada', visits: 1 } }),
    handle: (_frame, state) => {
      expect(state).type.toBe<{ user: string, visits: number }>()
    }
  })
})

test('the Info type flows to info and to ctx.post; timer messages only where Info names them', () => {
  type Info = { type: 'tick' } | { type: 'say', text: string }
  defineHandler<undefined, Info>({
    websocketInit: (_state, ctx) => {
      ctx.post({ type: 'tick' })
      expect(ctx.post).type.toBeCallableWith({ type: 'say', text: 'hi' })
      expect(ctx.post).type.not.toBeCallableWith({ type: 'shout' })
      expect(ctx.startTimer).type.not.toBeCallableWith(1000, { type: 'tick' }) // info does not expect TimeoutMessage
      ctx.sendAfter(1000, { type: 'tick' })
    },
    info: (message) => {
      expect(message).type.toBe<Info>()
      return message.type === 'say' ? { reply: text(message.text) } : undefined
    }
  })
  // A plain string Info is a string in info: no timer wrapper to rule out first.
  defineHandler<undefined, string>({ info: (message) => ({ reply: text(message.toUpperCase()) }) })
})

test('a handler that starts timers names TimeoutMessage in its Info, and gets it narrowed', () => {
  type Tick = { every: number }
  type Info = { type: 'timeout', note: string } | TimeoutMessage<Tick> // an app message may be called timeout too
  const ticking = defineHandler<undefined, Info>({
    websocketInit: (_state, ctx) => {
      ctx.startTimer(1000, { every: 1000 })
      expect(ctx.startTimer).type.not.toBeCallableWith(1000, 'tick')
    },
    info: (message) => {
      if ('ref' in message) expect(message.message).type.toBe<Tick>()
      else expect(message.note).type.toBe<string>()
      return undefined
    }
  })
  const app = Fastify()
  app.route({ method: 'GET', url: '/t', handler: async () => 'http', ws: ticking })
  app.ws('/t', ticking)
  // With the default Info (unknown) any timer payload goes, and info gets unknown.
  defineHandler({ websocketInit: (_state, ctx) => { ctx.startTimer(5, 'anything') }, info: (message) => { expect(message).type.toBe<unknown>() } })
})

test('terminate reasons narrow by type', () => {
  const reason = {} as TerminateReason
  if (reason.type === 'remote') expect(reason.code).type.toBe<number | undefined>()
  if (reason.type === 'stop') expect(reason.code).type.toBe<number>()
  if (reason.type === 'error') expect(reason.error).type.toBe<Error & { readonly code: ErrorReasonCode }>()
})

test('a result of the wrong shape does not compile', () => {
  expect(defineHandler({ handle: () => ({ repl: text('x') }) })).type.toRaiseError()
  expect(defineHandler({ handle: () => ({ reply: 'hello' }) })).type.toRaiseError()
  expect(defineHandler({ handle: () => ({ stop: 'yes' }) })).type.toRaiseError()
  expect(defineHandler<number>({ handle: () => ({ state: 'not a number' }) })).type.toRaiseError()
  expect(defineHandler({ handle: () => ({ options: { compress: true } }) })).type.toRaiseError()
  expect(close).type.not.toBeCallableWith('1000')
})

test('valid results compile, sync or async', () => {
  defineHandler<number>({
    handle: async () => ({ state: 1, reply: [text('a'), close(1000, 'bye')] }),
    info: () => ({ stop: true, hibernate: true, active: false, options: { idleTimeout: 5000, maxFrameSize: Infinity } })
  })
})

test('app.ws and the ws route option take handlers of any state type', async () => {
  const app = Fastify()
  await app.register(wsHandlers, { idleTimeout: 30_000, protocols: ['mqtt'] })
  const handler: WebSocketHandler<{ n: number }, string> = { init: () => ({ state: { n: 1 } }) }
  app.ws('/a', handler, { maxFrameSize: 1024 })
  app.route({ method: 'GET', url: '/b', handler: async () => 'http', ws: handler, wsOptions: { protocols: ['mqtt'] } })
  expect(app.ws).type.not.toBeCallableWith('/c', handler, { idleTimeot: 5 })
  expect(app.wsConnections.post('id', 'message')).type.toBe<boolean>()
  expect(app.wsConnections.get('id')).type.toBe<WebSocketContext<unknown> | undefined>()
})

test('init may refuse by returning the sent reply', () => {
  defineHandler({
    init: async (request, reply) => {
      if (request.headers.authorization === undefined) return await reply.code(401).send()
      return { state: 'ok', protocol: 'mqtt', options: { compress: true, keepHeaders: ['x-user'] } }
    }
  })
})

test('route generics type params and query in init and ctx.request, as app.get<{ Params }> does', () => {
  const app = Fastify()
  app.ws<{ room: string }, unknown, never, { Params: { name: string }, Querystring: { token?: string } }>('/room/:name', {
    init: (request) => {
      expect(request.params.name).type.toBe<string>()
      expect(request.query.token).type.toBe<string | undefined>()
      return { state: { room: request.params.name } }
    },
    websocketInit: (state, ctx) => {
      expect(ctx.request.params).type.toBe<{ name: string }>()
      expect(state.room).type.toBe<string>()
    },
    terminate: (_reason, request) => {
      expect(request.query).type.toBe<{ token?: string }>()
    }
  })
  defineHandler({
    websocketInit: (_state, ctx) => {
      expect(ctx.request.params).type.toBe<unknown>()
    }
  })
})

test('a JSON route types its messages with the third parameter; other routes have no json data', () => {
  defineHandler<undefined, unknown, { text: string }>({
    handle: (frame) => {
      if (frame.type === 'json') expect(frame.data).type.toBe<{ text: string }>()
    }
  })
  defineHandler({
    handle: (frame) => {
      if (frame.type === 'text') expect(frame.data).type.toBe<string>()
      if (frame.type === 'json') expect(frame.data).type.toBe<never>()
    }
  })
})

test('ctx.stream types items from the source and checks what `to` makes against Info', () => {
  type Info = { type: 'tick', n: number } | { type: 'done' }
  async function * ticks (): AsyncGenerator<number> { yield 1 }
  defineHandler<undefined, Info>({
    websocketInit: (_state, ctx) => {
      ctx.stream(ticks(), {
        next: (n) => {
          expect(n).type.toBe<number>()
          return { type: 'tick', n }
        },
        complete: () => ({ type: 'done' })
      })
      ctx.stream(['a'], { next: (letter) => ({ type: 'tick', n: letter.length }) })
      expect(ctx.stream).type.not.toBeCallableWith(ticks(), { next: (n: number) => ({ type: 'tock', n }) })
    }
  })
})

test('handlerHarness takes the handler\'s JSON message type', () => {
  interface Say { type: 'say', text: string }
  const h = handlerHarness(defineHandler<undefined, unknown, Say>({ handle: () => undefined }))
  expect(h.handleJson).type.toBeCallableWith({ type: 'say', text: 'hi' })
  expect(h.handleJson).type.not.toBeCallableWith({ type: 'shout' })
  expect(h.handle).type.toBeCallableWith({ type: 'json', data: { type: 'say', text: 'hi' } })
})

test('a typed topic checks publish and the subscribers\' info against each other', () => {
  type Price = { symbol: string, price: number }
  type Chat = { from: string, text: string }
  const prices = topic<Price>('prices')
  const app = Fastify()
  expect(app.wsConnections.publish).type.toBeCallableWith(prices, { symbol: 'ACME', price: 1 })
  expect(app.wsConnections.publish).type.not.toBeCallableWith(prices, { from: 'ada', text: 'hi' })
  expect(app.wsConnections.publish).type.toBeCallableWith('prices', { anything: true }) // a plain name stays untyped
  defineHandler<undefined, Price>({
    websocketInit: (_state, ctx) => {
      ctx.subscribe(prices)
      expect(ctx.subscribe).type.not.toBeCallableWith(topic<Chat>('chat')) // info does not take Chat
    },
    info: (message) => ({ reply: text(`${message.symbol} ${message.price}`) })
  })
  // An Info that names more than the topic's messages takes it too.
  defineHandler<undefined, Price | Chat>({ websocketInit: (_state, ctx) => { ctx.subscribe(prices) } })
  expect(app.wsConnections.subscriberCount(prices)).type.toBe<number>()
})

test('a positioned subscription delivers TopicEvent<M>: info narrows it by kind; the topic\'s type is checked', () => {
  type Price = { symbol: string, price: number }
  type Chat = { from: string, text: string }
  const prices = topic<Price>('prices')
  const since: Position = { offset: 3, epoch: 'a1' }
  defineHandler<undefined, TopicEvent<Price>>({
    websocketInit: (_state, ctx) => {
      ctx.subscribe(prices, { since })
      ctx.subscribe('by-name', {})
      expect(ctx.subscribe).type.not.toBeCallableWith(topic<Chat>('chat'), {}) // info does not take Publication<Chat>
      expect(ctx.subscribe).type.not.toBeCallableWith(prices, { since: { offset: 3 } }) // a position has its epoch
    },
    info: (event) => {
      if (event.kind === 'publication') {
        expect(event.message).type.toBe<Price>()
        expect(event.position).type.toBe<Position>()
        return undefined
      }
      if (event.kind === 'subscribed') expect(event.recovered).type.toBe<number>()
      else expect(event.reason).type.toBe<'epoch' | 'trimmed' | 'ahead' | 'unavailable'>()
      return undefined
    }
  })
  const app = Fastify()
  expect(app.wsConnections.publishConfirmed(prices, { symbol: 'ACME', price: 1 })).type.toBe<Promise<Position>>()
  expect(app.wsConnections.publishConfirmed).type.not.toBeCallableWith(prices, { from: 'ada', text: 'hi' })
  expect(app.wsConnections.drain({ batchSize: 100, code: 1012 })).type.toBe<Promise<void>>()
  expect(app.wsConnections.drain).type.not.toBeCallableWith({ code: 1000 })
})
