/**
 * The followers of a topic against a model (fast-check `fc.commands`): publications kept in a
 * small history and carried live on a wire whose deliveries the test interleaves with read
 * replies, trims by size, the history lost (a new epoch), live messages lost, the adapter back
 * from an outage, reads that fail, full mailboxes, clients that leave and come back with where
 * they were. What each client sees must read as the model says: every publication once and in
 * order, or a resync that says where it now is — never a silent gap, never a duplicate. At the
 * end, with everything delivered, every client is at the topic's newest publication.
 */
import { install } from '@sinonjs/fake-timers'
import fc from 'fast-check'
import pino from 'pino'
import t from 'tap'
import { Feed } from '../lib/registry/followers.js'
import { kStreamMessage, type Puller } from '../lib/actor/streams.js'
import type { ConnectionContext } from '../lib/actor/context.js'
import type { HistoryRead, HistoryStore, Position, TopicEvent } from '../lib/index.js'
import { modelRuns } from './helpers.js'

const SIZE = 4
const CLIENTS = 3

/** The history as the store holds it, and the wire that carries each kept publication live. */
class World {
  epoch = 1
  top = 0
  kept: Array<{ offset: number, message: string }> = []
  wire: Array<{ offset: number, epoch: string, lost: boolean }> = []
  /** Reads in flight; `done` once the store has run one (what it saw then), replied to later. */
  reads: Array<{ after: number, done?: HistoryRead, resolve: (read: HistoryRead) => void, reject: (error: Error) => void }> = []
  readonly store: HistoryStore = {
    append: () => { throw new Error('not used') },
    read: async (_topic, after) => await new Promise<HistoryRead>((resolve, reject) => { this.reads.push({ after, resolve, reject }) })
  }

  get epochName (): string {
    return `e${this.epoch}`
  }

  /** Live messages were lost since the adapter last said it reconnected (it always does, after an outage). */
  lostSinceReconnect = false

  publish (lost: boolean): void {
    const offset = ++this.top
    this.kept.push({ offset, message: `m${offset}` })
    if (this.kept.length > SIZE) this.kept.shift()
    this.wire.push({ offset, epoch: this.epochName, lost })
  }

  /** The store runs a read now: what it sees is what it will reply, whatever comes before the reply. */
  execute (index: number): void {
    const read = this.reads[index]!
    read.done ??= { epoch: this.epochName, top: this.top, entries: read.after === Infinity ? [] : this.kept.filter((entry) => entry.offset > read.after) }
  }

  answer (index: number, fail: boolean): void {
    this.execute(index)
    const [read] = this.reads.splice(index, 1)
    if (fail) read!.reject(new Error('the history is out of reach'))
    else read!.resolve(read!.done!)
  }
}

/** One client: what it was handed, checked as it comes; `at` is where it is. */
class Client {
  at: Position | undefined
  accept = true
  problems: string[] = []
  following = false
  /** Told `unavailable`: the next publication, whatever it is, is where it is from then on. */
  adrift = false
  readonly ctx: ConnectionContext

  constructor (readonly name: string) {
    this.ctx = {
      post: (event: TopicEvent<string>) => {
        if (!this.accept) return false
        this.#see(event)
        return true
      },
      [kStreamMessage]: (event: TopicEvent<string>, next: Puller | undefined) => {
        this.#see(event)
        if (next !== undefined) queueMicrotask(() => { next.pull() })
      }
    } as unknown as ConnectionContext
  }

  #see (event: TopicEvent<string>): void {
    if (!this.following) {
      this.problems.push(`${event.kind} after it left`)
      return
    }
    if (event.kind === 'publication') {
      const { offset, epoch } = event.position
      if (!this.adrift && (this.at === undefined || epoch !== this.at.epoch || offset !== this.at.offset + 1)) {
        this.problems.push(`p:${epoch}:${offset} at ${this.at === undefined ? 'nowhere' : `${this.at.epoch}:${this.at.offset}`}: a silent gap or a duplicate`)
      }
      if (event.message !== `m${offset}`) this.problems.push(`p:${epoch}:${offset} carries ${event.message}`)
    } else if (event.kind === 'subscribed' && this.at !== undefined && event.recovered > 0 &&
      (event.position.epoch !== this.at.epoch || event.position.offset !== this.at.offset)) {
      this.problems.push(`subscribed at ${event.position.offset} after replaying up to ${this.at.offset}`)
    }
    if (event.kind === 'resync' && !(Number.isSafeInteger(event.position.offset) && event.position.offset >= 0)) {
      this.problems.push(`resync with ${JSON.stringify(event.position)}: not a valid since`)
    }
    this.at = event.position
    this.adrift = event.kind === 'resync' && event.reason === 'unavailable'
  }
}

