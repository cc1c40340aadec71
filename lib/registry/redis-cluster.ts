/**
 * What the Redis adapter watches on a Redis Cluster, beyond the Cluster's own events: a Cluster
 * object emits `ready` once, and reports nothing of one master going away and coming back, of a
 * shard's subscriber connection being cut, or of a slot moving to another master. So:
 *
 * - The publishing Cluster keeps a connection to every master, opened before the adapter starts
 *   and after each slots refresh that brings a master (ioredis opens one on first use otherwise,
 *   and rejects what is sent while it is still connecting, then retries it 100 ms later, behind
 *   newer commands: one publisher's publications to a topic would arrive out of order). One
 *   that closes is an outage; ioredis drops it, and the next slots refresh brings the master
 *   back (or its promoted replica), connected at once; the cluster is healthy again when every
 *   master that holds slots is connected. (ioredis's `clusterNodeRetryStrategy` is left off: a
 *   node that retries for ever keeps the commands in flight to a dead master pending.)
 * - The subscribing Cluster's shard subscribers: one that ends (its connection cut, its master
 *   gone) is an outage; ioredis refreshes the slots and starts another, then says
 *   `subscribersReady`. A master that lost a slot tells its shard subscribers `sunsubscribe`
 *   (which ioredis reports as an error of that node): the slots are refreshed at once, and the
 *   topic is subscribed on its new master. Slots are also refreshed every 5 s by default
 *   (`slotsRefreshInterval`), for changes nobody announced.
 * - After each of these, the adapter subscribes every topic again, and once Redis confirmed them
 *   all, followers read back what they may have missed (`changed`).
 */
import type { Cluster, ClusterOptions, Redis } from 'ioredis'

/** The slots map is read again this often unless the app says otherwise. */
export const SLOTS_REFRESH_MS = 5_000

/** Cluster options the adapter needs, under the app's own. */
export function clusterDefaults (options: ClusterOptions | undefined): ClusterOptions {
  return {
    slotsRefreshInterval: SLOTS_REFRESH_MS,
    ...options
  }
}

export interface ClusterWatcher {
  /** Something went: logged once per outage by the adapter. */
  lost(what: string, error?: Error): void
  /** Something came back or changed (`subscriptions`: the shard subscribers were started again): subscribe again if so, and catch up once the cluster is whole. */
  changed(subscriptions: boolean): void
}

/** As ioredis names a node in `slots` (it sets both options on every node it makes). */
const nodeKey = (node: Redis): string => `${String(node.options.host)}:${String(node.options.port)}`

export interface ClusterWatch {
  /** Every master that holds slots has an open publishing connection. */
  healthy(): boolean
  /** Connect to every master (at start: publishing must not meet a cold connection). */
  connectMasters(): Promise<void>
}

export function watchCluster (publisher: Cluster, subscriber: Cluster, watcher: ClusterWatcher): ClusterWatch {
  /**
   * Masters are connected once the adapter starts, and after each slots refresh (a new master, a
   * promoted replica). Not before: the Cluster's own ready check would meet a node still
   * connecting, and fail.
   */
  let eager = false
  /** Open every master's connection not opened yet; a failure is the node's error event, watched below. */
  const connectMasters = (): Array<Promise<void>> => publisher.nodes('master').filter((node) => node.status === 'wait').map(async (node) => await node.connect())
  // ioredis listeners, all of them: nothing may throw out of here.
  publisher.on('+node', (node: Redis) => {
    node.on('close', () => watcher.lost(`the connection to ${nodeKey(node)} closed`))
    node.on('ready', () => watcher.changed(false))
  })
  publisher.on('refresh', () => {
    // Each failure is its node's error event; allSettled never rejects (the handler is for the linter).
    /* c8 ignore next */
    if (eager) Promise.allSettled(connectMasters()).catch(() => {})
    watcher.changed(false)
  })
  publisher.on('node error', (error: Error, key: string) => watcher.lost(`the connection to ${key} failed`, error))
  subscriber.on('-node', () => watcher.lost('a shard subscriber connection closed'))
  subscriber.on('nodeError', (error: Error, key: string) => {
    watcher.lost(`the shard subscriber of ${key} failed`, error)
    // A slot moved away: Redis unsubscribed its channels, which ioredis reports as an error
    // ("Command queue state error … sunsubscribe"). Whatever the error, the slots are read again.
    subscriber.refreshSlotsCache()
  })
  subscriber.on('subscribersReady', () => watcher.changed(true))
  return {
    healthy () {
      const masters = new Map(publisher.nodes('master').map((node) => [nodeKey(node), node]))
      const holding = new Set(publisher.slots.flatMap((keys) => keys.slice(0, 1))) // flatMap skips unassigned slots
      for (const key of holding) {
        if (masters.get(key)?.status !== 'ready') return false
      }
      return true
    },
    async connectMasters () {
      eager = true
      await Promise.all(connectMasters())
    }
  }
}
