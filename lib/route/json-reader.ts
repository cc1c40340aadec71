/**
 * JSON routes (the `json` route option): text frames are parsed, and validated against a JSON
 * schema with Fastify's own validator compiler (the app's, so Ajv options, custom compilers and
 * shared schemas apply; Fastify's default Ajv compiler when the app has none yet). `handle` then
 * receives `{ type: 'json', data }`. Bad input gets the route's reaction: a close with a code
 * (default) or an error frame, the connection staying open.
 */
import { createRequire } from 'node:module'
import type { FastifyInstance, FastifySchema } from 'fastify'
import secureJson from 'secure-json-parse'
import { CloseCode, fitCloseReason } from '../core/close-codes.js'
import { InvalidOptionError } from '../core/errors.js'
import type { JsonOptions } from '../core/types.js'
import type { JsonReader } from '../actor/listeners.js'

type Validate = (data: unknown) => unknown

/** Fastify's options for prototype poisoning in JSON bodies ('error' by default): messages get the same. */
type PoisoningAction = 'error' | 'remove' | 'ignore'

/**
 * The reader of a route, built at declaration. Its schema is compiled when the app becomes ready
 * (with the compiler and shared schemas the app has by then), so a schema that cannot compile
 * fails `ready()`, never a message. Text is parsed as Fastify parses JSON bodies
 * (secure-json-parse, with the app's `onProtoPoisoning` and `onConstructorPoisoning`).
 */
export function jsonReader (instance: FastifyInstance, url: string, options: JsonOptions): JsonReader {
  let validate: Validate | undefined
  const schema = options.schema
  if (schema !== undefined) {
    instance.addHook('onReady', async function compileMessageSchema () {
      try {
        validate = compile(instance, url, schema)
      } catch (error) {
        throw new InvalidOptionError(`json.schema of ${url}`, `it does not compile: ${(error as Error).message}`)
      }
    })
  }
  const { onProtoPoisoning = 'error', onConstructorPoisoning = 'error' } = instance.initialConfig as {
    onProtoPoisoning?: PoisoningAction, onConstructorPoisoning?: PoisoningAction
  }
  const parseOptions = { protoAction: onProtoPoisoning, constructorAction: onConstructorPoisoning }
  return (text) => {
    if (text === undefined) return { code: CloseCode.UNSUPPORTED_DATA, reason: 'this route takes JSON text frames' }
    let data: unknown
    try {
      data = secureJson.parse(text, undefined, parseOptions)
    } catch (error) {
      // Not JSON; or JSON that Fastify refuses in a body too (a __proto__ or constructor.prototype key).
      return { code: CloseCode.INVALID_PAYLOAD, reason: error instanceof SyntaxError && /forbidden/.test(error.message) ? error.message : 'invalid JSON' }
    }
    if (validate !== undefined) {
      const problem = validationProblem(validate, data)
      if (problem !== undefined) return { code: CloseCode.POLICY_VIOLATION, reason: problem }
    }
    return { type: 'json', data }
  }
}

function compile (instance: FastifyInstance, url: string, schema: object): Validate {
  const compiler = instance.validatorCompiler ?? fastifysDefaultCompiler()
  return compiler({ schema: schema as FastifySchema, method: 'GET', url, httpPart: 'body' }) as Validate
}

/** Fastify's default (@fastify/ajv-compiler, its own dependency), for an app that compiled no schema yet. */
function fastifysDefaultCompiler (): NonNullable<FastifyInstance['validatorCompiler']> {
  const fromFastify = createRequire(createRequire(import.meta.url).resolve('fastify'))
  const AjvCompiler = fromFastify('@fastify/ajv-compiler') as () => (schemas: object, options: object) => NonNullable<FastifyInstance['validatorCompiler']>
  // Messages are data, not query strings: no type coercion, nothing removed.
  return AjvCompiler()({}, { customOptions: { coerceTypes: false, removeAdditional: false }, plugins: [] })
}

/** Ajv's validate returns a boolean and keeps `errors`; Fastify's interface may return `{ error }`. */
function validationProblem (validate: Validate, data: unknown): string | undefined {
  const result = validate(data) as boolean | { error?: Error } | undefined
  if (result === true || (typeof result === 'object' && result !== null && result.error === undefined)) return undefined
  const errors = (validate as { errors?: Array<{ instancePath: string, message: string }> }).errors
  const first = errors?.[0]
  const text = first === undefined
    ? (typeof result === 'object' && result?.error !== undefined ? result.error.message : 'invalid message')
    : `${first.instancePath === '' ? 'message' : first.instancePath} ${first.message}`
  return fitCloseReason(text) // the client chooses the text (a key appears in the path): cut it safely
}
