/**
 * JSON routes (the `json` route option): text frames are parsed, and validated against a JSON
 * schema with Fastify's own validator compiler (the app's, so Ajv options, custom compilers and
 * shared schemas apply; Fastify's default Ajv compiler when the app has none yet). `handle` then
 * receives `{ type: 'json', data }`. Bad input gets the route's reaction: a close with a code
 * (default) or an error frame, the connection staying open.
 */
import { createRequire } from 'node:module'
import type { FastifyInstance, FastifySchema } from 'fastify'
import { CloseCode } from './close-codes.js'
import type { JsonFrame, JsonOptions } from './types.js'

/** What went wrong with one message: the close code and a short reason (≤ 123 bytes). */
export interface JsonProblem { readonly code: number, readonly reason: string }

/** A parser for one route: a frame for `handle`, or the problem. */
export type JsonReader = (text: string | undefined) => JsonFrame | JsonProblem

type Validate = (data: unknown) => unknown

/** The reader of a route, built once; the schema is compiled on the first message (after ready). */
export function jsonReader (instance: FastifyInstance, url: string, options: JsonOptions): JsonReader {
  let validate: Validate | undefined
  const schema = options.schema
  return (text) => {
    if (text === undefined) return { code: CloseCode.UNSUPPORTED_DATA, reason: 'this route takes JSON text frames' }
    let data: unknown
    try {
      data = JSON.parse(text)
    } catch {
      return { code: CloseCode.INVALID_PAYLOAD, reason: 'invalid JSON' }
    }
    if (schema !== undefined) {
      validate ??= compile(instance, url, schema)
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
  return Buffer.byteLength(text) <= 123 ? text : Buffer.from(text).subarray(0, 120).toString() + '…'
}
