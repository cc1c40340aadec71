/**
 * `handlerHarness(handler)`: drives a handler object without any socket, as the server would:
 * frames, infos and timer firings in, the commands and state out; results checked, topics and
 * timers refused, and callbacks stopped after a close, exactly as on the server.
 */
import type { FastifyBaseLogger } from 'fastify'
import { resultProblem } from '../actor/results.js'
import { iteratorOf } from '../actor/streams.js'
import { nextTimerRef } from '../actor/timers.js'
import { InvalidResultError } from '../core/errors.js'
import type {
  CloseFrame, Commands, InFrame, OutFrame, RequestSnapshot, StreamRef, SubscribeOptions, Topic, StreamTo, TerminateReason, TimerRef, WebSocketContext, WebSocketHandler
} from '../core/types.js'
import { nameOf, topicName } from '../core/topics.js'

const ignore = (): void => {}

/** What one callback produced. */
export interface Step<State> {
  /** The result as returned (checked like the server checks it: a bad one throws FST_WS_INVALID_RESULT). */
  readonly result: Commands<State> | undefined
  /** The state after the callback. */
  readonly state: State
  /** The frames it replied with, up to and without a close frame. */
  readonly replies: readonly OutFrame[]
  /** The close it asked for (a `close()` frame, or `stop`: 1000), if any. */
  readonly close: { readonly code: number, readonly reason: string } | undefined
}

/** A timer the handler started: `message` is what `sendAfter` got (an Info), or `startTimer`'s payload (`wrapped`: delivered as a TimeoutMessage). */
export interface PendingTimer { readonly ref: TimerRef, readonly ms: number, readonly message: unknown, readonly wrapped: boolean }

export interface HarnessOptions<State> {
  /** The state `websocketInit` starts from (what `init` would have returned). */
  state?: State
  /** Fields of `ctx.request`. */
  request?: Partial<RequestSnapshot>
}

export interface HandlerHarness<State, Info, Message = never> {
  /** The current state. */
  readonly state: State
  /** The connection the callbacks see. */
  readonly ctx: WebSocketContext<Info>
  /** Timers started and not yet fired or cancelled. */
  readonly timers: ReadonlyArray<PendingTimer>
  /** Messages the handler posted to itself, not yet delivered. */
  readonly posted: readonly Info[]
  websocketInit(): Promise<Step<State>>
  /** A frame to `handle`: a string is a text frame, a Buffer a binary one. */
  handle(frame: InFrame<Message> | string | Buffer): Promise<Step<State>>
  /** A JSON route's message to `handle`, as `{ type: 'json', data }` (typed by the handler's Message). */
  handleJson(data: Message): Promise<Step<State>>
  info(message: Info): Promise<Step<State>>
  /** Fire a pending timer (the oldest, or by ref) as the server would: through `info`. */
  fireTimer(ref?: TimerRef): Promise<Step<State>>
  /** Deliver what the handler posted to itself, in order; the steps. */
  deliverPosted(): Promise<Array<Step<State>>>
  /** The streams the handler started (`ctx.stream`) and has not stopped, oldest first. */
  readonly streams: readonly StreamRef[]
  /**
   * Pull a stream's next item (the oldest stream's, or by ref) and run `info` with it, as the
   * server does once the previous item's `info` has run; at its end, `info` with `to.complete()`
   * (undefined without one), and the stream is gone. A source that throws without `to.error`
   * rejects, as the server would crash.
   */
  streamNext(ref?: StreamRef): Promise<Step<State> | undefined>
  terminate(reason?: TerminateReason): Promise<void>
}

const silentLog: FastifyBaseLogger = {
  level: 'silent',
  fatal: ignore,
  error: ignore,
  warn: ignore,
  info: ignore,
  debug: ignore,
  trace: ignore,
  silent: ignore,
  child: () => silentLog
}

