/**
 * Every error users can catch or match, under one prefix. The list is mirrored in the README.
 */
// The constants name their type with a named import: .d.ts that a CommonJS (node10) consumer
// compiles too (the `createError.` namespace of @fastify/error's `export =` does not resolve there).
import createError, { type FastifyErrorConstructor } from '@fastify/error'

/** Registration or route options that cannot work. */
export const InvalidOptionError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_OPTION' }, [string, string]> = createError<'FST_WS_INVALID_OPTION', [string, string]>(
  'FST_WS_INVALID_OPTION', 'Invalid option "%s": %s')

/** `app.ws()` or the `ws` route option got something that is not a handler object. */
export const InvalidHandlerError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_HANDLER' }, [string, string]> = createError<'FST_WS_INVALID_HANDLER', [string, string]>(
  'FST_WS_INVALID_HANDLER', 'The WebSocket handler of %s is invalid: %s')

/** The client offered subprotocols, but none that the route speaks. Answered with HTTP 400. */
export const ProtocolNotSupportedError: FastifyErrorConstructor<{ code: 'FST_WS_PROTOCOL_NOT_SUPPORTED', statusCode: 400 }, [string, string]> = createError<'FST_WS_PROTOCOL_NOT_SUPPORTED', 400, [string, string]>(
  'FST_WS_PROTOCOL_NOT_SUPPORTED', 'None of the offered subprotocols (%s) is supported; this route speaks: %s', 400)

/** The route requires a subprotocol and the client offered none. Answered with HTTP 400. */
export const ProtocolRequiredError: FastifyErrorConstructor<{ code: 'FST_WS_PROTOCOL_REQUIRED', statusCode: 400 }, [string]> = createError<'FST_WS_PROTOCOL_REQUIRED', 400, [string]>(
  'FST_WS_PROTOCOL_REQUIRED', 'A Sec-WebSocket-Protocol header is required; this route speaks: %s', 400)

/** `init` chose a subprotocol the client did not offer (a programming error). Answered with HTTP 500. */
export const ProtocolNotOfferedError: FastifyErrorConstructor<{ code: 'FST_WS_PROTOCOL_NOT_OFFERED', statusCode: 500 }, [string]> = createError<'FST_WS_PROTOCOL_NOT_OFFERED', 500, [string]>(
  'FST_WS_PROTOCOL_NOT_OFFERED', 'init chose the subprotocol "%s", which the client did not offer', 500)

/** The handshake breaks a rule ws enforces (key, version, subprotocol syntax). Answered with HTTP 400, before `init`. */
export const InvalidHandshakeError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_HANDSHAKE', statusCode: 400 }, [string]> = createError<'FST_WS_INVALID_HANDSHAKE', 400, [string]>(
  'FST_WS_INVALID_HANDSHAKE', 'Invalid WebSocket handshake: %s', 400)

/** An upgrade reached the route while the instance drains (`app.close()`, `app.wsConnections.drain()`). Answered with HTTP 503 and `Retry-After`. */
export const ShuttingDownError: FastifyErrorConstructor<{ code: 'FST_WS_SHUTTING_DOWN', statusCode: 503 }, []> = createError<'FST_WS_SHUTTING_DOWN', 503>(
  'FST_WS_SHUTTING_DOWN', 'The server is shutting down', 503)

/**
 * A browser from another origin than the app's own, not allowed by `allowOrigins` (Cross-Site
 * WebSocket Hijacking defence). Answered with HTTP 403, before `init`.
 */
export const OriginNotAllowedError: FastifyErrorConstructor<{ code: 'FST_WS_ORIGIN_NOT_ALLOWED', statusCode: 403 }, [string, string, string]> = createError<'FST_WS_ORIGIN_NOT_ALLOWED', 403, [string, string, string]>(
  'FST_WS_ORIGIN_NOT_ALLOWED',
  'Origin "%s" may not open this WebSocket route (only its own origin, %s, may by default); to allow it, add it to the ' +
  'route\'s or the plugin\'s allowOrigins option: allowOrigins: [\'%s\'] (or a pattern, a function, or \'*\' for a public endpoint)', 403)

/** A connection limit (`maxConnections`, `maxConnectionsPerIp`) is reached. Answered with HTTP 503 and Retry-After, before the 101. */
export const TooManyConnectionsError: FastifyErrorConstructor<{ code: 'FST_WS_TOO_MANY_CONNECTIONS', statusCode: 503 }, [string]> = createError<'FST_WS_TOO_MANY_CONNECTIONS', 503, [string]>(
  'FST_WS_TOO_MANY_CONNECTIONS', 'Too many WebSocket connections: %s; try again later', 503)

/** A plain HTTP request reached a WebSocket-only route. Answered with HTTP 426. */
export const UpgradeRequiredError: FastifyErrorConstructor<{ code: 'FST_WS_UPGRADE_REQUIRED', statusCode: 426 }, []> = createError<'FST_WS_UPGRADE_REQUIRED', 426>(
  'FST_WS_UPGRADE_REQUIRED', 'This route only speaks WebSocket', 426)

/** A callback returned something that is not a result. The connection closes with 1011. */
export const InvalidResultError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_RESULT' }, [string, string]> = createError<'FST_WS_INVALID_RESULT', [string, string]>(
  'FST_WS_INVALID_RESULT', '%s returned an invalid result: %s')

/** A message on a `json` route was not JSON, not text, or refused by the schema (the close code says which). */
export const InvalidMessageError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_MESSAGE' }, [string]> = createError<'FST_WS_INVALID_MESSAGE', [string]>(
  'FST_WS_INVALID_MESSAGE', 'Invalid message: %s')

