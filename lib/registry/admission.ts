/**
 * Admission: the app-wide connection limits (`maxConnections`, `maxConnectionsPerIp`, a route's
 * `maxConnections`), counted from an upgrade's admission (just before the 101) to its
 * connection's terminate, and the upgrades between admission and their 101 (leases), whose
 * sockets app.close() ends when an `init` never settles.
 */
import type { FastifyBaseLogger } from 'fastify'
import { TooManyConnectionsError } from '../core/errors.js'
import { DEFAULT_IPV6_SUBNET, clientKey } from './ip-group.js'

/** App-wide connection limits (plugin options). */
export interface ConnectionLimits {
  readonly maxConnections?: number | undefined
  readonly maxConnectionsPerIp?: number | undefined
  readonly ipv6Subnet?: number | undefined
}

/**
 * One admitted upgrade: it counts against the limits until released (the upgrade failed) or
 * handed over to its connection. Its socket is ended by app.close() if it is still pending then.
 */
export interface Lease { readonly route: string, readonly ip: string, readonly socket: Destroyable, open: boolean }

/** What app.close() ends under an `init` that never settles: the socket (HTTP/1.1), the stream (HTTP/2), or, injected, the request. */
export interface Destroyable { destroy(): void }

export class Admission {
  /** Admitted (upgrading or open) connections: all, per route, per client (an IPv4 address or an IPv6 network: ip-group.ts). */
  #admitted = 0
  readonly #perRoute = new Map<string, number>()
  readonly #perIp = new Map<string, number>()
  readonly #limits: ConnectionLimits
  readonly #log: FastifyBaseLogger
  /** Upgrades between admission and their 101 or refusal (an `init` running). */
  readonly #upgrading = new Set<Lease>()
  /** The timer that ends the sockets of upgrades still pending when it fires (see endPendingAfter). */
  #pendingUpgradesTimer: NodeJS.Timeout | undefined

  constructor (limits: ConnectionLimits, log: FastifyBaseLogger) {
    this.#limits = limits
    this.#log = log
  }

  /**
   * Count an upgrade from its admission (just before the 101) to its terminate, or refuse it
   * (TooManyConnectionsError, 503) when a limit is reached. Counting from admission, not from
   * the 101, keeps the limits exact when many upgrades run their `init` at once.
   */
  admit (route: string, ip: string, routeLimit: number | undefined, socket: Destroyable): Lease {
    const { maxConnections, maxConnectionsPerIp } = this.#limits
    if (maxConnections !== undefined && this.#admitted >= maxConnections) {
      throw new TooManyConnectionsError(`the app holds its maximum of ${maxConnections}`)
    }
    const onRoute = this.#perRoute.get(route) ?? 0
    if (routeLimit !== undefined && onRoute >= routeLimit) {
      throw new TooManyConnectionsError(`${route} holds its maximum of ${routeLimit}`)
    }
    const client = this.#clientKey(ip)
    const fromIp = this.#perIp.get(client) ?? 0
    if (maxConnectionsPerIp !== undefined && fromIp >= maxConnectionsPerIp) {
      throw new TooManyConnectionsError(`this client (${client === ip ? ip : `${ip}, counted as ${client}`}) holds its maximum of ${maxConnectionsPerIp}`)
    }
    this.#admitted++
    this.#perRoute.set(route, onRoute + 1)
    this.#perIp.set(client, fromIp + 1)
    const lease = { route, ip, socket, open: true }
    this.#upgrading.add(lease)
    return lease
  }

  /** The upgrade failed: it no longer counts. Idempotent. */
  release (lease: Lease): void {
    if (!lease.open) return
    lease.open = false
    this.uncount(lease.route, lease.ip)
    this.#settled(lease)
  }

  /**
   * The upgrade became a connection: from now on the connection counts (its request's routeUrl
   * and ip are the lease's), until `uncount`. The lease object is not kept (−56 B per connection).
   */
  handOver (lease: Lease): void {
    lease.open = false
    this.#settled(lease)
  }

  /** A connection that counted is gone. */
  uncount (route: string, ip: string): void {
    this.#admitted--
    decrement(this.#perRoute, route)
    decrement(this.#perIp, this.#clientKey(ip))
  }

  countOfRoute (url: string): number {
    return this.#perRoute.get(url) ?? 0
  }

  /**
   * The first drain began: the upgrades still pending `ms` from now have their socket destroyed,
   * so that an `init` that never settles does not hold app.close() (the HTTP server waits for
   * that socket).
   */
  endPendingAfter (ms: number): void {
    if (this.#upgrading.size !== 0) this.#pendingUpgradesTimer = setTimeout(Admission.#endPendingUpgrades, ms, this)
  }

  #settled (lease: Lease): void {
    this.#upgrading.delete(lease)
    if (this.#upgrading.size === 0) clearTimeout(this.#pendingUpgradesTimer)
  }

  #clientKey (ip: string): string {
    return clientKey(ip, this.#limits.ipv6Subnet ?? DEFAULT_IPV6_SUBNET)
  }

  /** A timer's callback: nothing may throw out of it. */
  static #endPendingUpgrades (self: Admission): void {
    for (const lease of self.#upgrading) {
      try {
        lease.socket.destroy()
        /* c8 ignore start -- a socket's, stream's or request's destroy() does not throw; a timer must not let one through */
      } catch (error) {
        self.#log.error({ err: error }, 'WebSocket upgrade could not be ended at close')
      }
      /* c8 ignore stop */
    }
  }
}

function decrement (counts: Map<string, number>, key: string): void {
  const left = counts.get(key)! - 1
  if (left === 0) counts.delete(key)
  else counts.set(key, left)
}
