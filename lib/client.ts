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

/** What the client needs of a WebSocket: the browser's, Node 22's global one, or `ws`'s. */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number }) => void) | null
  onerror: ((event: unknown) => void) | null
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

export function resumingSocket<Message = Record<string, unknown>> (options: ResumingSocketOptions<Message>): ResumingSocket {
  const given = options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket
  if (given === undefined) throw new TypeError('resumingSocket: no WebSocket here; pass options.WebSocket (e.g. the one of the ws package)')
  const Socket: WebSocketConstructor = given
  const parse = options.parse ?? ((data: string) => JSON.parse(data) as Message)
  const positionOf = options.positionOf ?? ((message: Message) => (message as { pos?: unknown } | null)?.pos as string | undefined)
  const initialMs = options.backoff?.initialMs ?? 500
  const maxMs = options.backoff?.maxMs ?? 10_000
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
    socket.onmessage = (event) => {
      if (typeof event.data !== 'string') return
      const message = parse(event.data)
      const position = positionOf(message)
      if (typeof position === 'string') since = position
      options.onMessage(message)
    }
    socket.onerror = () => {} // the close follows
    socket.onclose = (event) => {
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
