/**
 * The example app's /graphql, driven by the real `graphql-ws` client: the graphql-transport-ws
 * protocol (connection_init/ack, subscribe → next … complete, ping/pong, 44xx closes) on this
 * plugin, with a subscription fed by a topic.
 */
import { once } from 'node:events'
import { install } from '@sinonjs/fake-timers'
import { createClient, type Client } from 'graphql-ws'
import t from 'tap'
import WebSocket from 'ws'
import { buildExampleApp } from '../example-app/app.js'
import { roomTopic } from '../example-app/graphql.js'
import { listen, until } from './helpers.js'
import { mutate, pick, random } from './fuzz.js'

async function exampleApp (t: { teardown(fn: () => unknown): void }): Promise<{ app: Awaited<ReturnType<typeof buildExampleApp>>['app'], url: string }> {
  const { app } = await buildExampleApp()
  t.teardown(() => app.close())
  const base = await listen(app)
  return { app, url: `${base}/graphql` }
}

function client (t: { teardown(fn: () => unknown): void }, url: string): Client {
  const graphql = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false })
  t.teardown(async () => await graphql.dispose())
  return graphql
}

/** A raw protocol peer, for what the client library never sends. */
async function raw (url: string): Promise<{ ws: WebSocket, messages: unknown[], closed: Promise<[number, string]> }> {
  const ws = new WebSocket(url, 'graphql-transport-ws')
  const messages: unknown[] = []
  ws.on('message', (data) => messages.push(JSON.parse(String(data))))
  const closed = once(ws, 'close').then(([code, reason]) => [code, String(reason)] as [number, string])
  await once(ws, 'open')
  return { ws, messages, closed }
}

t.test('graphql-ws: a query, a mutation, and a subscription fed by a topic, until the client completes it', async (t) => {
  const { app, url } = await exampleApp(t)
  const listener = client(t, url)
  const speaker = client(t, url)
  t.same(await listener.iterate({ query: '{ hello }' }).next(), { done: false, value: { data: { hello: 'world' } } })

  const lines = listener.iterate<{ messages: { from: string, text: string } }>({ query: 'subscription ($room: String!) { messages(room: $room) { from text } }', variables: { room: 'blue' } })
  const first = lines.next()
  await until(() => app.wsConnections.subscriberCount(roomTopic('blue')) === 1, 'the subscription listens to its room\'s topic')
  const said = await speaker.iterate({ query: 'mutation { say(room: "blue", from: "ada", text: "hi") { text } }' }).next()
  t.same(said.value, { data: { say: { text: 'hi' } } })
  t.same((await first).value, { data: { messages: { from: 'ada', text: 'hi' } } })
  app.wsConnections.publish(roomTopic('blue'), { room: 'blue', from: 'server', text: 'published by the app' })
  app.wsConnections.publish(roomTopic('blue'), { room: 'blue', from: 'server', text: 'and again, before the first was pulled' })
  t.same((await lines.next()).value, { data: { messages: { from: 'server', text: 'published by the app' } } })
  t.same((await lines.next()).value, { data: { messages: { from: 'server', text: 'and again, before the first was pulled' } } })
  t.same(await speaker.iterate({ query: '{ rooms }' }).next(), { done: false, value: { data: { rooms: ['blue'] } } })

  await lines.return!() // the client sends complete: the stream stops and the topic is left
  await until(() => app.wsConnections.subscriberCount(roomTopic('blue')) === 0, 'complete released the subscription')
  const invalid = await speaker.iterate({ query: '{ nope }' }).next().catch((errors: unknown) => errors)
  t.match(invalid, [{ message: 'Cannot query field "nope" on type "Query".' }], 'validation errors arrive as the protocol\'s error message')
})

t.test('a subscription that ends by itself completes; a query that does not parse is an error message; WebSocket pings and unknown completes are ignored', async (t) => {
  const { url } = await exampleApp(t)
  const graphql = client(t, url)
  const counted: unknown[] = []
  for await (const result of graphql.iterate({ query: 'subscription { countdown(from: "3") }' })) counted.push(result.data)
  t.same(counted, [{ countdown: '3' }, { countdown: '2' }, { countdown: '1' }], 'next × 3, then complete from the server')
  const peer = await raw(url)
  peer.ws.send(JSON.stringify({ type: 'connection_init' }))
  peer.ws.ping()
  peer.ws.send(JSON.stringify({ type: 'complete', id: 'never-started' }))
  peer.ws.send(JSON.stringify({ type: 'subscribe', id: 'p', payload: { query: '{' } }))
  peer.ws.send(JSON.stringify({ type: 'subscribe', id: 'q', payload: { query: 'subscription ($room: String!) { messages(room: $room) { text } }', variables: {} } }))
  await until(() => peer.messages.length === 4, 'ack, then the two answers')
  t.match(peer.messages, [
    { type: 'connection_ack' },
    { type: 'error', id: 'p', payload: [{ message: /Syntax Error/ }] },
    { type: 'next', id: 'q', payload: { errors: [{ message: /Variable "\$room" of required type "String!" was not provided/ }] } },
    { type: 'complete', id: 'q' }
  ])
  peer.ws.close()
})