interface Real { world: World, feed: Feed, clients: Client[] }
type Model = Record<string, never>

const settle = async (): Promise<void> => { for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve)) }

class Publish implements fc.AsyncCommand<Model, Real> {
  constructor (readonly lost: boolean) {}
  check (): boolean { return true }
  async run (_m: Model, { world }: Real): Promise<void> { world.publish(this.lost) }
  toString (): string { return `publish${this.lost ? ' (lost live)' : ''}` }
}

class DeliverLive implements fc.AsyncCommand<Model, Real> {
  constructor (readonly count: number) {}
  check (): boolean { return true }
  async run (_m: Model, { world, feed }: Real): Promise<void> {
    for (const message of world.wire.splice(0, this.count)) {
      if (message.lost) { // an outage
        world.lostSinceReconnect = true
        continue
      }
      // Live messages are lost only in an outage, and the adapter says when it is back: before the next one it carries.
      if (world.lostSinceReconnect) {
        world.lostSinceReconnect = false
        feed.catchUp()
      }
      feed.publish(`m${message.offset}`, { offset: message.offset, epoch: message.epoch })
    }
    await settle()
  }

  toString (): string { return `deliver ${this.count}` }
}

class AnswerRead implements fc.AsyncCommand<Model, Real> {
  constructor (readonly index: number, readonly fail: boolean) {}
  check (): boolean { return true }
  async run (_m: Model, { world }: Real): Promise<void> {
    await settle()
    if (world.reads.length === 0) return
    world.answer(this.index % world.reads.length, this.fail)
    await settle()
  }

  toString (): string { return `answer read ${this.index}${this.fail ? ' (fails)' : ''}` }
}

class ExecuteRead implements fc.AsyncCommand<Model, Real> {
  constructor (readonly index: number) {}
  check (): boolean { return true }
  async run (_m: Model, { world }: Real): Promise<void> {
    await settle()
    if (world.reads.length > 0) world.execute(this.index % world.reads.length)
  }

  toString (): string { return `the store runs read ${this.index}` }
}

class LoseHistory implements fc.AsyncCommand<Model, Real> {
  check (): boolean { return true }
  async run (_m: Model, { world }: Real): Promise<void> {
    world.epoch++
    world.top = 0
    world.kept = []
  }

  toString (): string { return 'lose the history' }
}

class Reconnected implements fc.AsyncCommand<Model, Real> {
  check (): boolean { return true }
  async run (_m: Model, { feed, world }: Real): Promise<void> {
    world.lostSinceReconnect = false
    feed.catchUp()
    await settle()
  }

  toString (): string { return 'adapter reconnected' }
}

class Accept implements fc.AsyncCommand<Model, Real> {
  constructor (readonly client: number, readonly accept: boolean) {}
  check (): boolean { return true }
  async run (_m: Model, { clients }: Real): Promise<void> { clients[this.client]!.accept = this.accept }
  toString (): string { return `client ${this.client} mailbox ${this.accept ? 'accepts' : 'full'}` }
}

/** A client (re)connects: from where it was (or from now), or from a position of its own making. */
class Follow implements fc.AsyncCommand<Model, Real> {
  constructor (readonly client: number, readonly from: 'where it was' | 'now' | 'elsewhere' | 'a shared position') {}
  check (): boolean { return true }
  async run (_m: Model, { feed, clients, world }: Real): Promise<void> {
    const client = clients[this.client]!
    feed.unfollow(client.ctx)
    client.following = true
    let since: Position | undefined
    if (this.from === 'where it was') since = client.at
    else if (this.from === 'elsewhere') since = { epoch: world.epochName, offset: world.top + 2 }
    else if (this.from === 'a shared position') since = { epoch: 'e1', offset: 0 } // a stampede: many clients back from one position
    client.at = since
    client.adrift = false
    feed.follow(client.ctx, since)
  }

