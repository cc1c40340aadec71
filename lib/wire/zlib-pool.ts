/**
 * zlib contexts released by `hibernate`, reset and kept for the next connection that wakes up,
 * instead of closed and rebuilt. Measured (BENCHMARKS.md): rebuilding both contexts on every
 * wake cost more than the message itself; most of it is not zlib's own setup but what a new
 * context brings (a stream object, a native handle, ≈ 300 KB of fresh memory to fault in and
 * report to V8). A context taken from here is one `reset()` away from new: no window, no
 * pending output, so no connection ever reads or writes through another one's history.
 *
 * Memory stays bounded: busy connections hold their contexts as before, and the pool keeps at
 * most POOL_LIMIT of each kind (10: ≈ 3 MB at the default window, about 260 KB per deflater and
 * 40 KB per inflater); the rest are closed. 10 is ws's own zlib concurrency: no more jobs than
 * that run at once, so a burst of wakes past it waits for zlib anyway; more would add idle memory.
 *
 * ws creates a context on demand when `_deflate` or `_inflate` is null. A connection that
 * hibernated once gets its own `_compress`/`_decompress`, which first take a context from here.
 * Contexts of different window sizes or zlib options never meet: the pool is keyed by both.
 * Pooled contexts are process-wide (≤ POOL_LIMIT per key): they outlive the connection and the
 * app that released them, as ws's own zlib concurrency limiter does.
 */
import { constants as zlib } from 'node:zlib'
import type { PermessageDeflateInternals, ZlibContext } from './ws-internals.js'

/** Contexts kept per (kind, window bits, options); beyond it, released contexts are closed. */
export const POOL_LIMIT = 10

type Kind = 'deflate' | 'inflate'

/** By the server's zlib options object (ws shares it between its connections), then kind and window bits. */
const pools = new WeakMap<object, Map<string, ZlibContext[]>>()
const defaultZlibOptions = {}
/** ws's private symbol on an inflater for its owner, found on the first inflater released. */
let ownerSymbol: symbol | undefined

/** Counters for tests and the benchmark: contexts reused, held now, and closed for want of room. */
export const zlibPoolStats = { reused: 0, pooled: 0, closed: 0 }

function windowBitsOf (owner: PermessageDeflateInternals, kind: Kind): number {
  // The server deflates with server_max_window_bits and inflates with client_max_window_bits.
  const bits = owner.params[kind === 'deflate' ? 'server_max_window_bits' : 'client_max_window_bits']
  return typeof bits === 'number' ? bits : zlib.Z_DEFAULT_WINDOWBITS
}

function poolOf (owner: PermessageDeflateInternals, kind: Kind): ZlibContext[] {
  const zlibOptions = (kind === 'deflate' ? owner._options.zlibDeflateOptions : owner._options.zlibInflateOptions) ?? defaultZlibOptions
  let byKey = pools.get(zlibOptions)
  if (byKey === undefined) pools.set(zlibOptions, byKey = new Map())
  const key = `${kind}:${windowBitsOf(owner, kind)}`
  let pool = byKey.get(key)
  if (pool === undefined) byKey.set(key, pool = [])
  return pool
}

/** Reset an idle context and keep it, or close it when the pool is full. The caller drops its reference. */
export function recycle (owner: PermessageDeflateInternals, kind: Kind, context: ZlibContext): void {
  adopt(owner)
  const pool = poolOf(owner, kind)
  if (pool.length >= POOL_LIMIT) {
    context.close()
    zlibPoolStats.closed++
    return
  }
  if (kind === 'inflate') {
    ownerSymbol ??= Object.getOwnPropertySymbols(context).find((symbol) => symbol.description === 'permessage-deflate')
    // Without the slot, a reused inflater would report to its former owner: never pool it then.
    /* c8 ignore next */
    if (ownerSymbol === undefined) return context.close()
  }
  context.reset()
  pool.push(context)
  zlibPoolStats.pooled++
}

function take (owner: PermessageDeflateInternals, kind: Kind): ZlibContext | null {
  const context = poolOf(owner, kind).pop()
  if (context === undefined) return null
  zlibPoolStats.pooled--
  // ws's inflater listeners read their owner (size limit, error handling) from this slot.
  if (kind === 'inflate') (context as unknown as Record<symbol, unknown>)[ownerSymbol!] = owner
  zlibPoolStats.reused++
  return context
}

/** Make ws take contexts from the pool before it builds new ones, on this connection from now on. */
function adopt (owner: PermessageDeflateInternals): void {
  if (owner._compress === compressFromPool) return
  owner._compress = compressFromPool
  owner._decompress = decompressFromPool
}

// Shared by every connection (no closure each); ws's own method does the work.
function compressFromPool (this: PermessageDeflateInternals, data: unknown, fin: boolean, callback: unknown): void {
  if (this._deflate === null) this._deflate = take(this, 'deflate')
  ;(Object.getPrototypeOf(this) as PermessageDeflateInternals)._compress.call(this, data, fin, callback)
}

function decompressFromPool (this: PermessageDeflateInternals, data: unknown, fin: boolean, callback: unknown): void {
  if (this._inflate === null) this._inflate = take(this, 'inflate')
  ;(Object.getPrototypeOf(this) as PermessageDeflateInternals)._decompress.call(this, data, fin, callback)
}
