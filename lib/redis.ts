/**
 * `fastify-ws-handlers/redis`: the Redis adapter, for several instances of an app sharing topics
 * and posts by id (registry/redis.ts).
 */
export { redisAdapter, type RedisAdapterOptions, type RedisPubSubAdapter } from './registry/redis.js'
