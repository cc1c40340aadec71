/**
 * WebSockets over HTTP/2 (RFC 8441, extended CONNECT), on Fastify's http2 server: the same
 * routes, hooks, `init`, limits and lifecycle as an HTTP/1.1 upgrade.
 *
 * The server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL. Node hands a CONNECT stream to the
 * server's 'connect' event, never to Fastify's router: here it becomes a GET for routing (the
 * request keeps `:protocol`), with the handshake headers a WebSocket route checks, so that every
 * hook and `init` run as for an upgrade and a refusal is a real HTTP/2 response. Once `init`
 * accepted, ws's own `handleUpgrade` runs on the stream (ws frames over an Http2Stream as over a
 * socket): its HTTP/1.1 "101" head is turned into the stream's `:status 200` response, with the
 * subprotocol and the extensions it negotiated. HTTP/1.1 upgrades keep working on the same server.
 */
import { randomBytes } from 'node:crypto'
import { constants } from 'node:http2'
import type { Http2SecureServer, Http2Server, Http2ServerRequest, Http2ServerResponse, Http2Session, ServerHttp2Stream } from 'node:http2'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { shuttingDownAnswer } from './refusals.js'

/**
 * HTTP/2 flow control sized for WebSockets. With Node's 64 KB windows (per stream and per
 * session) a 1 MB message crosses in sixteen rounds of WINDOW_UPDATE, at 0.4× the rate of
 * HTTP/1.1 (BENCHMARKS.md); these let it through at once. They bound what a peer may send that
 * is not read yet, under Node's `maxSessionMemory` (10 MB by default). The stream window is a
 * server setting: the app's other HTTP/2 requests get it too.
 */
export const H2_STREAM_WINDOW = 4 << 20
export const H2_SESSION_WINDOW = 8 << 20

/** The stream of a WebSocket CONNECT, on the raw request while it is routed. */
export const kH2Stream = Symbol('fastify-ws-handlers.h2-stream')

export type H2Request = Http2ServerRequest & { [kH2Stream]?: ServerHttp2Stream }

const peerOf = (socket: { remoteAddress?: string | undefined, remotePort?: number | undefined }): string => `${String(socket.remoteAddress)}:${String(socket.remotePort)}`

/** Whether Fastify was started with `http2: true`. */
export function isHttp2Server (server: unknown): server is Http2Server | Http2SecureServer {
  return typeof (server as { updateSettings?: unknown }).updateSettings === 'function'
}

/**
 * Serve extended CONNECT on `fastify`'s http2 server. Returns what app.close() needs: the
 * sessions that carried WebSockets, closed once their WebSockets are (Node's `server.close()`
 * leaves idle sessions open until their timeout), and destroyed if still open `timeoutMs` later.
 */
