/**
 * MQTT over WebSocket through the example app's /mqtt gateway, proven with clients we did not
 * write (mqtt.js, ws) against the embedded aedes broker and against Mosquitto.
 */
import { once } from 'node:events'
import net from 'node:net'
import { Aedes } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'
import mqttPacket, { type Packet } from 'mqtt-packet'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { buildExampleApp } from '../example-app/app.js'
import { duplexPair, embeddedBroker, externalBroker, type Broker } from '../example-app/broker.js'
import { BROKER_LOST } from '../example-app/mqtt.js'
import { connect, listen, sleep, until, upgradeHeaders } from './helpers.js'

const TOKEN = 'token=secret'

/** The example app; its /mqtt bridges to `broker`, by default a fresh embedded one. */
async function gateway (t: Test, broker?: Broker) {
  const { app, mqttStats } = await buildExampleApp({}, { broker: broker ?? await embeddedBroker() })
  t.teardown(() => app.close())
  const base = await listen(app)
  return { app, mqttStats, url: `${base}/mqtt?${TOKEN}` }
}

async function mqttClient (url: string, options: mqtt.IClientOptions = {}): Promise<MqttClient> {
  return await mqtt.connectAsync(url, { reconnectPeriod: 0, ...options }) // mqtt.js's 30 s connect timeout: a loaded CI is slow
}

/** aedes's client table (not in its types). */
const clientsOf = (aedes: Aedes): Record<string, { close: () => void } | undefined> =>
  (aedes as unknown as { clients: Record<string, { close: () => void } | undefined> }).clients

/** Messages a client receives, as "topic:payload". */
function inbox (client: MqttClient): string[] {
  const received: string[] = []
  client.on('message', (topic, payload) => received.push(`${topic}:${payload.toString()}`))
  return received
}

/** A WebSocket client that speaks MQTT by hand, packet by packet. */
async function rawMqtt (url: string) {
  const ws = new WebSocket(url, 'mqtt')
  const packets: Packet[] = []
  const parser = mqttPacket.parser()
  parser.on('packet', (packet) => packets.push(packet))
  ws.on('message', (data: Buffer) => parser.parse(data))
  ws.on('error', () => {})
  const closed = new Promise<{ code: number, reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  await once(ws, 'open')
  return { ws, packets, closed }
}

const packet = (p: Record<string, unknown>): Buffer => mqttPacket.generate(p as unknown as Packet)
const connectPacket = (clientId: string): Buffer => packet({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 })

async function exchange (t: Test, url: string, prefix: string): Promise<void> {
  const a = await mqttClient(url)
  const b = await mqttClient(url)
  const aGot = inbox(a)
  const bGot = inbox(b)
  await a.subscribeAsync(`${prefix}/#`, { qos: 1 })
  await b.subscribeAsync(`${prefix}/#`, { qos: 1 })
  await a.publishAsync(`${prefix}/qos0`, 'from a at QoS 0', { qos: 0 })
  await a.publishAsync(`${prefix}/qos1`, 'from a at QoS 1', { qos: 1 })
  await b.publishAsync(`${prefix}/b`, 'from b', { qos: 1 })
  await until(() => aGot.length === 3 && bGot.length === 3)
  const expected = [`${prefix}/qos0:from a at QoS 0`, `${prefix}/qos1:from a at QoS 1`, `${prefix}/b:from b`]
  t.same(aGot, expected, 'a received its own messages and b\'s')
  t.same(bGot, expected, 'b received a\'s messages and its own')
  await Promise.all([a.endAsync(), b.endAsync()])
}

t.test('mqtt.js subscribes and publishes at QoS 0 and 1 through the embedded broker', async (t) => {
  const { url } = await gateway(t)
  await exchange(t, url, 'embedded')
})

t.test('mqtt.js subscribes and publishes at QoS 0 and 1 through Mosquitto (MQTT_BROKER_URL)', async (t) => {
  const brokerUrl = process.env.MQTT_BROKER_URL ?? 'mqtt://127.0.0.1:1883'
  const { hostname, port } = new URL(brokerUrl)
  const reachable = await new Promise<boolean>((resolve) => {
    const probe = net.connect(Number(port || 1883), hostname, () => { probe.destroy(); resolve(true) })
    probe.on('error', () => resolve(false))
  })
  if (!reachable) {
    t.fail(`Mosquitto is not reachable at ${brokerUrl}: start it (mosquitto -d) or set MQTT_BROKER_URL`)
    return
  }
  const { url } = await gateway(t, externalBroker(brokerUrl))
  await exchange(t, url, `mosquitto-${process.pid}-${Date.now()}`)
})

t.test('the /mqtt subprotocol answers: 400 for v12.stomp, mqtt for "v12.stomp, mqtt", 400 for none, 401 without a token', async (t) => {
  const { url } = await gateway(t)
  const stomp = await connect(url, 'v12.stomp').catch((error: { statusCode: number }) => error)
  t.equal((stomp as { statusCode: number }).statusCode, 400)
  const both = await connect(url, ['v12.stomp', 'mqtt'])
  t.equal(both.headers['sec-websocket-protocol'], 'mqtt')
  both.ws.close()
  const v31 = await connect(url, ['mqttv3.1'])
  t.equal(v31.ws.protocol, 'mqttv3.1', 'MQTT 3.1 clients are served too')
  v31.ws.close()
  const none = await connect(url).catch((error: { statusCode: number }) => error)
  t.equal((none as { statusCode: number }).statusCode, 400, 'MQTT over WebSocket requires a subprotocol')
  const anonymous = await connect(url.replace(`?${TOKEN}`, ''), 'mqtt').catch((error: { statusCode: number }) => error)
  t.equal((anonymous as { statusCode: number }).statusCode, 401)
  const bearer = await connect(url.replace(`?${TOKEN}`, ''), 'mqtt', { headers: { authorization: 'Bearer secret' } })
  bearer.ws.close()
})

t.test('a 400 for v12.stomp says why in its body', async (t) => {
  const { app } = await gateway(t)
  const response = await app.inject({
    url: `/mqtt?${TOKEN}`,
    headers: { ...upgradeHeaders, 'sec-websocket-protocol': 'v12.stomp' }
  })
  t.equal(response.statusCode, 400)
  t.match(response.json().message, 'None of the offered subprotocols (v12.stomp) is supported; this route speaks: mqtt, mqttv3.1')
})

t.test('packets may span frames or share one', async (t) => {
  const { url } = await gateway(t)
  const client = await rawMqtt(url)
  const connectBytes = connectPacket('split')
  client.ws.send(connectBytes.subarray(0, 5)) // CONNECT across two frames
  client.ws.send(connectBytes.subarray(5))
  client.ws.send(Buffer.concat([ // SUBSCRIBE and PUBLISH in one frame
    packet({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'split/t', qos: 0 }] }),
    packet({ cmd: 'publish', topic: 'split/t', payload: 'both in one frame', qos: 0, retain: false, dup: false })
  ]))
  await until(() => client.packets.length === 3)
  t.same(client.packets.map((p) => p.cmd), ['connack', 'suback', 'publish'])
  t.equal(String((client.packets[2] as { payload: Buffer }).payload), 'both in one frame')
  client.ws.close()
})

