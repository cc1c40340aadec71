/**
 * The followers of a topic (registry/followers.ts) against a history the test controls: the
 * seam, gaps in what comes live, a new epoch, a full mailbox, a history that cannot be read,
 * and a follower that leaves while its history is read. A fake connection records what it is
 * handed and pulls the next item at once, as a connection does once `info` has run.
 */
import t from 'tap'
import pino from 'pino'
import { Feed } from '../lib/registry/followers.js'
import { kStreamMessage, type Puller } from '../lib/actor/streams.js'
import type { ConnectionContext } from '../lib/actor/context.js'
import type { HistoryRead, HistoryStore, TopicEvent } from '../lib/index.js'

/** What a connection was handed, as `p:<offset>`, `subscribed:<offset>:<n>`, `resync:<offset>:<reason>`. */
function connection (accept = () => true): { ctx: ConnectionContext, seen: string[] } {
  const seen: string[] = []
  const show = (event: TopicEvent<unknown>): string => event.kind === 'publication'
    ? `p:${event.position.epoch}:${event.position.offset}`
    : event.kind === 'subscribed' ? `subscribed:${event.position.offset}:${event.recovered}` : `resync:${event.position.offset}:${event.reason}`
  const ctx = {
    post: (event: TopicEvent<unknown>) => {
      if (!accept()) return false
      seen.push(show(event))
      return true
    },
    [kStreamMessage]: (event: TopicEvent<unknown>, next: Puller | undefined) => {
      seen.push(show(event))
      if (next !== undefined) queueMicrotask(() => { next.pull() })
    }
  }
  return { ctx: ctx as unknown as ConnectionContext, seen }
}

/** A history whose reads the test answers by hand. */
function history (): { store: HistoryStore, reads: Array<{ after: number, answer: (read: HistoryRead) => void, fail: (error: Error) => void }> } {
  const reads: Array<{ after: number, answer: (read: HistoryRead) => void, fail: (error: Error) => void }> = []
  return {
    reads,
    store: {
      append: () => { throw new Error('not used') },
      read: async (_topic, after) => await new Promise<HistoryRead>((resolve, reject) => { reads.push({ after, answer: resolve, fail: reject }) })
    }
  }
}

const log = pino({ level: 'silent' })
/** The i-th read the feed issued (reads are issued at the end of the tick, for every follower that asked in it). */
async function readAt<R> (reads: R[], i: number): Promise<R> {
  await settle()
  if (reads[i] === undefined) throw new Error(`read ${i} was not issued (${reads.length} were)`)
  return reads[i]
}
const settle = async (): Promise<void> => { for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve)) }
const entries = (epoch: string, from: number, to: number): HistoryRead['entries'] =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ offset: from + i, message: `m${from + i}`, epoch }))

t.test('the seam: what comes live while the history is read follows it, each once', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 100 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, { epoch: 'e', offset: 2 })
  feed.publish('m5', { epoch: 'e', offset: 5 }) // live during the read: held
  feed.publish('m6', { epoch: 'e', offset: 6 })
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 5, entries: entries('e', 3, 5) }) // the read saw up to 5
  await settle()
  feed.publish('m7', { epoch: 'e', offset: 7 })
  feed.publish('m7', { epoch: 'e', offset: 7 }) // a duplicate: dropped
  await settle()
  t.same(seen, ['p:e:3', 'p:e:4', 'p:e:5', 'subscribed:5:3', 'p:e:6', 'p:e:7'])
})

t.test('a gap in what was held is read back before going on', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 100 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, undefined)
  feed.publish('m9', { epoch: 'e', offset: 9 }) // 6..8 never came live
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 5, entries: [] })
  await settle()
  t.equal((await readAt(reads, 1)).after, 5, 'the gap is read')
  ;(await readAt(reads, 1)).answer({ epoch: 'e', top: 9, entries: entries('e', 6, 9) })
  await settle()
  t.same(seen, ['subscribed:5:0', 'p:e:6', 'p:e:7', 'p:e:8', 'p:e:9'])
})

