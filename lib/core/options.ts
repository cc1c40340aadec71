/**
 * Option defaults and checks, shared by registration (a coded error), route declaration and the
 * options that `init` and live results carry (a bad one there is an invalid result, close 1011).
 */
import { InvalidHandlerError, InvalidOptionError } from './errors.js'
import type { ConnectionOptions, RateLimit, RouteWebSocketOptions, WebSocketHandlersOptions } from './types.js'

/** The resolved per-connection options: every key present. */
export interface ResolvedConnectionOptions {
  idleTimeout: number
  pingInterval: number
  maxFrameSize: number
  maxBufferedBytes: number
  mailboxLimit: number
  compress: boolean
  validateUtf8: boolean
  keepHeaders: readonly string[]
  /** `false`: no limit (the default, and how a route or `init` turns one off). */
  rateLimit: RateLimit | false
}

export const DEFAULTS: ResolvedConnectionOptions = Object.freeze({
  idleTimeout: 60_000, // Cowboy's idle_timeout
  pingInterval: 30_000, // a listening browser answers at 30 s of silence; a dead peer is closed at 60 s
  maxFrameSize: 1_000_000, // Cowboy 2.17+'s max_frame_size: decimal 1 MB, inclusive
  maxBufferedBytes: 16 * 1024 * 1024, // as Bun's backpressureLimit
  mailboxLimit: 1024,
  compress: false,
  validateUtf8: true,
  keepHeaders: Object.freeze([]),
  rateLimit: false
})

export const DEFAULT_CLOSE_TIMEOUT = 5_000

export type Check = (value: unknown) => string | undefined

/**
 * The longest delay a Node timer takes (2^31 − 1 ms, about 24.8 days): a longer one fires after
 * 1 ms. Every option that becomes a timer is checked against it, never silently clamped.
 */
export const MAX_TIMER_MS = 2_147_483_647

/** A delay in whole ms that a timer can honour: `min` to MAX_TIMER_MS. */
function delayFrom (min: number): Check {
  return (v) => Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= MAX_TIMER_MS
    ? undefined
    : `expected a whole number of ms from ${min} to ${MAX_TIMER_MS} (a Node timer's limit, about 24.8 days), got ${show(v)}`
}
/** 0 turns the timer off. */
const delay = delayFrom(0)

const positiveIntegerOrInfinity: Check = (v) =>
  v === Infinity || (Number.isSafeInteger(v) && (v as number) >= 1) ? undefined : `expected a whole number >= 1 or Infinity, got ${show(v)}`
const positiveInteger: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) >= 1 ? undefined : `expected a whole number >= 1, got ${show(v)}`
const bool: Check = (v) => typeof v === 'boolean' ? undefined : `expected a boolean, got ${show(v)}`
const strings: Check = (v) =>
  Array.isArray(v) && v.every((s) => typeof s === 'string' && s.length > 0) ? undefined : `expected an array of non-empty strings, got ${show(v)}`
const object: Check = (v) => v !== null && typeof v === 'object' ? undefined : `expected an object, got ${show(v)}`

/** Options a result may change live. */
export const liveChecks: Readonly<Record<string, Check>> = {
  idleTimeout: delay,
  pingInterval: delay,
  maxFrameSize: positiveIntegerOrInfinity,
  maxBufferedBytes: positiveInteger,
  mailboxLimit: positiveInteger
}

/** Options `init` may set for its connection. */
export const connectionChecks: Readonly<Record<string, Check>> = {
  ...liveChecks,
  compress: bool,
  validateUtf8: bool,
  keepHeaders: strings,
  rateLimit: (v) => v === false ? undefined : rateLimitProblem(v)
}

const positiveRate: Check = (v) =>
  typeof v === 'number' && v > 0 && Number.isFinite(v) ? undefined : `expected a finite number > 0, got ${show(v)}`

function rateLimitProblem (value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return `expected false or { messagesPerSecond?, bytesPerSecond?, onExceeded? }, got ${show(value)}`
  const { messagesPerSecond, bytesPerSecond, onExceeded, ...rest } = value as RateLimit
  const unknown = Object.keys(rest)[0]
  if (unknown !== undefined) return `unknown key "${unknown}" (known: messagesPerSecond, bytesPerSecond, onExceeded)`
  if (messagesPerSecond === undefined && bytesPerSecond === undefined) return 'set messagesPerSecond, bytesPerSecond or both'
  const problem = (messagesPerSecond === undefined ? undefined : positiveRate(messagesPerSecond)) ??
    (bytesPerSecond === undefined ? undefined : positiveRate(bytesPerSecond))
  if (problem !== undefined) return problem
  return onExceeded === undefined || onExceeded === 'pause' || onExceeded === 'close' ? undefined : `onExceeded must be 'pause' or 'close', got ${show(onExceeded)}`
}

