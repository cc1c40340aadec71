/**
 * The public contract of fastify-ws-handlers, in the order of cowboy_websocket's
 * `-type`/`-callback` block: frames, results (commands), terminate reasons, options,
 * the per-connection context and the handler callbacks. No runtime code lives here.
 */
import type { FastifyBaseLogger, FastifyReply, FastifyRequest, RouteGenericInterface } from 'fastify'
import type { PerMessageDeflateOptions } from 'ws'
import type { MeterProvider } from '@opentelemetry/api'

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/** A whole text message (fragments are reassembled, UTF-8 already checked). */
export interface TextFrame { readonly type: 'text', readonly data: string }
/** A whole binary message. */
export interface BinaryFrame { readonly type: 'binary', readonly data: Buffer }
/** A ping from the peer. It has already been answered with a pong when `handle` sees it. */
export interface PingFrame { readonly type: 'ping', readonly data: Buffer }
/** A pong from the peer. */
export interface PongFrame { readonly type: 'pong', readonly data: Buffer }

/** A text message parsed (and validated) as JSON, on a route with the `json` option. */
export interface JsonFrame<Message = unknown> { readonly type: 'json', readonly data: Message }

/**
 * What `handle` receives. Close frames are never delivered: they end the connection. On a route
 * with the `json` option, text arrives as `json` frames (type them with `defineHandler`'s third
 * parameter, e.g. from TypeBox's `Static<typeof schema>` or json-schema-to-ts's `FromSchema`).
 */
export type InFrame<Message = never> = TextFrame | BinaryFrame | PingFrame | PongFrame | JsonFrame<Message>

/** A close frame to send. `code` defaults to 1000; a `reason` over 123 UTF-8 bytes is cut to 120 and '…'. */
export interface CloseFrame { readonly type: 'close', readonly code?: number, readonly reason?: string }

/** A frame a callback can reply with; build them with `text`, `binary`, `ping`, `pong`, `close`. */
export type OutFrame =
  | TextFrame
  | { readonly type: 'binary', readonly data: Buffer | Uint8Array }
  | { readonly type: 'ping' | 'pong', readonly data?: Buffer | Uint8Array | string }
  | CloseFrame

// ---------------------------------------------------------------------------
// Results: commands instead of socket calls
// ---------------------------------------------------------------------------

/** Options a callback may change while the connection lives (Cowboy's `set_options`). */
export interface LiveOptions {
  /** Milliseconds without received data before the connection is closed with 1000; 0 disables. */
  idleTimeout?: number | undefined
  /**
   * Milliseconds of silence (nothing received) after which the server pings, and again every
   * `pingInterval` while silence lasts; the peer's pong counts as received data. Default 30000,
   * so a browser that only listens stays connected and a dead peer meets the idle timeout.
   * 0, or a value >= `idleTimeout`, sends no pings.
   */
  pingInterval?: number | undefined
  /** Largest frame or reassembled message, in bytes, inclusive; `Infinity` disables. Over it: close 1009. */
  maxFrameSize?: number | undefined
  /**
   * Outbound bytes from earlier writes that may still wait when a reply or broadcast is written;
   * over it the connection is closed with 1008 (a slow reader; one large reply is not one).
   */
  maxBufferedBytes?: number | undefined
  /**
   * Mailbox items that may wait. Past it the plugin stops reading from the socket (it reads again
   * at half), and `post` (and publishing) to the connection is refused (returns false).
   */
  mailboxLimit?: number | undefined
}

/**
 * What `websocketInit`, `handle` and `info` return. Every key is optional; `undefined` (or no
 * return) means "no command, state unchanged". Keys are applied in this order: `state`,
 * `options`, `active`, `reply`, `stop`, `hibernate`.
 */
export interface Commands<State> {
  /**
   * The state for the next callback. Without this key, or with `undefined` (as every key here:
   * `undefined` means absent), the state stays as it was; use `null` to clear it.
   */
  state?: State
  /** Frames to send, in order; nothing after a close frame is sent. */
  reply?: OutFrame | readonly OutFrame[]
  /** Close with 1000 and end the connection (terminate reason `stop`). */
  stop?: boolean
  /** The connection is expected to stay idle: release what can be rebuilt on the next message. */
  hibernate?: boolean
  /** `false` stops reading from the socket (flow control); `true` resumes. */
  active?: boolean
  /** Change options of this connection from now on. */
  options?: LiveOptions
}

