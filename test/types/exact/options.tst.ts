/**
 * Under `exactOptionalPropertyTypes` (this folder's tsconfig), an option given as `undefined`
 * is accepted as not given, as the plugin treats it at run time: the pattern
 * `adapter: process.env.REDIS_URL === undefined ? undefined : redisAdapter()` type-checks.
 */
import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import wsHandlers, { type DrainOptions, type PubSubAdapter, type WebSocketHandlersOptions } from '../../../lib/index.js'
import { redisAdapter } from '../../../lib/redis.js'

test('plugin options given as undefined', () => {
  const adapter: PubSubAdapter | undefined = process.env.REDIS_URL === undefined ? undefined : redisAdapter()
  const options = { adapter, closeTimeout: undefined, metrics: undefined, history: undefined, drain: { code: undefined }, idleTimeout: undefined }
  expect(options).type.toBeAssignableTo<WebSocketHandlersOptions>()
  expect({ batchSize: undefined }).type.toBeAssignableTo<DrainOptions>()
  expect(Fastify().register(wsHandlers, options)).type.not.toRaiseError()
})

test('route options given as undefined', () => {
  const app = Fastify()
  app.ws('/x', { handle: () => undefined }, { maxConnections: undefined, rateLimit: undefined, json: { onInvalid: undefined } })
})