const routeChecks: Readonly<Record<string, Check>> = {
  ...connectionChecks,
  protocols: strings,
  protocolRequired: bool,
  allowOrigins: (v) => v === '*' || typeof v === 'function' ? undefined : strings(v),
  ownOrigins: strings,
  json: (v) => typeof v === 'boolean' || isJsonOptions(v)
    ? undefined
    : `expected true, false or { schema?, onInvalid?: 'close' | 'error-frame' | a function }, got ${show(v)}`,
  maxConnections: positiveInteger
}

function isJsonOptions (value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const { onInvalid } = value as { onInvalid?: unknown }
  return Object.keys(value).every((key) => key === 'schema' || key === 'onInvalid') &&
    (onInvalid === undefined || onInvalid === 'close' || onInvalid === 'error-frame' || typeof onInvalid === 'function')
}

function isMetricsOptions (value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const { meterProvider, callbackSampling } = value as { meterProvider?: { getMeter?: unknown }, callbackSampling?: unknown }
  return Object.keys(value).every((key) => key === 'meterProvider' || key === 'callbackSampling') &&
    (meterProvider === undefined || typeof meterProvider?.getMeter === 'function') &&
    (callbackSampling === undefined || (Number.isInteger(callbackSampling) && (callbackSampling as number) >= 1))
}

/** Fastify's route options that `app.ws()` passes on; any other key is a typo. */
export const fastifyRouteOptionKeys: ReadonlySet<string> = new Set([
  'schema', 'attachValidation', 'exposeHeadRoute', 'onRequest', 'preParsing', 'preValidation', 'preHandler',
  'preSerialization', 'onSend', 'onResponse', 'onTimeout', 'onError', 'onRequestAbort', 'errorHandler',
  'childLoggerFactory', 'validatorCompiler', 'serializerCompiler', 'schemaErrorFormatter', 'bodyLimit', 'logLevel',
  'logSerializers', 'config', 'constraints', 'prefixTrailingSlash'
])

const pluginChecks: Readonly<Record<string, Check>> = {
  ...routeChecks,
  closeTimeout: delayFrom(1),
  maxConnectionsPerIp: positiveInteger,
  ipv6Subnet: (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 128 ? undefined : `expected a prefix length from 1 to 128, got ${show(v)}`,
  perMessageDeflate: object,
  adapter: (v) => v !== null && typeof v === 'object' && typeof (v as { publish?: unknown }).publish === 'function'
    ? undefined
    : `expected an adapter (inProcessAdapter(), redisAdapter()), got ${show(v)}`,
  metrics: (v) => v === false || isMetricsOptions(v)
    ? undefined
    : `expected false or { meterProvider?, callbackSampling? } (a MeterProvider of @opentelemetry/api, a whole number >= 1), got ${show(v)}`,
  history: historyOptionProblem,
  drain: drainOptionsProblem
}

/** The problem with a `history` option, or undefined. */
export function historyOptionProblem (value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return `expected { [topic or prefix*]: { size, maxAgeMs? } }, got ${show(value)}`
  for (const [key, limits] of Object.entries(value)) {
    if (key === '' || (key.includes('*') && key.indexOf('*') !== key.length - 1)) return `"${key}": a topic name, or a prefix followed by one * at the end`
    const { size, maxAgeMs, ...rest } = (limits ?? {}) as { size?: unknown, maxAgeMs?: unknown }
    if (limits === null || typeof limits !== 'object' || Object.keys(rest).length !== 0 ||
      !(Number.isInteger(size) && (size as number) >= 1) ||
      !(maxAgeMs === undefined || (Number.isInteger(maxAgeMs) && (maxAgeMs as number) >= 1))) {
      return `"${key}": expected { size: a whole number >= 1, maxAgeMs?: a whole number of ms >= 1 }, got ${show(limits)}`
    }
  }
  return undefined
}

/** The problem with drain options (the plugin's `drain`, `app.wsConnections.drain()`), or undefined. */
export function drainOptionsProblem (value: unknown): string | undefined {
  const expected = `expected { batchSize?, batchIntervalMs?, maxWindowMs? (whole numbers: >= 1, and ms from 0 to ${MAX_TIMER_MS}), code?: 1001 | 1012 }, got ${show(value)}`
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return expected
  const { batchSize, batchIntervalMs, maxWindowMs, code, ...rest } = value as Record<string, unknown>
  const whole = (v: unknown, min: number): boolean => v === undefined || (Number.isSafeInteger(v) && (v as number) >= min)
  const ms = (v: unknown): boolean => v === undefined || delay(v) === undefined
  return Object.keys(rest).length === 0 && whole(batchSize, 1) && ms(batchIntervalMs) && ms(maxWindowMs) &&
    (code === undefined || code === 1001 || code === 1012)
    ? undefined
    : expected
}

/** The first problem with `options` against `checks`, as a sentence, or undefined. */
export function optionsProblem (options: unknown, checks: Readonly<Record<string, Check>>): string | undefined {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    return `options must be an object, got ${show(options)}`
  }
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue
    const check = checks[key]
    if (check === undefined) return `unknown option "${key}" (known: ${Object.keys(checks).join(', ')})`
    const problem = check(value)
    if (problem !== undefined) return `option "${key}": ${problem}`
  }
  return undefined
}