/** Drive a handler object without a socket: callbacks in, commands and state out. */
export function handlerHarness<State = undefined, Info = unknown, Message = never> (
  handler: WebSocketHandler<State, Info, Message>, options: HarnessOptions<State> = {}
): HandlerHarness<State, Info, Message> {
  let state = options.state as State
  let alive = true
  /** A result closed the connection (a close frame or `stop`): only terminate may run now, as on the server. */
  let closedBy: string | undefined
  const timers: Array<PendingTimer> = []
  const posted: Info[] = []
  const streams: Array<{ ref: StreamRef, iterator: AsyncIterator<unknown> | Iterator<unknown>, to: StreamTo<unknown, Info> }> = []
  let lastStreamRef = 0
  const topics: string[] = []
  const request: RequestSnapshot = Object.freeze({
    id: 'req-test', method: 'GET', url: '/', routeUrl: '/', params: {}, query: {}, headers: {}, ip: '127.0.0.1', protocol: '', ...options.request
  })
  const ctx: WebSocketContext<Info> = {
    id: 'test-1',
    request,
    log: silentLog,
    get alive () { return alive },
    bufferedAmount: 0,
    get topics () { return [...topics] },
    post (message) {
      if (!alive || closedBy !== undefined) return false
      posted.push(message)
      return true
    },
    // The server's own checks: a bad delay or topic throws the same coded error (close 1011 there).
    sendAfter (ms, message) {
      const ref = nextTimerRef(ms)
      timers.push({ ref, ms, message, wrapped: false })
      return ref
    },
    startTimer (ms, message) {
      const ref = nextTimerRef(ms)
      timers.push({ ref, ms, message, wrapped: true })
      return ref
    },
    stream (source, to) {
      const iterator = iteratorOf(source)
      streams.push({ ref: ++lastStreamRef, iterator, to: to as StreamTo<unknown, Info> })
      return lastStreamRef
    },
    stopStream (ref) {
      const index = streams.findIndex((stream) => stream.ref === ref)
      if (index === -1) return false
      Promise.resolve(streams.splice(index, 1)[0]!.iterator.return?.()).catch(ignore)
      return true
    },
    cancelTimer (ref) {
      const index = timers.findIndex((timer) => timer.ref === ref)
      if (index === -1) return false
      timers.splice(index, 1)
      return true
    },
    subscribe (to: string | Topic<unknown>, _options?: SubscribeOptions) {
      const topic = topicName(to)
      if (topics.includes(topic)) return false
      topics.push(topic)
      return true
    },
    unsubscribe (to) {
      const index = topics.indexOf(nameOf(to))
      if (index === -1) return false
      topics.splice(index, 1)
      return true
    }
  }

  async function step (name: 'websocketInit' | 'handle' | 'info', run: () => unknown): Promise<Step<State>> {
    if (!alive) throw new Error(`${name} after terminate`)
    if (closedBy !== undefined) throw new Error(`${name} after the connection closed (${closedBy}): on the server, only terminate runs now`)
    const result = await run()
    const problem = resultProblem(result)
    if (result !== undefined && problem !== undefined) throw new InvalidResultError(name, problem)
    const commands = result as Commands<State> | undefined
    if (commands?.state !== undefined) state = commands.state
    const frames = commands?.reply === undefined ? [] : Array.isArray(commands.reply) ? commands.reply : [commands.reply as OutFrame]
    const closeAt = frames.findIndex((frame) => frame.type === 'close')
    const closeFrame = closeAt === -1 ? undefined : frames[closeAt] as CloseFrame
    const close = closeFrame !== undefined
      ? { code: closeFrame.code ?? 1000, reason: closeFrame.reason ?? '' }
      : commands?.stop === true ? { code: 1000, reason: '' } : undefined
    if (close !== undefined) closedBy = `${name} returned a close with ${close.code}`
    return { result: commands, state, replies: closeAt === -1 ? frames : frames.slice(0, closeAt), close }
  }

  return {
    get state () { return state },
    ctx,
    get timers () { return timers },
    get posted () { return posted },
    websocketInit: async () => await step('websocketInit', () => handler.websocketInit?.(state, ctx)),
    handle: async (frame) => {
      const inFrame: InFrame<Message> = typeof frame === 'string'
        ? { type: 'text', data: frame }
        : Buffer.isBuffer(frame) ? { type: 'binary', data: frame } : frame
      return await step('handle', () => handler.handle?.(inFrame, state, ctx))
    },
    handleJson: async (data) => await step('handle', () => handler.handle?.({ type: 'json', data }, state, ctx)),
    info: async (message) => await step('info', () => handler.info?.(message, state, ctx)),
    fireTimer: async (ref) => {
      const index = ref === undefined ? 0 : timers.findIndex((timer) => timer.ref === ref)
      const timer = timers[index]
      if (timer === undefined) throw new Error(ref === undefined ? 'no timer is pending' : `timer ${ref} is not pending`)
      timers.splice(index, 1)
      // As the server delivers them: startTimer's payload wrapped (Info includes TimeoutMessage then).
      const message = (timer.wrapped ? { type: 'timeout', ref: timer.ref, message: timer.message } : timer.message) as Info
      return await step('info', () => handler.info?.(message, state, ctx))
    },
    get streams () { return streams.map((stream) => stream.ref) },
    streamNext: async (ref) => {
      const index = ref === undefined ? 0 : streams.findIndex((stream) => stream.ref === ref)
      const stream = streams[index]
      if (stream === undefined) throw new Error(ref === undefined ? 'no stream is running' : `stream ${ref} is not running`)
      let result: IteratorResult<unknown>
      try {
        result = await stream.iterator.next()
      } catch (error) {
        streams.splice(index, 1)
        if (stream.to.error === undefined) throw error
        const message = stream.to.error(error)
        return await step('info', () => handler.info?.(message, state, ctx))
      }
      if (result.done === true) {
        streams.splice(index, 1)
        if (stream.to.complete === undefined) return undefined
        const message = stream.to.complete()
        return await step('info', () => handler.info?.(message, state, ctx))
      }
      const message = stream.to.next(result.value)
      return await step('info', () => handler.info?.(message, state, ctx))
    },
    deliverPosted: async () => {
      const steps: Array<Step<State>> = []
      while (posted.length > 0) {
        const message = posted.shift()!
        steps.push(await step('info', () => handler.info?.(message, state, ctx)))
      }
      return steps
    },
    terminate: async (reason = { type: 'remote', code: 1000, reason: '' }) => {
      if (!alive) throw new Error('terminate runs once')
      alive = false
      timers.length = 0
      for (const stream of streams.splice(0)) Promise.resolve(stream.iterator.return?.()).catch(ignore)
      topics.length = 0
      await handler.terminate?.(reason, request, state)
    }
  }
}
