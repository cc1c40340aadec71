/**
 * The drain of a rolling deploy: connections are closed in batches spread over a window, in a
 * random order and each batch at a random moment within its slot (jitter), so that the clients
 * of one instance do not all reconnect to the others at the same moment. Up to one batch of
 * connections (500 by default: tests, small apps) close at once.
 */
import type { DrainOptions } from '../core/types.js'

export const DRAIN_DEFAULTS = { batchSize: 500, batchIntervalMs: 200, maxWindowMs: 10_000 } as const

/** Close every one of `connections` with `close`, batch by batch; resolves once the last batch is closed, or when `stop` settles first. */
export async function drainInBatches<C> (connections: C[], close: (connection: C) => void, options: DrainOptions, stop: Promise<void>): Promise<void> {
  const batchSize = options.batchSize ?? DRAIN_DEFAULTS.batchSize
  const batches = Math.ceil(connections.length / batchSize)
  if (batches <= 1) {
    for (const connection of connections) close(connection)
    return
  }
  shuffle(connections)
  // The slots: `batchIntervalMs` apart, unless that would take longer than `maxWindowMs`.
  const slot = Math.min(options.batchIntervalMs ?? DRAIN_DEFAULTS.batchIntervalMs, (options.maxWindowMs ?? DRAIN_DEFAULTS.maxWindowMs) / batches)
  const timers: NodeJS.Timeout[] = []
  // The first batch goes at once; each later one at a random moment of its own slot.
  for (const connection of connections.slice(0, batchSize)) close(connection)
  const closed = new Promise<void>((resolve) => {
    let left = batches - 1
    for (let batch = 1; batch < batches; batch++) {
      const members = connections.slice(batch * batchSize, (batch + 1) * batchSize)
      timers.push(setTimeout(() => {
        for (const connection of members) close(connection)
        if (--left === 0) resolve()
      }, (batch + Math.random()) * slot))
    }
  })
  await Promise.race([closed, stop])
  for (const timer of timers) clearTimeout(timer)
}

function shuffle<T> (items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const item = items[i]!
    items[i] = items[j]!
    items[j] = item
  }
}
