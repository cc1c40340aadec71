/**
 * `fastify-ws-handlers/client`: a WebSocket for browsers (and Node) that comes back, and asks
 * for what it missed. After any close but its own it reconnects, waiting a random time up to an
 * exponential backoff (full jitter: the clients of a drained instance spread out), to the URL
 * `url(since)` gives for the last position it saw, so that a server that follows a topic with
 * history (`ctx.subscribe(topic, { since })`) replays what was published meanwhile.
 *
 * No dependency and no Node API: it runs in a browser as it is, and in Node with a WebSocket
 * constructor (Node 22's global, or `ws`'s).
 */

/**
 * What the client needs of a WebSocket: the browser's, Node 22's global one, or `ws`'s. Its
 * handlers take `never`: the client sets them, and each implementation's own event types
 * (ws's `MessageEvent`, the DOM's) fit without a cast.
 */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: never) => void) | null
  onmessage: ((event: never) => void) | null
  onclose: ((event: never) => void) | null
  onerror: ((event: never) => void) | null
  send(data: string): void
  close(code?: number): void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

export interface ResumingSocketOptions<Message> {
  /** The URL to connect to, given the last position seen ('' before any): `(since) => '/feed' + (since && '?since=' + since)`. */
  url: (since: string) => string
  /** Each message, parsed. */
  onMessage: (message: Message) => void
  /** 'online' once (re)connected; 'reconnecting' after a close, with its code. */
  onStatus?: (status: 'online' | 'reconnecting', code?: number) => void
  /** The position a message carries, to come back from. Default: its `pos` field. */
  positionOf?: (message: Message) => string | undefined
  /** How a text frame becomes a message. Default: `JSON.parse`. */
  parse?: (data: string) => Message
  /** A text frame that `parse` refused: it is skipped (it has no position), and told here. */
  onParseError?: (error: unknown, data: string) => void
  /** The first backoff's bound and the largest, in ms. Default 500 and 10,000. */
  backoff?: { initialMs?: number, maxMs?: number }
  /** Default: the global `WebSocket`. */
  WebSocket?: WebSocketConstructor
}

export interface ResumingSocket {
  /** Send on the current connection; false (nothing sent) while it is not open. */
  send(data: string): boolean
  /** Close for good (1000): no reconnect. */
  close(): void
  /** The last position seen ('' before any). */
  readonly since: string
}

const OPEN = 1

/**
 * A Node or browser timer fires a delay above 2^31 − 1 ms after 1 ms: refused, never clamped.
 * (core/options.ts has the same limit; this entry imports nothing, so that it runs in a browser.)
 */
const MAX_TIMER_MS = 2_147_483_647

function backoffMs (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!(Number.isFinite(value) && value >= 0 && value <= MAX_TIMER_MS)) throw new RangeError(`resumingSocket: backoff.${name} must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${String(value)}`)
  return value
}

// A position as it travels outside the server: `<epoch>:<offset>` in a message for the client to
// keep, and back in the reconnect URL's `?since=`. Here, in the client's one file, so that a page
// has them too; the server's entry point exports the same functions.

/** `<epoch>:<offset>`: what a client keeps and sends back as `?since=`. */
export function formatPosition (position: { readonly epoch: string, readonly offset: number }): string {
  return `${position.epoch}:${position.offset}`
}

/**
 * A position from `formatPosition`'s text (the last `:` splits it: an epoch may hold one), or
 * undefined for anything else; never throws, whatever a client sends. A stale or forged position
 * that parses is the history's to judge: the subscriber is told `resync` (or recovers).
 */
export function parsePosition (text: unknown): { epoch: string, offset: number } | undefined {
  if (typeof text !== 'string' || text.length > 100) return undefined
  const colon = text.lastIndexOf(':')
  const offset = text.slice(colon + 1)
  if (colon === -1 || !/^\d{1,16}$/.test(offset) || !Number.isSafeInteger(Number(offset))) return undefined
  return { epoch: text.slice(0, colon), offset: Number(offset) }
}

export function resumingSocket<Message = Record<string, unknown>> (options: ResumingSocketOptions<Message>): ResumingSocket {
  const given = options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket
  if (given === undefined) throw new TypeError('resumingSocket: no WebSocket here; pass options.WebSocket (e.g. the one of the ws package)')
  const Socket: WebSocketConstructor = given
  const parse = options.parse ?? ((data: string) => JSON.parse(data) as Message)
  const positionOf = options.positionOf ?? ((message: Message) => (message as { pos?: unknown } | null)?.pos as string | undefined)
  const initialMs = backoffMs(options.backoff?.initialMs, 500, 'initialMs')
  const maxMs = backoffMs(options.backoff?.maxMs, 10_000, 'maxMs')
  let socket: WebSocketLike
  let attempt = 0
  let since = ''
  let stopped = false
  let retry: ReturnType<typeof setTimeout> | undefined

  function open (): void {
    retry = undefined
    socket = new Socket(options.url(since))
    socket.onopen = () => {
      attempt = 0
      options.onStatus?.('online')
    }
    socket.onmessage = (event: { data: unknown }) => {
      if (typeof event.data !== 'string') return
      let message: Message
      try {
        message = parse(event.data)
      } catch (error) { // one bad frame must not throw out of ws's listener (a Node process would crash)
        options.onParseError?.(error, event.data)
        return
      }
      const position = positionOf(message)
      if (typeof position === 'string') since = position
      options.onMessage(message)
    }
    socket.onerror = () => {} // the close follows
    socket.onclose = (event: { code: number }) => {
      if (stopped) return
      options.onStatus?.('reconnecting', event.code)
      // Full jitter: a random wait up to the backoff, so that reconnects do not come in waves.
      retry = setTimeout(open, Math.random() * Math.min(initialMs * 2 ** attempt++, maxMs))
    }
  }
  open()

  return {
    send (data) {
      if (socket.readyState !== OPEN) return false
      socket.send(data)
      return true
    },
    close () {
      stopped = true
      clearTimeout(retry)
      socket.close(1000)
    },
    get since () {
      return since
    }
  }
}
