/**
 * The load generator, in its own process: `node load.js '<json task>'`, started by run.ts.
 * Tasks: `echo` (pipelined round trips, throughput and latency), `open` (hold N idle
 * connections until told to close), `churn` (connect/close cycles), `fanout`, `relay`, `flood`
 * (one raw socket writing as fast as TCP takes it). Results go back over IPC.
 */
import { once } from 'node:events'
import http2 from 'node:http2'
import net from 'node:net'
import WebSocket from 'ws'

export type Task =
  | { type: 'echo', url: string, connections: number, inFlight: number, size: number, binary: boolean, warmupMs: number, durationMs: number, compress?: boolean, gapMs?: number, h2?: boolean }
  | { type: 'open', url: string, connections: number, compress: boolean, h2?: boolean }
  | { type: 'churn', url: string, cycles: number, concurrency: number }
  | { type: 'fanout', url: string, connections: number }
  | { type: 'relay', publishUrl: string, subscribeUrl: string, rate: number, durationMs: number, warmupMs: number }
  | { type: 'flood', url: string }
  | { type: 'scale', url: string, connections: number, localAddress: string }

export interface EchoResult { messagesPerSecond: number, p50Ms: number, p99Ms: number, totalMessages: number }
export interface ChurnResult { cyclesPerSecond: number }
export interface RelayResult { sent: number, delivered: number, messagesPerSecond: number, p50Ms: number, p99Ms: number }

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes. */
export const now = (): number => performance.timeOrigin + performance.now()

const task = JSON.parse(process.argv[2]!) as Task

async function open (url: string, compress = false, localAddress?: string): Promise<WebSocket> {
  if (url.startsWith('h2:')) return await openOverHttp2(url)
  const ws = new WebSocket(url, { perMessageDeflate: compress ? { threshold: 0 } : false, localAddress })
  await once(ws, 'open')
  return ws
}

/** One cleartext HTTP/2 session per server, shared by every WebSocket of this process (as a browser tab's). */
const sessions = new Map<string, http2.ClientHttp2Session>()

/** `h2://host:port/path`: a WebSocket on an extended CONNECT stream (RFC 8441) of the shared session. */
async function openOverHttp2 (url: string): Promise<WebSocket> {
  const { host, pathname, searchParams } = new URL(url)
  let session = sessions.get(host)
  if (session === undefined) {
    // ?client=browser: the windows Chrome opens with (6 MiB per stream, 15 MiB for the
    // session), for the echo's way back; without it, Node's defaults (64 KB each).
    const browser = searchParams.get('client') === 'browser'
    session = http2.connect(`http://${host}`, browser ? { settings: { initialWindowSize: 6 << 20 } } : {})
    sessions.set(host, session)
    await once(session, 'remoteSettings')
    if (browser) session.setLocalWindowSize(15 << 20)
  }
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':authority': host, ':path': pathname, 'sec-websocket-version': '13' }, { endStream: false })
  await once(stream, 'response')
  const ws = new WebSocket(null as unknown as string, undefined, { autoPong: true }) as WebSocket & { _isServer: boolean, setSocket: (socket: unknown, head: Buffer, options: object) => void }
  ws._isServer = false
  ws.setSocket(stream, Buffer.alloc(0), { maxPayload: 0 })
  return ws
}

/** Open `count` connections, `batch` at a time (a 10,000-connection burst overflows the accept queue). */
async function openMany (url: string, count: number, compress: boolean, batch = 250, localAddress?: string): Promise<WebSocket[]> {
  const sockets: WebSocket[] = []
  while (sockets.length < count) {
    const size = Math.min(batch, count - sockets.length)
    sockets.push(...await Promise.all(Array.from({ length: size }, async () => await open(url, compress, localAddress))))
  }
  return sockets
}

