/**
 * Work that must not run on the caller's stack: a message posted to a connection that is idle
 * (`publish`, `post` by id, `ctx.post` from another connection) and the end of a connection that
 * no callback is running for (an overflow close in a broadcast, app.close()). It runs in one
 * microtask, in the order it was queued, across every connection: a publish to 10,000
 * subscribers queues 10,000 entries and they run after the publish loop has returned, so no
 * handler and no `terminate` ever runs inside a fan-out loop (nor can re-enter or reorder it).
 * Entries queued while the queue runs (a publish from `info`) run in the same turn, after those
 * queued before them: each connection sees messages in the order they were published.
 */

/** The entry point a queued entry calls; it must not throw (the connection guards its own work). */
export const kRun = Symbol('fastify-ws-handlers.run')

export interface Runnable {
  [kRun](payload: unknown): void
}

/** (target, payload) pairs: no wrapper object per entry. */
const queue: unknown[] = []
let scheduled = false

export function runSoon (target: Runnable, payload: unknown): void {
  queue.push(target, payload)
  if (scheduled) return
  scheduled = true
  queueMicrotask(runQueued)
}

function runQueued (): void {
  for (let i = 0; i < queue.length; i += 2) {
    const target = queue[i] as Runnable
    const payload = queue[i + 1]
    queue[i] = queue[i + 1] = undefined // let them go as soon as they ran
    target[kRun](payload)
  }
  queue.length = 0
  scheduled = false
}