/** The result of a callback: commands, or nothing. */
export type Result<State> = Commands<State> | undefined | void

/** What `init` returns to let the upgrade go ahead. */
export interface InitCommands<State> {
  /** The initial state, given to `websocketInit`. */
  state?: State
  /** The subprotocol to answer with; it must be one the client offered. */
  protocol?: string
  /** Options for this connection, over the route's and the plugin's. */
  options?: ConnectionOptions
}

/**
 * The result of `init`. To refuse, send a response through `reply` (the upgrade never happens);
 * returning that reply (`return reply.code(401).send()`) is allowed, as in a Fastify hook.
 */
export type InitResult<State> = InitCommands<State> | FastifyReply | undefined | void

// ---------------------------------------------------------------------------
// Terminate reasons (DESIGN.md §5), one per way a connection can end
// ---------------------------------------------------------------------------

/** A callback returned `stop` (code 1000) or replied with a close frame (its code and reason). */
export interface StopReason { readonly type: 'stop', readonly code: number, readonly reason: string }
/** The peer sent a close frame. `code` is undefined when the frame had no code (1005). */
export interface RemoteReason { readonly type: 'remote', readonly code: number | undefined, readonly reason: string }
/** No data was received for `idleTimeout` ms; the plugin closed with 1000. */
export interface TimeoutReason { readonly type: 'timeout' }
/**
 * The connection was closed for an error with this close code: 1002 protocol violation,
 * 1007 invalid UTF-8 (or, on a JSON route, invalid JSON), 1003 binary on a JSON route, 1008
 * outbound buffer over `maxBufferedBytes`, a message the JSON schema refused or over `rateLimit`,
 * 1009 frame over `maxFrameSize`, 1011 a callback returned a result of the wrong shape or an
 * event failed inside the plugin (FST_WS_INTERNAL).
 */
export interface ErrorReason { readonly type: 'error', readonly code: number, readonly error: Error & { readonly code: ErrorReasonCode } }
/**
 * What an `ErrorReason`'s error says in `code`: the plugin's (`FST_WS_…`), ws's for what the
 * peer sent (`WS_ERR_INVALID_UTF8`, `WS_ERR_UNSUPPORTED_MESSAGE_LENGTH`, …) or zlib's for corrupt
 * compressed data (`Z_DATA_ERROR`, …).
 */
export type ErrorReasonCode =
  | 'FST_WS_INTERNAL' | 'FST_WS_RATE_LIMITED' | 'FST_WS_INVALID_MESSAGE' | 'FST_WS_INVALID_RESULT' | 'FST_WS_OUTBOUND_OVERFLOW'
  | `WS_ERR_${string}` | `Z_${string}`
/** A callback threw or rejected; the plugin closed with 1011. */
export interface CrashReason { readonly type: 'crash', readonly error: unknown }
/** The socket went away without a close frame. */
export interface ClosedReason { readonly type: 'closed' }
/**
 * `app.close()` or `app.wsConnections.drain()` closed the connection: with `code` 1012 (Service
 * Restart: reconnect, to another instance) by default, or the code the drain was given (1001).
 */
export interface ShutdownReason { readonly type: 'shutdown', readonly code: number }

export type TerminateReason =
  | StopReason | RemoteReason | TimeoutReason | ErrorReason | CrashReason | ClosedReason | ShutdownReason

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/** Per-connection options: plugin defaults, overridden by the route, overridden by `init`. */
export interface ConnectionOptions extends LiveOptions {
  /** Negotiate permessage-deflate when the client offers it. Default false. */
  compress?: boolean | undefined
  /** Check that text messages and close reasons are valid UTF-8 (close 1007). Default true. */
  validateUtf8?: boolean | undefined
  /** Request headers kept in the request snapshot that callbacks and `terminate` see. Default none. */
  keepHeaders?: readonly string[] | undefined
  /**
   * Inbound rate limit of each connection: a token bucket over the frames it receives. `false`
   * turns off a limit set by the plugin or the route. Default none.
   */
  rateLimit?: RateLimit | false | undefined
}

/**
 * A token bucket over what one connection receives: every frame (text, binary, ping, pong)
 * takes a message and its size in bytes; the bucket refills continuously at the rate and holds
 * at most one second of it (the burst a client may send at once).
 */