t.test('the protocol\'s closes: 4400 for what is not its message, 4401 before the ack, 4409 for a duplicate id, 4429 for a second init', async (t) => {
  const { url } = await exampleApp(t)
  const notProtocol = await raw(url)
  notProtocol.ws.send(JSON.stringify({ type: 'hello' }))
  t.match(await notProtocol.closed, [4400, /type/])
  const notJson = await raw(url)
  notJson.ws.send('{')
  t.match(await notJson.closed, [4400, /JSON/])

  const early = await raw(url)
  early.ws.send(JSON.stringify({ type: 'subscribe', id: '1', payload: { query: '{ hello }' } }))
  t.same(await early.closed, [4401, 'Unauthorized'])

  const twice = await raw(url)
  twice.ws.send(JSON.stringify({ type: 'connection_init' }))
  twice.ws.send(JSON.stringify({ type: 'ping' }))
  twice.ws.send(JSON.stringify({ type: 'pong' }))
  twice.ws.send(JSON.stringify({ type: 'subscribe', id: 'a', payload: { query: 'subscription { messages(room: "r") { text } }' } }))
  twice.ws.send(JSON.stringify({ type: 'subscribe', id: 'a', payload: { query: 'subscription { messages(room: "r") { text } }' } }))
  t.same(await twice.closed, [4409, 'Subscriber for a already exists'])
  t.same(twice.messages, [{ type: 'connection_ack' }, { type: 'pong' }])

  const reinit = await raw(url)
  reinit.ws.send(JSON.stringify({ type: 'connection_init' }))
  reinit.ws.send(JSON.stringify({ type: 'connection_init' }))
  t.same(await reinit.closed, [4429, 'Too many initialisation requests'])
})

t.test('a client that never sends connection_init is closed with 4408 after 3 s', async (t) => {
  const { url } = await exampleApp(t)
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  t.teardown(() => clock.uninstall())
  const silent = await raw(url)
  const polite = await raw(url)
  polite.ws.send(JSON.stringify({ type: 'connection_init' }))
  await until(() => polite.messages.length === 1, 'acknowledged')
  clock.tick(3000)
  t.same(await silent.closed, [4408, 'Connection initialisation timeout'])
  t.equal(polite.ws.readyState, WebSocket.OPEN, 'the acknowledged client stays')
  polite.ws.close()
})

t.test('fuzz: mutated protocol messages get the protocol\'s answer or a 44xx close, never a crash; the server goes on', async (t) => {
  const { url } = await exampleApp(t)
  const next = random(19)
  const valid = [
    { type: 'connection_init' }, { type: 'ping' }, { type: 'pong' }, { type: 'complete', id: '1' },
    { type: 'subscribe', id: '1', payload: { query: 'subscription { messages(room: "f") { text } }' } },
    { type: 'subscribe', id: '2', payload: { query: '{ hello }', variables: { a: 1 } } },
    { type: 'subscribe', id: '3', payload: { query: 'mutation { say(room: "f", from: "z", text: "y") { text } }' } }
  ]
  for (let round = 0; round < 30; round++) {
    const peer = await raw(url)
    for (let i = 0; i < 8 && peer.ws.readyState === WebSocket.OPEN; i++) {
      const message = Buffer.from(JSON.stringify(pick(next, valid)))
      peer.ws.send(next(3) === 0 ? message.toString() : mutate(next, message).toString())
    }
    peer.ws.close()
    const [code] = await peer.closed
    t.ok(code === 1000 || code === 1005 || (code >= 4400 && code < 4500), `round ${round}: closed with ${code}`)
  }
  const survivor = client(t, url)
  t.same(await survivor.iterate({ query: '{ hello }' }).next(), { done: false, value: { data: { hello: 'world' } } }, 'still serving')
})