t.test('a new epoch live: a resync first, then on from there; held entries of another epoch than the read\'s are of a lost history', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 100 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, undefined)
  feed.publish('x', { epoch: 'new', offset: 1 })
  ;(await readAt(reads, 0)).answer({ epoch: 'old', top: 4, entries: [] })
  await settle()
  feed.publish('y', { epoch: 'newer', offset: 3 })
  await settle()
  t.same(seen, ['subscribed:4:0', 'resync:2:epoch', 'p:newer:3'])
})

t.test('a full mailbox: what it refused is read back from the history; trimmed meanwhile, a resync', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 3 }, store, log)
  let open = true
  const { ctx, seen } = connection(() => open)
  feed.follow(ctx, undefined)
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 0, entries: [] })
  await settle()
  open = false
  feed.publish('m1', { epoch: 'e', offset: 1 }) // refused: recovered from 0
  for (let i = 2; i <= 6; i++) feed.publish(`m${i}`, { epoch: 'e', offset: i }) // held, the oldest falling off past `size`
  open = true
  ;(await readAt(reads, 1)).answer({ epoch: 'e', top: 6, entries: entries('e', 4, 6) }) // 1..3 were trimmed
  await settle()
  t.same(seen, ['subscribed:0:0', 'resync:6:trimmed'])
  feed.publish('m7', { epoch: 'e', offset: 7 })
  await settle()
  t.same(seen.at(-1), 'p:e:7')
  // A recovery that finds another epoch (Redis lost its data): what was held of the old one is dropped.
  open = false
  feed.publish('m8', { epoch: 'e', offset: 8 })
  open = true
  ;(await readAt(reads, 2)).answer({ epoch: 'f', top: 2, entries: entries('f', 1, 2) })
  await settle()
  feed.publish('n3', { epoch: 'f', offset: 3 })
  await settle()
  t.same(seen.slice(-2), ['resync:2:epoch', 'p:f:3'])
})

t.test('a history that cannot be read: `unavailable`, then live from the next publication', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, { epoch: 'e', offset: 1 })
  ;(await readAt(reads, 0)).fail(new Error('Redis is down'))
  await settle()
  feed.publish('m9', { epoch: 'e', offset: 9 })
  feed.publish('m10', { epoch: 'e', offset: 10 })
  await settle()
  t.same(seen, ['resync:1:unavailable', 'p:e:9', 'p:e:10'], 'where the client was: a valid since')
  // A store that throws at once is the same.
  const throwing = new Feed('t', { size: 10 }, { append: store.append, read: () => { throw new Error('no') } }, log)
  const other = connection()
  throwing.follow(other.ctx, undefined)
  await settle()
  t.same(other.seen, ['resync:0:unavailable'])
})

t.test('followers that read from the same offset share one read; one that leaves meanwhile gets nothing', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const a = connection()
  const b = connection()
  const c = connection()
  feed.follow(a.ctx, { epoch: 'e', offset: 1 })
  feed.follow(b.ctx, { epoch: 'e', offset: 1 })
  feed.follow(c.ctx, { epoch: 'e', offset: 1 })
  await settle()
  t.equal(reads.length, 1, 'one read')
  feed.unfollow(b.ctx)
  t.equal(feed.size, 2)
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 2, entries: entries('e', 2, 2) })
  feed.unfollow(c.ctx) // after the answer, before its replay is pulled
  await settle()
  t.same(a.seen, ['p:e:2', 'subscribed:2:1'])
  t.same(b.seen, [])
  t.same(c.seen, [])
  const failing = history()
  const gone = new Feed('t', { size: 10 }, failing.store, log)
  const d = connection()
  gone.follow(d.ctx, undefined)
  gone.unfollow(d.ctx)
  ;(await readAt(failing.reads, 0)).fail(new Error('late'))
  await settle()
  t.same(d.seen, [])
})

t.test('a follower that leaves during its replay is handed nothing more', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const seen: unknown[] = []
  let next: Puller | undefined
  const ctx = { [kStreamMessage]: (event: unknown, puller: Puller | undefined) => { seen.push(event); next = puller } } as unknown as ConnectionContext
  feed.follow(ctx, { epoch: 'e', offset: 0 })
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 3, entries: entries('e', 1, 3) })
  await settle()
  t.equal(seen.length, 1, 'the first, waiting for its info to run')
  feed.unfollow(ctx)
  next!.pull()
  t.equal(seen.length, 1, 'nothing after it left')
})

