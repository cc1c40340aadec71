// The example app: HTTP routes beside WebSocket routes. Each handler lives in its own file.
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import Fastify, { type FastifyServerOptions } from 'fastify'
import wsHandlers, { close, defineHandler, text, type DrainOptions, type PubSubAdapter } from '../lib/index.js'
import { redisAdapter } from '../lib/redis.js'
import { tokenUser, unauthorized } from './auth.js'
import { embeddedBroker, externalBroker, type Broker } from './broker.js'
import { chat, chatHistory } from './chat.js'
import { feed, feedHistory, feedPage, publishTicks } from './feed.js'
import { chatPage } from './chat-page.js'
import { counter } from './counter.js'
import { echo } from './echo.js'
import { clientMessageSchema, graphqlOverWebSocket } from './graphql.js'
import { hello } from './hello.js'
import { mqttGateway, type GatewayStats } from './mqtt.js'

export interface ExampleOptions {
  /** Where /mqtt sends its bytes; by default MQTT_BROKER_URL, else an embedded aedes broker. */
  broker?: Broker
  /** How topics reach other instances; by default Redis when REDIS_URL is set, else this app alone. */
  adapter?: PubSubAdapter
  /** ms between the live feed's ticks (0: none); by default FEED_INTERVAL_MS, else 200. */
  feedIntervalMs?: number
  /** How app.close() drains connections (the plugin's `drain` option). */
  drain?: DrainOptions
}

export async function buildExampleApp (options: FastifyServerOptions = {}, example: ExampleOptions = {}) {
  const app = Fastify(options)
  // With REDIS_URL, several instances share chat rooms (topics) and posts by connection id.
  const adapter = example.adapter ?? (process.env.REDIS_URL === undefined ? undefined : redisAdapter())
  // OpenTelemetry metrics, scraped by Prometheus at GET /metrics (see "Metrics" in the README).
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  app.addHook('onClose', async () => { await meterProvider.shutdown() })
  // The chat's rooms and the live feed keep a history: a page that reconnects gets what it missed.
  await app.register(wsHandlers, { idleTimeout: 60_000, adapter, metrics: { meterProvider }, history: { ...chatHistory, ...feedHistory }, drain: example.drain })
  app.get('/metrics', (request, reply) => {
    reply.hijack()
    exporter.getMetricsRequestHandler(request.raw, reply.raw)
  })
  const brokerUrl = process.env.MQTT_BROKER_URL
  const broker = example.broker ?? (brokerUrl === undefined ? await embeddedBroker() : externalBroker(brokerUrl))
  const mqttStats: GatewayStats = { brokerPauses: 0, clientPauses: 0, brokerLosses: 0 }
  app.addHook('onClose', async () => { await broker.close() })
  app.log.info(`/mqtt bridges to the ${broker.description}`)

  app.get('/health', async () => ({ ok: true, connections: app.wsConnections.size }))
  app.ws('/echo', echo)
  app.ws('/hello', hello)
  app.ws('/counter', counter)
  // MQTT over WebSocket (Cowboy's subprotocol example): `v12.stomp, mqtt` is upgraded with mqtt,
  // `v12.stomp` alone gets 400, and so does a client offering no subprotocol (MQTT requires one).
  app.ws('/mqtt', mqttGateway(broker, mqttStats), { protocols: ['mqtt', 'mqttv3.1'], protocolRequired: true })
  // GraphQL over WebSocket (graphql-transport-ws, as the graphql-ws client speaks it): queries,
  // mutations and subscriptions fed by topics; a message that is not the protocol's closes 4400.
  app.ws('/graphql', graphqlOverWebSocket(app.wsConnections), {
    protocols: ['graphql-transport-ws'],
    protocolRequired: true,
    json: { schema: clientMessageSchema, onInvalid: (problem) => close(4400, problem.reason) }
  })
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
  // The chat: GET /chat is the page, and the WebSocket on the same path is the chat itself.
  app.route({
    method: 'GET',
    url: '/chat',
    handler: async (_request, reply) => await reply.type('text/html; charset=utf-8').send(chatPage),
    ws: chat(app.wsConnections)
  })
  // The live feed: GET /feed is the page, the WebSocket on the same path follows the topic.
  app.route({
    method: 'GET',
    url: '/feed',
    handler: async (_request, reply) => await reply.type('text/html; charset=utf-8').send(feedPage),
    ws: feed
  })
  publishTicks(app, example.feedIntervalMs ?? Number(process.env.FEED_INTERVAL_MS ?? 200))
  // Post to any connection from plain HTTP: curl -X POST localhost:3000/connections/<id> -d hi
  app.post('/connections/:id', async (request, reply) => {
    const { id } = request.params as { id: string }
    const delivered = app.wsConnections.post(id, String(request.body))
    return await reply.code(delivered ? 202 : 404).send({ delivered })
  })
  return { app, mqttStats, broker }
}