/**
 * A check for what a callback returns (`init`'s result, a command result): undefined, or an
 * object whose keys are among `checks` and whose fields pass them. Built once, run per result.
 */
export function shapeChecker (checks: Readonly<Record<string, Check>>): Check {
  const byKey: Record<string, Check | undefined> = Object.assign(Object.create(null), checks)
  const expected = Object.keys(checks).join(', ')
  return (value) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return `got ${show(value)}, expected undefined or an object with some of: ${expected}`
    }
    // One pass: an unknown key is reported before any field's problem.
    let fieldProblem: string | undefined
    for (const key in value) {
      const check = byKey[key]
      if (check === undefined) return `unknown key "${key}", expected some of: ${expected}`
      const field = (value as Record<string, unknown>)[key]
      if (fieldProblem === undefined && field !== undefined) fieldProblem = check(field)
    }
    return fieldProblem
  }
}

/** A field check for results: `"name" must be <what>, got …`. */
export function mustBe (name: string, what: string, test: (value: unknown) => boolean): Check {
  return (value) => test(value) ? undefined : `"${name}" must be ${what}, got ${show(value)}`
}

export const anything: Check = () => undefined

function assertOptions (options: unknown, checks: Readonly<Record<string, Check>>, where: string): void {
  const problem = optionsProblem(options, checks)
  if (problem !== undefined) throw new InvalidOptionError(where, problem)
}

export function assertPluginOptions (options: WebSocketHandlersOptions): void {
  assertOptions(options, pluginChecks, 'plugin options')
}

export function assertRouteOptions (options: RouteWebSocketOptions, url: string): void {
  assertOptions(options, routeChecks, `wsOptions of ${url}`)
}

const CALLBACKS = ['init', 'websocketInit', 'handle', 'info', 'terminate']

/**
 * A handler is an object whose callbacks (own or inherited) are functions. In a plain object
 * literal any other key is a typo (`handel`) and is refused; a class instance may have fields.
 */
export function assertHandler (handler: unknown, url: string): void {
  const expected = `some of ${CALLBACKS.join(', ')}`
  if (handler === null || typeof handler !== 'object') {
    const hint = typeof handler === 'function' ? ' (a @fastify/websocket handler?)' : ''
    throw new InvalidHandlerError(url, `expected an object with ${expected}, got ${show(handler)}${hint}`)
  }
  const prototype = Object.getPrototypeOf(handler)
  if (prototype === Object.prototype || prototype === null) {
    for (const key of Object.keys(handler)) {
      if (!CALLBACKS.includes(key)) throw new InvalidHandlerError(url, `unknown callback "${key}", expected ${expected}`)
    }
  }
  for (const name of CALLBACKS) {
    const callback = (handler as Record<string, unknown>)[name]
    if (callback !== undefined && typeof callback !== 'function') {
      throw new InvalidHandlerError(url, `"${name}" must be a function, got ${show(callback)}`)
    }
  }
}

/** The keys given a value (an option given as `undefined` is not given). */
export function definedOnly<T extends object> (options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>
}

/** Per-connection options of `layer` over `base`, keeping only the per-connection keys. */
export function resolveConnectionOptions (base: ResolvedConnectionOptions, layer: ConnectionOptions): ResolvedConnectionOptions {
  const resolved = { ...base }
  for (const key of Object.keys(DEFAULTS) as Array<keyof ResolvedConnectionOptions>) {
    const value = layer[key]
    if (value !== undefined) (resolved as Record<string, unknown>)[key] = value
  }
  return resolved
}

/** A short, safe description of any value for error messages. */
export function show (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'function') return 'a function'
  if (value === null || typeof value !== 'object') return String(value)
  if (Array.isArray(value)) return `an array of ${value.length}`
  if (typeof (value as { then?: unknown }).then === 'function') return 'a promise'
  const keys = Object.keys(value)
  return `{ ${keys.slice(0, 6).join(', ')}${keys.length > 6 ? ', …' : ''} }`
}