async function echo (t: Extract<Task, { type: 'echo' }>): Promise<EchoResult> {
  const payload = t.binary ? Buffer.alloc(t.size, 7) : 'x'.repeat(t.size)
  const sockets = await openMany(t.url, t.connections, t.compress ?? false)
  const latencies: number[] = []
  let completed = 0
  let total = 0
  let measuring = false
  let running = true
  for (const ws of sockets) {
    const sentAt: number[] = [] // echoes come back in order on one connection
    ws.on('message', () => {
      total++
      const started = sentAt.shift()!
      if (measuring) {
        completed++
        latencies.push(performance.now() - started)
      }
      if (!running) return
      const next = (): void => {
        sentAt.push(performance.now())
        ws.send(payload)
      }
      // A gap leaves the connection idle between messages (long enough for hibernate to act).
      if (t.gapMs === undefined) next()
      else setTimeout(next, t.gapMs)
    })
    for (let i = 0; i < t.inFlight; i++) {
      sentAt.push(performance.now())
      ws.send(payload)
    }
  }
  await new Promise((resolve) => setTimeout(resolve, t.warmupMs))
  measuring = true
  const started = performance.now()
  await new Promise((resolve) => setTimeout(resolve, t.durationMs))
  measuring = false
  const elapsed = performance.now() - started
  running = false
  for (const ws of sockets) ws.terminate()
  latencies.sort((a, b) => a - b)
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN
  return { messagesPerSecond: completed / (elapsed / 1000), p50Ms: at(0.5), p99Ms: at(0.99), totalMessages: total }
}

async function hold (t: Extract<Task, { type: 'open' }>): Promise<void> {
  const started = performance.now()
  const sockets = await openMany(t.url, t.connections, t.compress)
  const openMs = performance.now() - started
  if (t.compress) {
    // One 200-byte message each way, so that both zlib contexts exist (the worst case).
    const message = JSON.stringify({ text: 'x'.repeat(180) })
    await Promise.all(sockets.map(async (ws) => {
      const echoed = once(ws, 'message')
      ws.send(message)
      await echoed
    }))
  }
  process.send!({ ready: true, openMs })
  await once(process, 'message')
  await Promise.all(sockets.map(async (ws) => {
    const closed = once(ws, 'close')
    ws.close()
    await closed
  }))
}

async function churn (t: Extract<Task, { type: 'churn' }>): Promise<ChurnResult> {
  let next = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: t.concurrency }, async () => {
    while (next++ < t.cycles) {
      const ws = await open(t.url)
      const closed = once(ws, 'close')
      ws.close()
      await closed
    }
  }))
  return { cyclesPerSecond: t.cycles / ((performance.now() - started) / 1000) }
}

/**
 * Hold `connections` subscribers; for each 'expect' from run.ts, report when the last of them
 * has received one frame (wall clock, so that run.ts can compare it with the server's start).
 */
async function fanout (t: Extract<Task, { type: 'fanout' }>): Promise<void> {
  const sockets = await openMany(t.url, t.connections, false)
  let received = 0
  for (const ws of sockets) {
    ws.on('message', () => {
      if (++received === sockets.length) process.send!({ lastAt: now() })
    })
  }
  process.send!({ ready: true })
  process.on('message', (message: string) => {
    if (message === 'expect') {
      received = 0
      process.send!({ expecting: true })
      return
    }
    for (const ws of sockets) ws.terminate()
    process.disconnect()
  })
}