t.test('catchUp (the adapter is back from an outage): live followers read back from where they are; others wait', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const live = connection()
  const recovering = connection()
  const adopting = connection()
  feed.follow(live.ctx, undefined)
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 2, entries: [] })
  feed.follow(adopting.ctx, { epoch: 'e', offset: 0 })
  ;(await readAt(reads, 1)).fail(new Error('down')) // `unavailable`: takes the next one, whatever it is
  await settle()
  feed.follow(recovering.ctx, { epoch: 'e', offset: 1 }) // its read is still out
  feed.catchUp()
  await settle()
  t.equal(reads.length, 4, 'one read more, for the live follower only')
  t.equal(reads[3]!.after, 2)
  ;(await readAt(reads, 3)).answer({ epoch: 'e', top: 4, entries: entries('e', 3, 4) }) // what was published during the outage
  await settle()
  t.same(live.seen, ['subscribed:2:0', 'p:e:3', 'p:e:4'])
  t.same(adopting.seen, ['resync:0:unavailable'])
})

t.test('a follower that comes while another one\'s read is in flight does not share it: it would miss what came live before it', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const a = connection()
  const b = connection()
  feed.follow(a.ctx, { epoch: 'e', offset: 0 })
  const first = await readAt(reads, 0) // run by the store before m1 was kept
  feed.publish('m1', { epoch: 'e', offset: 1 }) // A holds it; B is not there yet
  feed.follow(b.ctx, { epoch: 'e', offset: 0 }) // the stampede: back from the same position
  first.answer({ epoch: 'e', top: 0, entries: [] })
  ;(await readAt(reads, 1)).answer({ epoch: 'e', top: 1, entries: entries('e', 1, 1) })
  await settle()
  t.same(a.seen, ['subscribed:0:0', 'p:e:1'])
  t.same(b.seen, ['p:e:1', 'subscribed:1:1'], 'its own read: m1 is not lost at its seam')
})

t.test('a publication far ahead of what the history holds: re-read with a backoff, then told as lost, never a tight loop', async (t) => {
  const { install } = await import('@sinonjs/fake-timers')
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] })
  t.teardown(() => clock.uninstall())
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, undefined)
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 5, entries: [] })
  await settle()
  feed.publish('far', { epoch: 'e', offset: 1_000_000 }) // kept by hand in the stream, past the counter
  for (let i = 1; i <= 3; i++) {
    ;(await readAt(reads, i)).answer({ epoch: 'e', top: 5, entries: [] }) // the history has nothing between
    await settle()
    t.equal(reads.length, i + 1, `read ${i} answered: no next read before the backoff`)
    clock.runAll() // the backoff
  }
  await settle()
  t.equal(reads.length, 4, 'three re-reads, then the hole is told')
  t.same(seen, ['subscribed:5:0', 'resync:999999:trimmed', 'p:e:1000000'])
})

t.test('what the history returns with a hole or a repeat: the hole told as trimmed, the repeat dropped', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, { epoch: 'e', offset: 2 })
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 6, entries: [...entries('e', 3, 3), ...entries('e', 3, 3), ...entries('e', 5, 6)] })
  await settle()
  t.same(seen, ['p:e:3', 'resync:4:trimmed', 'p:e:5', 'p:e:6', 'subscribed:6:4'])
})

t.test('a re-read that fails: `unavailable` at where the client is, then live from the next publication', async (t) => {
  const { store, reads } = history()
  const feed = new Feed('t', { size: 10 }, store, log)
  const { ctx, seen } = connection()
  feed.follow(ctx, undefined)
  ;(await readAt(reads, 0)).answer({ epoch: 'e', top: 2, entries: [] })
  await settle()
  feed.publish('m5', { epoch: 'e', offset: 5 }) // 3 and 4 never came live
  ;(await readAt(reads, 1)).fail(new Error('Redis is down'))
  await settle()
  feed.publish('m6', { epoch: 'e', offset: 6 })
  await settle()
  t.same(seen, ['subscribed:2:0', 'resync:2:unavailable', 'p:e:5', 'p:e:6'])
})