t.test('pings are answered by the plugin and not forwarded to the broker', async (t) => {
  const { url } = await gateway(t)
  const client = await rawMqtt(url)
  client.ws.send(connectPacket('pinger'))
  client.ws.ping('still there?')
  const [pong] = await once(client.ws, 'pong') as [Buffer]
  t.equal(pong.toString(), 'still there?')
  await until(() => client.packets.length === 1)
  t.same(client.packets.map((p) => p.cmd), ['connack'])
  client.ws.close()
})

t.test('MQTT_BROKER_URL points the example app at an external broker; a bad URL is refused', async (t) => {
  const previous = process.env.MQTT_BROKER_URL
  process.env.MQTT_BROKER_URL = 'mqtt://127.0.0.1:1883'
  t.teardown(() => {
    if (previous === undefined) delete process.env.MQTT_BROKER_URL
    else process.env.MQTT_BROKER_URL = previous
  })
  const { app, broker } = await buildExampleApp()
  t.teardown(() => app.close())
  t.equal(broker.description, 'MQTT broker at 127.0.0.1:1883')
  t.throws(() => externalBroker('http://127.0.0.1:1883'), /MQTT_BROKER_URL must be mqtt:\/\/host:port/)
  t.equal(externalBroker('mqtt://localhost').description, 'MQTT broker at localhost:1883')
})

t.test('duplexPair: what one end writes the other reads; ending and destroying reach the other end', async (t) => {
  const [a, b] = duplexPair()
  const chunks: string[] = []
  b.on('data', (chunk: Buffer) => chunks.push(chunk.toString()))
  a.write('one')
  a.end('two')
  await once(b, 'end')
  t.same(chunks, ['one', 'two'])
  const [c, d] = duplexPair()
  let writes = 0
  while (c.write(Buffer.alloc(1024))) writes++ // d is not read: c's writes back up
  t.ok(writes < 64, `back-pressure after ${writes} KiB`)
  const drained = once(c, 'drain')
  d.resume()
  await drained
  d.destroy()
  await once(c, 'close')
  t.ok(c.destroyed, 'destroying one end closes the other')
})

t.test('a text frame is refused with 1003: MQTT travels in binary frames', async (t) => {
  const { url } = await gateway(t)
  const client = await rawMqtt(url)
  client.ws.send('not mqtt')
  t.same(await client.closed, { code: 1003, reason: 'MQTT packets travel in binary frames' })
})

