/**
 * What the server's side says of the toolkit's clients: which connection a client opened, and
 * the reason its `terminate` was called with, from the plugin's diagnostics channels (open,
 * close). An injected client is known by its request object; a real-port client learns its
 * local port only with the 101, after the server opened, so connections are remembered by port
 * only while such a client waits for its 101, and only until claimed or closed.
 */
import diagnostics from 'node:diagnostics_channel'
import type { IncomingMessage } from 'node:http'
import type { TerminateReason, WebSocketContext } from '../core/types.js'

const byRequest = new WeakMap<object, (ctx: WebSocketContext) => void>()
/** By the client's port ('54321'), over HTTP/2 with its stream's id ('54321/3'). */
const openedByPort = new Map<string, WebSocketContext>()
const portOf = new WeakMap<WebSocketContext, string>()
let realClientsConnecting = 0
const waiting = new WeakMap<WebSocketContext, (reason: TerminateReason) => void>()
const reasons = new WeakMap<WebSocketContext, TerminateReason>()
diagnostics.subscribe('fastify-ws-handlers:open', (message) => {
  const { ctx, request } = message as { ctx: WebSocketContext, request: IncomingMessage & { stream?: { id?: number } } }
  const claim = byRequest.get(request)
  const remotePort = request.socket?.remotePort
  const port = remotePort === undefined ? undefined : request.stream?.id === undefined ? String(remotePort) : `${remotePort}/${request.stream.id}`
  if (claim !== undefined) claim(ctx)
  else if (realClientsConnecting > 0 && port !== undefined) {
    openedByPort.set(port, ctx)
    portOf.set(ctx, port)
  }
})
diagnostics.subscribe('fastify-ws-handlers:close', (message) => {
  const { ctx, reason } = message as { ctx: WebSocketContext, reason: TerminateReason }
  const port = portOf.get(ctx)
  if (port !== undefined && openedByPort.get(port) === ctx) openedByPort.delete(port)
  reasons.set(ctx, reason)
  waiting.get(ctx)?.(reason)
})

/** How many connections the toolkit remembers by port (for the test that nothing else is held). */
export function rememberedConnections (): number {
  return openedByPort.size
}

/** A client's handle on its server connection: tell it the connection, and wait for the reason. */
export interface TerminateWatch { opened: (ctx: WebSocketContext) => void, terminated: Promise<TerminateReason> }

function watchTerminate (): TerminateWatch {
  let resolve!: (reason: TerminateReason) => void
  const terminated = new Promise<TerminateReason>((_resolve) => { resolve = _resolve })
  return {
    opened: (ctx) => {
      const reason = reasons.get(ctx)
      // Closed before this client read its 101 (a handler that stops at once): a race, not tested.
      /* c8 ignore next */
      if (reason !== undefined) resolve(reason)
      else waiting.set(ctx, resolve)
    },
    terminated
  }
}

/** For an injected client: its request object names its connection. */
export function watchInjected (request: object): TerminateWatch {
  const watch = watchTerminate()
  byRequest.set(request, watch.opened)
  return watch
}

/** For a real-port client, while it waits for its 101: its local port names its connection. */
export function watchByPort (): TerminateWatch & { claim: (port: string) => void, done: () => void } {
  const watch = watchTerminate()
  realClientsConnecting++
  return {
    ...watch,
    claim (port) {
      const ctx = openedByPort.get(port)
      openedByPort.delete(port)
      if (ctx !== undefined) watch.opened(ctx)
    },
    done () {
      realClientsConnecting--
    }
  }
}