export interface RateLimit {
  /** Frames per second. */
  messagesPerSecond?: number | undefined
  /** Bytes per second, as received (payload sizes). */
  bytesPerSecond?: number | undefined
  /**
   * Over the limit: `'pause'` (default) stops reading the socket until the bucket has refilled
   * (TCP holds the sender back; what was read still runs); `'close'` closes with 1008 and the
   * reason "rate limit exceeded" (FST_WS_RATE_LIMITED).
   */
  onExceeded?: 'pause' | 'close' | undefined
}

/** The `json` route option's object form. */
export interface JsonOptions {
  /** A JSON schema every message must match, compiled with the app's validator compiler (Ajv by default). */
  schema?: object | undefined
  /**
   * What bad input gets: `'close'` (default) closes with 1007 for text that is not JSON, 1003 for
   * a binary frame, 1008 for a message the schema refuses (the reason says why); `'error-frame'`
   * replies `{"type":"error","code":…,"message":…}` and keeps the connection open; a function
   * answers as the protocol says, with frames sent in order with the replies (checked as a
   * reply; a close frame closes: graphql-transport-ws answers `close(4400, problem.reason)`).
   */
  onInvalid?: 'close' | 'error-frame' | ((problem: InvalidJsonMessage) => OutFrame | readonly OutFrame[]) | undefined
}

/** What was wrong with a message on a JSON route: the close code `'close'` would send, and why. */
export interface InvalidJsonMessage {
  /** 1007 (not JSON), 1003 (a binary frame) or 1008 (refused by the schema). */
  readonly code: number
  /** At most 123 bytes: it fits a close frame as it is. */
  readonly reason: string
}

/** Options of one WebSocket route. */
export interface RouteWebSocketOptions extends ConnectionOptions {
  /** Parse text frames as JSON (and validate them): `handle` gets `{ type: 'json', data }`. Default off. */
  json?: boolean | JsonOptions | undefined
  /**
   * Subprotocols this route speaks, in order of preference. The first one the client offers
   * is answered in the 101; a client that offers others but none of these gets HTTP 400.
   */
  protocols?: readonly string[] | undefined
  /** Refuse (HTTP 400) a client that sends no `Sec-WebSocket-Protocol` at all. Default false. */
  protocolRequired?: boolean | undefined
  /**
   * Which browser origins may open this route besides the app's own (same-origin is always
   * allowed; others get HTTP 403, FST_WS_ORIGIN_NOT_ALLOWED): exact origins
   * (`'https://app.example.com'`, `'http://localhost:5173'`), subdomain patterns
   * (`'https://*.example.com'`: not example.com itself), `'null'` (sandboxed pages), a function
   * `(origin, request) => boolean`, or `'*'` for a public endpoint. Requests without `Origin`
   * (not browsers) always pass. Default: none (same-origin only).
   */
  allowOrigins?: AllowOrigins | undefined
  /**
   * The app's own public origins (`['https://app.example.com']`). By default the app's own
   * origin is read from the request (Host, or X-Forwarded-Host with `trustProxy`), which a
   * DNS-rebinding page controls; with `ownOrigins`, only these (and `allowOrigins`) count as
   * the app's. Set it for servers on private networks without authentication. Default: none.
   */
  ownOrigins?: readonly string[] | undefined
  /**
   * Connections this route may hold at once (from the upgrade to `terminate`); over it the
   * upgrade gets HTTP 503 with Retry-After (FST_WS_TOO_MANY_CONNECTIONS). In plugin options,
   * the limit for the whole app instead. Default: none.
   */
  maxConnections?: number | undefined
}