  toString (): string { return `client ${this.client} follows from ${this.from}` }
}

class Leave implements fc.AsyncCommand<Model, Real> {
  constructor (readonly client: number) {}
  check (): boolean { return true }
  async run (_m: Model, { feed, clients }: Real): Promise<void> {
    feed.unfollow(clients[this.client]!.ctx)
    clients[this.client]!.following = false
  }

  toString (): string { return `client ${this.client} leaves` }
}

const client = fc.integer({ min: 0, max: CLIENTS - 1 })
const commands = fc.commands([
  fc.boolean().map((lost) => new Publish(lost)),
  fc.constant(new Publish(false)),
  fc.integer({ min: 1, max: 4 }).map((count) => new DeliverLive(count)),
  fc.tuple(fc.nat(5), fc.boolean(), fc.boolean()).map(([index, fail, again]) => new AnswerRead(index, fail && again)),
  fc.nat(5).map((index) => new ExecuteRead(index)),
  fc.constant(new LoseHistory()),
  fc.constant(new Reconnected()),
  fc.tuple(client, fc.boolean()).map(([i, accept]) => new Accept(i, accept)),
  fc.tuple(client, fc.constantFrom('where it was' as const, 'now' as const, 'elsewhere' as const, 'a shared position' as const)).map(([i, from]) => new Follow(i, from)),
  client.map((i) => new Leave(i))
], { maxCommands: 40 })

t.test('every client sees every publication once and in order, or a resync: never a silent gap', async (t) => {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout'] }) // the re-read backoff
  t.teardown(() => clock.uninstall())
  await fc.assert(fc.asyncProperty(commands, async (sequence) => {
    const world = new World()
    const feed = new Feed('t', { size: SIZE }, world.store, pino({ level: 'silent' }))
    const clients = Array.from({ length: CLIENTS }, (_, i) => new Client(`c${i}`))
    await fc.asyncModelRun(() => ({ model: {}, real: { world, feed, clients } }), sequence)
    // Then everything settles: mailboxes take, the wire is delivered, every read answered, every retry due.
    for (const c of clients) c.accept = true
    for (let round = 0; round < 20 && (world.wire.length > 0 || world.reads.length > 0 || clock.countTimers() > 0 || round === 0); round++) {
      await new DeliverLive(world.wire.length).run({}, { world, feed, clients })
      if (world.lostSinceReconnect) await new Reconnected().run({}, { world, feed, clients })
      while (world.reads.length > 0) world.answer(0, false)
      await settle()
      clock.runAll()
      await settle()
    }
    // Everything kept was delivered: a client of this epoch that is behind it was left silent.
    for (const c of clients) {
      if (c.following && !c.adrift && c.at?.epoch === world.epochName && c.at.offset !== world.top) {
        throw new Error(`${c.name} is at ${c.at.offset}, silent, while ${world.epochName} is at ${world.top}`)
      }
    }
    // One more publication, delivered: every client that follows must be at it.
    world.publish(false)
    await new DeliverLive(1).run({}, { world, feed, clients })
    for (let round = 0; round < 20 && (world.reads.length > 0 || clock.countTimers() > 0); round++) {
      while (world.reads.length > 0) world.answer(0, false)
      await settle()
      clock.runAll()
      await settle()
    }
    for (const c of clients) {
      if (c.problems.length > 0) throw new Error(`${c.name}: ${c.problems.join('; ')}`)
      if (c.following && (c.at?.epoch !== world.epochName || c.at.offset !== world.top)) {
        throw new Error(`${c.name} is at ${JSON.stringify(c.at)}, the topic at ${world.epochName}:${world.top}`)
      }
    }
  }), modelRuns(300))
  t.pass('300 runs of up to 40 commands')
})