/** Send at `rate` messages/s to one instance; time each one's arrival through another. */
async function relay (t: Extract<Task, { type: 'relay' }>): Promise<RelayResult> {
  const subscriber = await open(t.subscribeUrl)
  const publisher = await open(t.publishUrl)
  await new Promise((resolve) => setTimeout(resolve, 200)) // both instances subscribed to the topic's channel
  let from = Infinity // only messages sent inside the measured window count
  let to = Infinity
  let sent = 0
  const latencies: number[] = []
  subscriber.on('message', (data: Buffer) => {
    const stamp = Number(data.toString())
    if (stamp >= from && stamp < to) latencies.push(performance.now() - stamp)
  })
  // Evenly spaced (what is due every millisecond), not in bursts that would queue behind each other.
  const begin = performance.now()
  let due = 0
  const pace = setInterval(() => {
    for (const target = Math.floor((performance.now() - begin) * t.rate / 1000); due < target; due++) {
      const stamp = performance.now()
      if (stamp >= from && stamp < to) sent++
      publisher.send(String(stamp))
    }
  }, 1)
  await new Promise((resolve) => setTimeout(resolve, t.warmupMs))
  from = performance.now()
  await new Promise((resolve) => setTimeout(resolve, t.durationMs))
  to = performance.now()
  await new Promise((resolve) => setTimeout(resolve, 500)) // the last ones in flight
  clearInterval(pace)
  subscriber.terminate()
  publisher.terminate()
  latencies.sort((a, b) => a - b)
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN
  return { sent, delivered: latencies.length, messagesPerSecond: latencies.length / ((to - from) / 1000), p50Ms: at(0.5), p99Ms: at(0.99) }
}

/**
 * One raw socket that upgrades, then writes small masked text frames ("f…", which the server
 * does not answer) as fast as TCP takes them, until told to stop: the client that a rate limit
 * must hold back. It never reads, so a paused server holds it through TCP's flow control.
 */
async function flood (t: Extract<Task, { type: 'flood' }>): Promise<void> {
  const { hostname, port, pathname } = new URL(t.url)
  const socket = net.connect(Number(port), hostname)
  await once(socket, 'connect')
  socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  const [head] = await once(socket, 'data') as [Buffer]
  if (!head.toString().startsWith('HTTP/1.1 101')) throw new Error(`flood: not upgraded: ${head.toString().split('\r\n')[0]!}`)
  socket.on('data', () => {}) // replies, pings: read and dropped
  // 512 frames of 8 bytes ("flood…"), masked with a zero key: 14 bytes each.
  const frame = Buffer.from([0x81, 0x88, 0, 0, 0, 0, ...Buffer.from('flooding')])
  const batch = Buffer.concat(Array.from({ length: 512 }, () => frame))
  let running = true
  const write = (): void => {
    for (;;) if (!running || !socket.write(batch)) return // until the kernel's buffer is full
  }
  socket.on('drain', write)
  socket.on('error', () => { running = false })
  write()
  process.send!({ ready: true })
  await once(process, 'message')
  running = false
  socket.destroy()
}

/**
 * Hold `connections` idle connections from one source address (ws answers the server's pings);
 * report on 'report' the pings and messages received and the close codes seen, until told 'exit'.
 */
async function scale (t: Extract<Task, { type: 'scale' }>): Promise<void> {
  const sockets = await openMany(t.url, t.connections, false, 500, t.localAddress)
  const seen = { pings: 0, messages: 0, closes: {} as Record<number, number> }
  for (const ws of sockets) {
    ws.on('ping', () => { seen.pings++ })
    ws.on('message', () => { seen.messages++ })
    ws.on('close', (code: number) => { seen.closes[code] = (seen.closes[code] ?? 0) + 1 })
  }
  process.send!({ ready: true })
  for (;;) {
    const [message] = await once(process, 'message') as [string]
    if (message === 'exit') break
    process.send!(seen)
  }
  for (const ws of sockets) ws.terminate()
}

if (task.type === 'fanout') {
  await fanout(task)
} else if (task.type === 'scale') {
  await scale(task)
  process.disconnect()
} else if (task.type === 'flood') {
  await flood(task)
  process.disconnect()
} else {
  const result = task.type === 'echo'
    ? await echo(task)
    : task.type === 'churn'
      ? await churn(task)
      : task.type === 'relay' ? await relay(task) : await hold(task)
  for (const session of sessions.values()) session.destroy() // an h2 session would keep the process alive
  process.send!({ result })
  process.disconnect()
}