/** Options given when registering the plugin: defaults for every route. */
export interface WebSocketHandlersOptions extends RouteWebSocketOptions {
  /**
   * How long to wait for the peer's close reply before the socket is destroyed, in ms; and the
   * bound of app.close(): its drain takes at most half of it, then it waits for terminates at
   * most the rest. Default 5000. Given to ws only when this plugin
   * registers @fastify/websocket; an app that registered it keeps its own setting.
   */
  closeTimeout?: number | undefined
  /**
   * Connections one client IP (`request.ip`, so `trustProxy` applies) may hold at once, app-wide.
   * IPv6 clients are counted by their /`ipv6Subnet` network (one host holds a whole /64), IPv4
   * by address. Default: none.
   */
  maxConnectionsPerIp?: number | undefined
  /** The IPv6 prefix length that `maxConnectionsPerIp` counts as one client. Default 64. */
  ipv6Subnet?: number | undefined
  /**
   * How topics and posts by id reach other instances. Default `inProcessAdapter()` (this app
   * alone); `redisAdapter({ url })` from `fastify-ws-handlers/redis` shares them over Redis.
   */
  adapter?: PubSubAdapter | undefined
  /**
   * permessage-deflate settings used where `compress` is on (ws's options); add
   * `clientNoContextTakeover: true` where handlers hibernate. Given to ws only when this plugin
   * registers @fastify/websocket.
   */
  perMessageDeflate?: PerMessageDeflateOptions | undefined
  /**
   * OpenTelemetry metrics (see "Metrics" in the README): recorded to the global meter provider
   * when the app has registered an SDK, or to `meterProvider`; `false` records none. Without an
   * SDK nothing is recorded and nothing costs.
   */
  metrics?: MetricsOptions | false | undefined
  /**
   * Topics that keep a history (off by default): a topic name, or a pattern ending in `*` (a
   * prefix), to its limits: `{ 'chat:*': { size: 1000, maxAgeMs: 3_600_000 } }`. The exact name
   * wins, then the longest pattern. Their publications get positions, and a subscriber can
   * recover what it missed (`ctx.subscribe(topic, { since })`). Kept by the adapter (in this
   * process, or in Redis Streams).
   */
  history?: Readonly<Record<string, HistoryLimits>> | undefined
  /** How `app.close()` closes connections (see `DrainOptions`). */
  drain?: DrainOptions | undefined
}

/**
 * How `app.wsConnections.drain()` and `app.close()` take an instance out of service: new
 * upgrades get 503, and connections are closed in batches spread over a window, each at a
 * random moment within its batch's slot (jitter), so that clients reconnect to the other
 * instances without a stampede.
 */
export interface DrainOptions {
  /** Connections closed per batch. Default 500. */
  batchSize?: number | undefined
  /** ms between batches. Default 200: 10,000 connections drain in 4 s. */
  batchIntervalMs?: number | undefined
  /** The whole drain takes at most this (ms); later batches are closed sooner. Default 10,000; `app.close()` also keeps it within `closeTimeout`. */
  maxWindowMs?: number | undefined
  /** The close code. Default 1012 (Service Restart); 1001 (Going Away) when the service is not coming back. */
  code?: 1001 | 1012 | undefined
}

/** Where the plugin's metrics go. */
export interface MetricsOptions {
  /** Default: the global one (`metrics.getMeterProvider()` of `@opentelemetry/api`). */
  meterProvider?: MeterProvider | undefined
  /**
   * One callback in this many is timed into the `websocket.server.callback.duration` histogram
   * (every one that throws is); call counts and total time are exact whatever it is. Default 16:
   * a histogram measurement costs about 1.2 µs in the SDK. 1 times every callback.
   */
  callbackSampling?: number | undefined
}

// ---------------------------------------------------------------------------
// The connection context
// ---------------------------------------------------------------------------

/** What callbacks and `terminate` know about the request after the upgrade: a frozen snapshot. */
export interface RequestSnapshot<Route extends RouteGenericInterface = RouteGenericInterface> {
  readonly id: string
  readonly method: string
  readonly url: string
  /** The route's URL pattern, with its prefix. */
  readonly routeUrl: string
  /** Typed by the route generic's `Params`, as `app.get<{ Params }>` types `request.params`. */
  readonly params: Route extends { Params: infer Params } ? Params : unknown
  /** Typed by the route generic's `Querystring`. */
  readonly query: Route extends { Querystring: infer Query } ? Query : unknown
  /** Only the headers named in `keepHeaders`. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly ip: string
  /** The negotiated subprotocol, or '' when none. */
  readonly protocol: string
}

/** A stream reference from `ctx.stream`. */
export type StreamRef = number

/** How `ctx.stream` turns what its source yields into this handler's Info. */
export interface StreamTo<Item, Info> {
  /** Each item, as the message `info` receives. */
  next: (item: Item) => Info
  /** The source ended: the last message (none without it). */
  complete?: () => Info
  /** The source threw: the message `info` receives (without it, the connection crashes: 1011). */
  error?: (error: unknown) => Info
}

/** A timer reference from `sendAfter` or `startTimer`. */
export type TimerRef = number