export function serveExtendedConnect (fastify: FastifyInstance, server: Http2Server | Http2SecureServer, draining: () => boolean): { closeSessions: (timeoutMs: number) => void } {
  server.updateSettings({ enableConnectProtocol: true, initialWindowSize: H2_STREAM_WINDOW })
  /** The sessions that carried WebSockets, with their peer's address (`host:port`). */
  const sessions = new Map<Http2Session, string>()
  /**
   * Every connection's TCP socket, by its peer's address: what app.close() destroys when a peer
   * stops reading. (A closed session only ends its socket, and waits for its writes to drain,
   * forever if the peer reads nothing; by then its `socket` is unbound.)
   */
  const sockets = new Map<string, Socket>()
  server.on('connection', function track (socket: Socket) {
    const peer = peerOf(socket)
    sockets.set(peer, socket)
    socket.once('close', () => { if (sockets.get(peer) === socket) sockets.delete(peer) })
  })
  // A server event: nothing may throw out of it (a process crash). A failure resets that stream.
  server.on('connect', function onConnect (request: Http2ServerRequest | IncomingMessage, answer: Http2ServerResponse | Duplex) {
    try {
      acceptConnect(request, answer)
    } catch (error) {
      fastify.log.error({ err: error }, 'WebSocket over HTTP/2: the CONNECT failed')
      ;(request as Http2ServerRequest).stream?.close(constants.NGHTTP2_INTERNAL_ERROR)
    }
  })
  function acceptConnect (request: Http2ServerRequest | IncomingMessage, answer: Http2ServerResponse | Duplex): void {
    if (request.httpVersionMajor !== 2) { // an HTTP/1.1 CONNECT (allowHTTP1): not a WebSocket
      (answer as Duplex).end('HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      return
    }
    const h2 = request as H2Request
    const response = answer as Http2ServerResponse
    if (draining()) { // Fastify's router would answer app.close()'s generic 503: the drain's, as over HTTP/1.1
      const { headers, body } = shuttingDownAnswer()
      response.writeHead(503, headers)
      response.end(body)
      return
    }
    if (h2.headers[':protocol'] !== 'websocket') {
      response.writeHead(501, { 'content-type': 'application/json' })
      response.end(JSON.stringify({ statusCode: 501, error: 'Not Implemented', message: `extended CONNECT for ${String(h2.headers[':protocol'] ?? 'no protocol')}: only websocket` }))
      return
    }
    const session = h2.stream.session as Http2Session // set while the stream is open, as it is when its headers arrive
    if (!sessions.has(session)) {
      sessions.set(session, peerOf(session.socket))
      session.once('close', () => sessions.delete(session))
      session.setLocalWindowSize(H2_SESSION_WINDOW) // the session that carries WebSockets
    }
    // Routed as the GET of an upgrade (RFC 8441 §5: the key and the Upgrade headers do not exist over h2).
    ;(h2 as { method: string }).method = 'GET' // a setter of Http2ServerRequest (typed read-only)
    Object.assign(h2.headers, { upgrade: 'websocket', connection: 'upgrade', 'sec-websocket-key': randomBytes(16).toString('base64') })
    h2[kH2Stream] = h2.stream
    fastify.routing(h2 as unknown as IncomingMessage, response as never)
  }
  return {
    closeSessions (timeoutMs: number) {
      for (const [session, peer] of sessions) {
        session.close()
        // A peer that stops reading (no FIN) leaves the session's writes pending, its socket
        // waiting for them forever, and app.close() with it: after the bound, it is destroyed.
        const socket = sockets.get(peer)
        /* c8 ignore next -- every connection of the server is tracked from its 'connection' event */
        if (socket === undefined) continue
        const bound = setTimeout(() => { socket.destroy() }, timeoutMs)
        socket.once('close', () => { clearTimeout(bound) })
      }
    }
  }
}

/**
 * The stream, made ready for ws's `handleUpgrade`: the head ws writes first ("HTTP/1.1 101 …" with
 * its Sec-WebSocket-Protocol and -Extensions, or an error status) becomes the stream's response.
 */
export function answeringStream (stream: ServerHttp2Stream): ServerHttp2Stream {
  const shim = stream as ServerHttp2Stream & { write: (head: string) => boolean }
  shim.write = function respond (head: string): boolean {
    delete (shim as { write?: unknown }).write // the prototype's write from now on: WebSocket frames
    const [statusLine = '', ...lines] = String(head).split('\r\n')
    const status = Number(statusLine.slice('HTTP/1.1 '.length, 'HTTP/1.1 '.length + 3)) // ws writes "HTTP/1.1 NNN …"
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(':')
      if (colon === -1) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      if (name === 'sec-websocket-protocol' || name === 'sec-websocket-extensions') headers[name] = line.slice(colon + 1).trim()
    }
    if (status === 101) stream.respond({ ':status': 200, ...headers })
    else stream.respond({ ':status': status }, { endStream: true })
    return true
  }
  return shim
}

/**
 * Once the WebSocket owns the stream: let go of the compat layer's request and response objects
 * that Node keeps on it (its private `request` and `response` symbols), which nothing reads any
 * more (≈ 3 KB per WebSocket). Node's own stream listeners check for their absence; the two that
 * do not ('timeout', 'wantTrailers': neither can fire on a WebSocket's stream, whose timeout ws
 * disables and which sends no trailers) are removed with them.
 */
export function releaseCompatObjects (stream: ServerHttp2Stream): void {
  const held = stream as unknown as Record<symbol, unknown>
  for (const symbol of Object.getOwnPropertySymbols(stream)) {
    if (symbol.description === 'request' || symbol.description === 'response') held[symbol] = undefined
  }
  stream.removeAllListeners('timeout')
  stream.removeAllListeners('wantTrailers')
}