t.test('when the broker drops the connection the client sees 1014, terminate cleans up, nothing is left open', async (t) => {
  const broker = await embeddedBroker()
  const { app, mqttStats, url } = await gateway(t, broker)
  await sleep(20)
  const before = process.getActiveResourcesInfo().length
  const client = await rawMqtt(url)
  client.ws.send(connectPacket('doomed'))
  await until(() => client.packets.length === 1)
  clientsOf(broker.aedes).doomed!.close()
  t.same(await client.closed, { code: BROKER_LOST, reason: 'MQTT broker connection lost' })
  await until(() => app.wsConnections.size === 0)
  t.equal(mqttStats.brokerLosses, 1)
  await until(() => process.getActiveResourcesInfo().length === before, 'no socket, timer or stream left behind')
  t.pass('no socket, timer or stream left behind')
})

t.test('a closed WebSocket closes its broker connection', async (t) => {
  const broker = await embeddedBroker()
  const { url } = await gateway(t, broker)
  const client = await rawMqtt(url)
  client.ws.send(connectPacket('leaving'))
  await until(() => client.packets.length === 1)
  t.ok(clientsOf(broker.aedes).leaving)
  client.ws.terminate()
  await until(() => clientsOf(broker.aedes).leaving === undefined)
})

t.test('200 mqtt.js clients each receive all 100 messages, in order', async (t) => {
  const { url } = await gateway(t)
  const subscribers = await Promise.all(Array.from({ length: 200 }, async () => await mqttClient(url)))
  const inboxes = subscribers.map(inbox)
  await Promise.all(subscribers.map(async (s) => await s.subscribeAsync('fan/out', { qos: 1 })))
  const publisher = await mqttClient(url)
  const sent = Array.from({ length: 100 }, (_, i) => `fan/out:message ${i}`)
  for (let i = 0; i < 100; i++) await publisher.publishAsync('fan/out', `message ${i}`, { qos: 1 })
  await until(() => inboxes.every((received) => received.length >= 100))
  t.ok(inboxes.every((received) => JSON.stringify(received) === JSON.stringify(sent)), 'every inbox holds the 100 messages in order')
  await Promise.all([...subscribers, publisher].map(async (c) => await c.endAsync()))
})

t.test('a slow WebSocket client pauses the broker connection instead of buffering without bound', async (t) => {
  const { app, mqttStats, url } = await gateway(t)
  const slow = await rawMqtt(url)
  slow.ws.send(connectPacket('slow'))
  slow.ws.send(packet({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bulk', qos: 0 }] }))
  await until(() => slow.packets.length === 2) // connack, suback
  const socket = (slow.ws as unknown as { _socket: import('node:net').Socket })._socket
  socket.pause() // stop reading: TCP fills up, the server's outbound buffer grows
  const publisher = await mqttClient(url)
  const payload = Buffer.alloc(16 * 1024, 1)
  for (let i = 0; i < 2000; i++) publisher.publish('bulk', payload, { qos: 0 }) // 32 MB: more than the kernel buffers hold
  await until(() => mqttStats.brokerPauses > 0)
  t.pass('the gateway paused reading from the broker')
  await sleep(150) // several drain checks (every 20 ms) find the client still congested
  t.equal(mqttStats.brokerPauses, 1, 'the broker stays paused while the client is slow')
  socket.resume()
  await until(() => slow.packets.length === 2 + 2000)
  t.ok(slow.packets.slice(2).every((p) => p.cmd === 'publish'), 'every publish arrived once the client read again')
  t.equal(app.wsConnections.size, 2, 'both connections are still open (no 1008)')
  slow.ws.close()
  await publisher.endAsync()
})

t.test('a slow broker makes the gateway stop reading the WebSocket client, and nothing is lost', async (t) => {
  const aedes = await Aedes.createBroker()
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  let first = true
  const slowBroker: Broker = {
    description: 'a broker that reads nothing until the test opens the gate',
    connect () {
      const [ours, theirs] = duplexPair()
      if (first) gate.then(() => aedes.handle(theirs), () => {})
      else aedes.handle(theirs)
      first = false
      return ours
    },
    close: async () => await new Promise<void>((resolve) => aedes.close(() => resolve()))
  }
  const { mqttStats, url } = await gateway(t, slowBroker)
  const fast = await rawMqtt(url)
  fast.ws.send(connectPacket('fast'))
  const publish = packet({ cmd: 'publish', topic: 'flood', payload: Buffer.alloc(16 * 1024, 2), qos: 0, retain: false, dup: false })
  for (let i = 0; i < 300; i++) fast.ws.send(publish)
  await until(() => mqttStats.clientPauses > 0)
  t.pass('the gateway stopped reading the client (active: false)')
  const watcher = await mqttClient(url)
  const got = inbox(watcher)
  await watcher.subscribeAsync('flood', { qos: 0 })
  open()
  await until(() => got.length === 300)
  t.pass('all 300 publishes reached the broker once it read again')
  fast.ws.close()
  await watcher.endAsync()
})