/**
 * What `startTimer` delivers to `info` (Erlang's `{timeout, Ref, Msg}`). A handler that starts
 * timers names it in its Info type: `defineHandler<State, Msg | TimeoutMessage<Tick>>`; the
 * other handlers' `info` never sees it.
 */
export interface TimeoutMessage<Message = unknown> { readonly type: 'timeout', readonly ref: TimerRef, readonly message: Message }

/**
 * What `startTimer` takes: the payload of the `TimeoutMessage`s in Info (never when Info has
 * none, so that a timer cannot deliver what `info` does not expect), or anything when Info is
 * `unknown`.
 */
export type TimerMessage<Info> = unknown extends Info ? unknown : Info extends TimeoutMessage<infer Message> ? Message : never

/**
 * One connection, as callbacks see it (the `ctx` argument). It is also the handle the app can
 * keep to post messages later; after `terminate` posting returns false and does nothing.
 */
export interface WebSocketContext<Info = unknown, Route extends RouteGenericInterface = RouteGenericInterface> {
  /** Unique within this process. */
  readonly id: string
  readonly request: RequestSnapshot<Route>
  /** A child of the route's logger, bound to the request and connection ids. */
  readonly log: FastifyBaseLogger
  /** True until `terminate` has been called. */
  readonly alive: boolean
  /** Bytes written but not yet sent to a slow peer (for flow control; over `maxBufferedBytes` closes 1008). */
  readonly bufferedAmount: number
  /**
   * Deliver `message` to `info`, after what is already in the mailbox, never on the caller's
   * stack. False (nothing queued) once the connection is ending, or while `mailboxLimit` items
   * wait: the poster decides whether to retry, drop or close.
   */
  post(message: Info): boolean
  /** Deliver `message` to `info` in `ms` milliseconds. */
  sendAfter(ms: number, message: Info): TimerRef
  /**
   * Deliver `{ type: 'timeout', ref, message }` to `info` in `ms` milliseconds; Info must include
   * `TimeoutMessage<…>` (see `TimerMessage`). `I` is not for callers: it keeps handlers of any
   * Info assignable to the route option, and `[I][…]` keeps it from being inferred.
   */
  startTimer<I extends Info = Info>(ms: number, message: TimerMessage<[I][I extends unknown ? 0 : never]>): TimerRef
  /** Cancel a pending timer; true when it had not fired yet. */
  cancelTimer(ref: TimerRef): boolean
  /**
   * Feed what `source` yields (an async iterator: a GraphQL subscription, a change feed, a token
   * stream; or a plain iterable) to `info`, in order and one at a time: the next item is pulled
   * only after the previous one's `info` has run (back-pressure, so a stream holds one item of
   * memory). `to` turns items, the end and a failure into this handler's Info. The stream stops
   * at `stopStream(ref)` and when the connection ends: the iterator's `return()` is called.
   */
  stream<Item>(source: AsyncIterable<Item> | Iterable<Item>, to: StreamTo<Item, Info>): StreamRef
  /** Stop a stream (its iterator's `return()` is called); true when it was running. */
  stopStream(ref: StreamRef): boolean
  /**
   * Join a topic: `publish(topic, …)` then reaches `info`, `broadcast(topic, …)` the socket.
   * True when it was not in it yet. Every subscription ends at `terminate`. A typed topic
   * (`topic<M>(name)`) is accepted only when this handler's `info` takes its messages.
   */
  subscribe(topic: string | Topic<Info>): boolean
  /**
   * Join a topic that keeps a history (the plugin's `history` option), with positions: `info`
   * then receives a `Publication` (the message, its topic and position) for each publication,
   * in order, exactly once. With `since` (the position the client last saw), first every later
   * publication the history holds, then the live ones, with no gap and no duplicate at the seam.
   * The subscription's first event after those is `Subscribed` (where it now is), or `Resync`
   * when the history cannot serve `since` (trimmed, another epoch): the client must resync.
   * A typed topic is accepted when `info` takes its `TopicEvent<M>`. A topic without history is
   * refused (FST_WS_NO_HISTORY).
   */
  subscribe(topic: string | Topic<PublishedIn<Info>>, options: SubscribeOptions): boolean
  /** Leave a topic; true when it was in it. */
  unsubscribe(topic: string | Topic<unknown>): boolean
  /** The topics this connection is in. */
  readonly topics: readonly string[]
}

