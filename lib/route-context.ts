/** What a connection is handed: by its route (shared), and by its upgrade (its own). */
import type { IncomingMessage } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionContext } from './context.js'
import type { JsonReader } from './json-messages.js'
import type { ResolvedConnectionOptions } from './options.js'
import type { Lease } from './registry.js'
import type { RequestSnapshot, WebSocketHandler } from './types.js'

/** What every connection of one route shares. */
export interface RouteContext {
  readonly url: string
  readonly handler: WebSocketHandler<unknown, unknown>
  readonly log: FastifyBaseLogger
  readonly registry: ConnectionRegistry
  /** ms to wait for the peer's close reply before the socket is destroyed. */
  readonly closeTimeout: number
  /** JSON routes: how text becomes `json` frames, and what bad input gets. */
  readonly json?: { readonly read: JsonReader, readonly onInvalid: 'close' | 'error-frame' } | undefined
}

/** Where connections announce themselves and keep their topics; see registry.ts. */
export interface ConnectionRegistry {
  nextId(): string
  add(connection: ConnectionContext): void
  subscribe(connection: ConnectionContext, topic: string): boolean
  unsubscribe(connection: ConnectionContext, topic: string): boolean
  /** The upgrade's admission now counts as this connection (see `remove`). */
  handOver(lease: Lease): void
  /** The connection's terminate has settled (or it had none): it no longer counts. */
  remove(connection: ConnectionContext): void
}

/** What the upgrade hands over: the state and options `init` produced, and the request snapshot. */
export interface Upgrade {
  readonly state: unknown
  readonly options: ResolvedConnectionOptions
  readonly request: RequestSnapshot
  /** The admission that counts this connection against the limits; its route and ip are the request's. */
  readonly lease: Lease
  /** The raw HTTP request, for the open channel's observers only (not kept). */
  readonly raw: IncomingMessage
}
