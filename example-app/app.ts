// The example app: HTTP routes beside WebSocket routes. Each handler lives in its own file.
import Fastify, { type FastifyServerOptions } from 'fastify'
import wsHandlers, { defineHandler, text } from '../lib/index.js'
import { tokenUser, unauthorized } from './auth.js'
import { counter } from './counter.js'
import { echo } from './echo.js'
import { hello } from './hello.js'

export async function buildExampleApp (options: FastifyServerOptions = {}) {
  const app = Fastify(options)
  await app.register(wsHandlers, { idleTimeout: 60_000 })

  app.get('/health', async () => ({ ok: true, connections: app.wsConnections.size }))
  app.ws('/echo', echo)
  app.ws('/hello', hello)
  app.ws('/counter', counter)
  // An inbox: authenticated before the upgrade, then it relays what the app posts to it.
  app.ws('/private', defineHandler<string, string>({
    init (request, reply) {
      const user = tokenUser(request)
      if (user === undefined) return reply.code(401).send(unauthorized)
      return { state: user }
    },
    websocketInit: (user, ctx) => ({ reply: text(`welcome, ${user}; your id is ${ctx.id}`) }),
    info: (message) => ({ reply: text(`posted: ${String(message)}`) })
  }))
  // Post to any connection from plain HTTP: curl -X POST localhost:3000/connections/<id> -d hi
  app.post('/connections/:id', async (request, reply) => {
    const { id } = request.params as { id: string }
    const delivered = app.wsConnections.post(id, String(request.body))
    return await reply.code(delivered ? 202 : 404).send({ delivered })
  })
  return app
}