// ---------------------------------------------------------------------------
// The handler: cowboy_websocket's callbacks
// ---------------------------------------------------------------------------

type MaybePromise<T> = T | Promise<T>

/**
 * A WebSocket route's handler object. Every callback is optional. Method syntax on purpose:
 * a handler of any state type fits where a handler of `unknown` state is expected.
 */
export interface WebSocketHandler<
  State = undefined, Info = unknown, Message = never, Route extends RouteGenericInterface = RouteGenericInterface
> {
  /** Before the upgrade, inside Fastify's hook chain: authenticate, pick a protocol, build the state, or refuse through `reply`. */
  init?(request: FastifyRequest<Route>, reply: FastifyReply<Route>): MaybePromise<InitResult<State>>
  /** Once, after the upgrade: start timers, subscribe, greet. */
  websocketInit?(state: State, ctx: WebSocketContext<Info, Route>): MaybePromise<Result<State>>
  /** Every text, binary, ping and pong frame, one at a time, in order. */
  handle?(frame: InFrame<Message>, state: State, ctx: WebSocketContext<Info, Route>): MaybePromise<Result<State>>
  /** Every message posted to the connection, in the same mailbox as frames. */
  info?(message: Info, state: State, ctx: WebSocketContext<Info, Route>): MaybePromise<Result<State>>
  /** Exactly once per upgraded connection, however it ended. Errors here are logged, never thrown. */
  terminate?(reason: TerminateReason, request: RequestSnapshot<Route>, state: State): MaybePromise<void>
}

/** Options of `broadcast`. */
export interface BroadcastOptions {
  /** A connection id that does not get the frame (the sender's, usually). */
  except?: string | undefined
}

/** The app-wide view of open connections and topics (decorated as `fastify.wsConnections`). */
export interface WebSocketConnections extends Iterable<WebSocketContext<unknown>> {
  /** This instance's connections whose terminate has not settled yet. */
  readonly size: number
  /** This instance's id: the prefix of its connection ids (`<instanceId>-<n>`). */
  readonly instanceId: string
  /** The connection with this id, until its terminate has settled. */
  get(id: string): WebSocketContext<unknown> | undefined
  /** This instance's connections. */
  values(): IterableIterator<WebSocketContext<unknown>>
  /** This instance's connections of one route (its URL pattern with prefix, as `ctx.request.routeUrl`). */
  ofRoute(url: string): IterableIterator<WebSocketContext<unknown>>
  /** How many connections a route has on this instance (upgrades past their admission included, as the limits count them). */
  countOfRoute(url: string): number
  /**
   * Post to a connection by id (Erlang's `Pid ! Msg`), on this instance or, through the
   * adapter, on the instance that holds it. False when it is gone, closing or its mailbox is
   * full (known here); true when handed to the adapter (at most once from there).
   */
  post(id: string, message: unknown): boolean
  /**
   * Deliver `message` to `info` of every subscriber of `topic`, here and on the other instances
   * (in publish order for each subscriber). Returns how many local subscribers accepted it. A
   * topic with history on Redis is delivered once Redis has kept it, after this returns: then 0
   * (`publishConfirmed` resolves when it is kept; the deliveries metric counts it then).
   */
  publish<Message>(topic: Topic<Message>, message: Message): number
  publish(topic: string, message: unknown): number
  /**
   * Write one `text()` or `binary()` frame to every subscriber of `topic`, here and on the other
   * instances, without running their handlers, encoded once (uncompressed, also to compressed
   * connections). Returns how many local subscribers took it: written now, or waiting behind
   * what a busy subscriber has queued (a subscriber whose mailbox is full misses it). A topic
   * with history on Redis is written here when Redis brings the broadcast back, in its place
   * among the topic's publications: then 0.
   */
  broadcast(topic: string | Topic<unknown>, frame: OutFrame, options?: BroadcastOptions): number
  /** This instance's subscribers of `topic`. */
  subscribers(topic: string | Topic<unknown>): IterableIterator<WebSocketContext<unknown>>
  /** How many connections of this instance are in `topic`. */
  subscriberCount(topic: string | Topic<unknown>): number
  /** The topics with a subscriber on this instance. */
  topics(): IterableIterator<string>
  /**
   * `publish` to a topic with history, resolving with the publication's position once the
   * history holds it; rejects (FST_WS_NO_HISTORY, FST_WS_REDIS) when it cannot be kept, where
   * `publish` would log that and go on.
   */
  publishConfirmed<Message>(topic: Topic<Message>, message: Message): Promise<Position>
  publishConfirmed(topic: string, message: unknown): Promise<Position>
  /**
   * Take this instance out of service (a rolling deploy): new upgrades get 503 from now on, and
   * every connection is closed in batches (see `DrainOptions`; the plugin's `drain` option is
   * the default). Resolves when every terminate has settled. `app.close()` drains too.
   */
  drain(options?: DrainOptions): Promise<void>
  /** True from `drain()` or `app.close()` on: upgrades are refused. */
  readonly draining: boolean
}