/**
 * Something threw where an outside event (a ws or socket event, a timer, a queued delivery)
 * entered the plugin: that one connection closes with 1011; the thrown value is the `cause`.
 */
export const InternalError: FastifyErrorConstructor<{ code: 'FST_WS_INTERNAL' }, [string, { cause: unknown }]> = createError<'FST_WS_INTERNAL', [string, { cause: unknown }]>(
  'FST_WS_INTERNAL', 'A WebSocket event failed: %s')

/** A connection received more than its `rateLimit` allows, with `onExceeded: 'close'`. The connection closes with 1008. */
export const RateLimitedError: FastifyErrorConstructor<{ code: 'FST_WS_RATE_LIMITED' }, [string]> = createError<'FST_WS_RATE_LIMITED', [string]>(
  'FST_WS_RATE_LIMITED', 'The client sent more than its rate limit allows (%s)')

/** More than `maxBufferedBytes` waited to be written to a slow peer. The connection closes with 1008. */
export const OutboundOverflowError: FastifyErrorConstructor<{ code: 'FST_WS_OUTBOUND_OVERFLOW' }, [number, number]> = createError<'FST_WS_OUTBOUND_OVERFLOW', [number, number]>(
  'FST_WS_OUTBOUND_OVERFLOW', '%d bytes wait to be sent, over maxBufferedBytes (%d)')

/** `sendAfter` or `startTimer` got a delay that is not a number of ms from 0 to 2^31 − 1 (a Node timer's limit). Thrown in the callback (close 1011). */
export const InvalidTimerError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_TIMER' }, [string]> = createError<'FST_WS_INVALID_TIMER', [string]>(
  'FST_WS_INVALID_TIMER', 'A timer delay must be a number of milliseconds from 0 to 2147483647 (a Node timer\'s limit), got %s')

/** `subscribe`, `publish`, `broadcast` or `topic()` got a topic that is neither a non-empty string nor a `topic()`. */
export const InvalidTopicError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_TOPIC' }, [string]> = createError<'FST_WS_INVALID_TOPIC', [string]>(
  'FST_WS_INVALID_TOPIC', 'A topic must be a non-empty string, got %s')

/** A positioned subscription (`ctx.subscribe(topic, { since })`) or `publishConfirmed` named a topic that the plugin's `history` option gives no history. */
export const NoHistoryError: FastifyErrorConstructor<{ code: 'FST_WS_NO_HISTORY' }, [string]> = createError<'FST_WS_NO_HISTORY', [string]>(
  'FST_WS_NO_HISTORY', 'Topic "%s" keeps no history: add it (or a pattern of it) to the plugin\'s history option')

/** `since` of a positioned subscription is not a position (`{ offset: a whole number >= 0, epoch: a string }`). Thrown in the callback (close 1011). */
export const InvalidPositionError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_POSITION' }, [string]> = createError<'FST_WS_INVALID_POSITION', [string]>(
  'FST_WS_INVALID_POSITION', 'A position is { offset: a whole number >= 0, epoch: a string }, got %s')

/** `ctx.stream` got something that is neither an async iterable nor an iterable. Thrown in the callback (close 1011). */
export const InvalidStreamError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_STREAM' }, [string]> = createError<'FST_WS_INVALID_STREAM', [string]>(
  'FST_WS_INVALID_STREAM', 'ctx.stream takes an async iterable or an iterable, got %s')

/** `broadcast` got something other than a text() or binary() frame. */
export const InvalidBroadcastError: FastifyErrorConstructor<{ code: 'FST_WS_INVALID_BROADCAST' }, [string]> = createError<'FST_WS_INVALID_BROADCAST', [string]>(
  'FST_WS_INVALID_BROADCAST', 'broadcast takes a text() or binary() frame, got %s')

/** `publish` or `post` by id got a message that the adapter's wire (JSON) cannot carry: refused before anything is delivered. */
export const MessageNotSerializableError: FastifyErrorConstructor<{ code: 'FST_WS_NOT_SERIALIZABLE' }, [string]> = createError<'FST_WS_NOT_SERIALIZABLE', [string]>(
  'FST_WS_NOT_SERIALIZABLE', 'This adapter carries messages as JSON, and this one cannot travel: %s')

/** The Redis adapter lost or could not reach Redis; local delivery goes on (logged, never thrown). */
export const RedisAdapterError: FastifyErrorConstructor<{ code: 'FST_WS_REDIS' }, [string]> = createError<'FST_WS_REDIS', [string]>(
  'FST_WS_REDIS', 'Redis adapter: %s')

/** The ws that @fastify/websocket uses does not behave as this plugin relies on (checked at registration). */
export const WsInternalsError: FastifyErrorConstructor<{ code: 'FST_WS_WS_INTERNALS' }, [string, string, string, string]> = createError<'FST_WS_WS_INTERNALS', [string, string, string, string]>(
  'FST_WS_WS_INTERNALS', 'ws %s (used by @fastify/websocket) is not supported by fastify-ws-handlers: %s; the tests cover ws %s. To fix it, %s')

/** The `ws` route option was used where @fastify/websocket sees routes first. */
export const RouteOptionOrderError: FastifyErrorConstructor<{ code: 'FST_WS_ROUTE_OPTION_ORDER' }, [string]> = createError<'FST_WS_ROUTE_OPTION_ORDER', [string]>(
  'FST_WS_ROUTE_OPTION_ORDER',
  'Route %s uses the "ws" route option, but @fastify/websocket was registered before fastify-ws-handlers; ' +
  'register fastify-ws-handlers first (it registers @fastify/websocket itself) or declare the route with app.ws()')