// ---------------------------------------------------------------------------
// Adapters: how topics and posts by id reach other instances of the app. The plugin always
// delivers locally itself (so local delivery never depends on a broker); an adapter carries
// what must reach the other instances, and hands what arrives from them to `LocalDelivery`.
// ---------------------------------------------------------------------------

declare const kTopicMessage: unique symbol

/**
 * A topic declared once with the type of what is published to it: `topic<PriceUpdate>('prices')`
 * (see `topic()`). `publish` takes only that type, and a handler can subscribe only if its `info`
 * accepts it, so the publisher and the subscribers are checked against each other.
 */
export interface Topic<Message> {
  readonly name: string
  /** Types only: never set. */
  readonly [kTopicMessage]?: Message
}

/** A frame as `broadcast` carries it between instances. */
export interface BroadcastFrame { readonly binary: boolean, readonly data: Buffer }

// ---------------------------------------------------------------------------
// History: topics that keep their publications, with positions (registry/history.ts)
// ---------------------------------------------------------------------------

/**
 * Where a publication sits in its topic's history: `offset` grows by one per publication in the
 * topic (the first is 1; 0 is "before any"), `epoch` names the lifetime of that history (a new
 * one whenever the history was lost). Send both to the client; it gives them back to resume.
 */
export interface Position { readonly offset: number, readonly epoch: string }

/** How much history a topic keeps: the last `size` publications, none older than `maxAgeMs`. */
export interface HistoryLimits {
  /** Publications kept (the oldest go first). */
  readonly size: number
  /** ms a publication is kept; default: as long as `size` allows. */
  readonly maxAgeMs?: number | undefined
}

/** Options of a positioned `ctx.subscribe(topic, options)`. */
export interface SubscribeOptions {
  /** The last position the client saw: recover every later publication first. Undefined: from now on. */
  readonly since?: Position | undefined
}

/** One publication of a topic with history, as a positioned subscriber's `info` receives it. */
export interface Publication<M = unknown> {
  readonly kind: 'publication'
  readonly topic: string
  readonly message: M
  readonly position: Position
}

/**
 * A positioned subscription is live: what `since` asked for has been delivered before it
 * (`recovered` publications). `position` is where it now is (send it to the client).
 */
export interface Subscribed {
  readonly kind: 'subscribed'
  readonly topic: string
  readonly position: Position
  readonly recovered: number
}

/**
 * Why a positioned subscription cannot go on from where its client was: `epoch`, the history
 * was lost (a restart without persistence) or `since` names another; `trimmed`, what was missed
 * is no longer kept (too old, or more than `size` behind); `ahead`, `since` is past the end;
 * `unavailable`, the history could not be read (Redis is down).
 */
export type ResyncReason = 'epoch' | 'trimmed' | 'ahead' | 'unavailable'

/**
 * The history cannot serve this subscriber from where it was: publications were missed, and
 * the client must resync (fetch a snapshot). Live delivery goes on after `position`.
 */
export interface Resync {
  readonly kind: 'resync'
  readonly topic: string
  readonly reason: ResyncReason
  readonly position: Position
}

/** What a positioned subscription delivers to `info`. */
export type TopicEvent<M> = Publication<M> | Subscribed | Resync

/** The messages of the `Publication`s that an `info` of this Info takes (what a typed topic it follows may carry). */
export type PublishedIn<Info> = Info extends Publication<infer M> ? M : never

/** What a history read returns: the epoch, the offset of the newest publication (0: none), and the publications after the asked offset still kept, oldest first. */
export interface HistoryRead {
  readonly epoch: string
  readonly top: number
  readonly entries: ReadonlyArray<{ readonly offset: number, readonly message: unknown }>
}

/**
 * Where an adapter keeps the history of topics (`PubSubAdapter.history`). `append` gives the
 * publication its position, and delivers it to every instance, this one too, through
 * `LocalDelivery.publication`, in position order.
 */
export interface HistoryStore {
  /** Keep and deliver; resolves with the position once kept (rejects when it could not be). */
  append(topic: string, message: unknown, json: string | undefined, limits: HistoryLimits): Position | Promise<Position>
  /** The publications after `after` that are still kept (at most `limits.size`); `after` = Infinity reads only the epoch and top. */
  read(topic: string, after: number, limits: HistoryLimits): HistoryRead | Promise<HistoryRead>
}

/** What an adapter hands to this instance: deliver to its local connections only. */
export interface LocalDelivery {
  /** A publication of a topic with history, with its position (from `HistoryStore.append`). */
  publication(topic: string, message: unknown, position: Position): void
  /**
   * The adapter was cut off from its broker and is back: publications made meanwhile were not
   * delivered live. Followers of topics with history read them back now (or learn that the
   * history was lost), rather than at the topic's next publication.
   */
  reconnected(): void
  /** This instance's id: the prefix of its connection ids. */
  readonly instanceId: string
  /** Post `message` to every local subscriber of `topic`; the number that accepted it. */
  publish(topic: string, message: unknown): number
  /**
   * Write `frame` to every local subscriber of `topic` but `except`; the number written to.
   * `own`: this instance's own broadcast, handed back by an adapter whose history is kept
   * asynchronously (`ownBroadcastsComeBack`): written only for a topic with history.
   */
  broadcast(topic: string, frame: BroadcastFrame, except: string | undefined, own?: boolean): number
  /** Post to a local connection by id; false when it is not here (or refused). */
  post(id: string, message: unknown): boolean
}

/**
 * Carries publications and posts between instances. Every method but `start` and `close` is
 * called synchronously on the hot path: queue, never wait. Delivery is at most once.
 */
export interface PubSubAdapter {
  /**
   * How messages travel: 'json' when they cross a process boundary as JSON text. Then `publish`
   * and `post` by id give every subscriber, local ones too, the JSON copy (one rule on one
   * instance or many), and refuse what JSON cannot carry (FST_WS_NOT_SERIALIZABLE). Unset: messages
   * are passed as they are (the in-process adapter).
   */
  readonly wire?: 'json'
  /** Where topics with history keep it; without one, the plugin's `history` option is refused. */
  readonly history?: HistoryStore
  /**
   * The adapter hands this instance's own broadcasts back (`local.broadcast(…, own: true)`) in
   * the order its publications come back kept. The plugin then writes a broadcast to a topic
   * with history to its local subscribers only then, so that it keeps its place among the
   * topic's publications (which are delivered once kept). Set by `redisAdapter()`.
   */
  readonly ownBroadcastsComeBack?: boolean
  /** Once, at registration (awaited): connect, and deliver what arrives through `local`. */
  start(local: LocalDelivery, log: FastifyBaseLogger): void | Promise<void>
  /** The first local connection joined `topic`: start receiving it. */
  subscribe(topic: string): void
  /** The last local connection left `topic`: stop receiving it. */
  unsubscribe(topic: string): void
  /**
   * Deliver to the subscribers of `topic` on the other instances. With `wire: 'json'`, `json` is
   * the message's JSON text, encoded once by the plugin (the adapter need not encode it again).
   */
  publish(topic: string, message: unknown, json?: string): void
  /** Write to the subscribers of `topic` on the other instances (but `except`). */
  broadcast(topic: string, frame: BroadcastFrame, except: string | undefined): void
  /** Post to a connection of another instance; false when no instance can have this id. `json` as for `publish`. */
  post(id: string, message: unknown, json?: string): boolean
  /**
   * At app.close(), after every connection has ended. `timeoutMs` (the plugin's `closeTimeout`)
   * bounds it: by then nothing of the adapter may be left (no socket, no timer, no
   * subscription), whatever its broker does; the plugin stops waiting then in any case.
   */
  close(timeoutMs: number): void | Promise<void>
}

/** What `allowOrigins` accepts. */
export type AllowOrigins =
  | readonly string[]
  | '*'
  | ((origin: string, request: FastifyRequest) => boolean | Promise<boolean>)
