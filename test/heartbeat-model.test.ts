/**
 * The shared heartbeat lists (actor/heartbeat.ts) against a model (fast-check `fc.commands`,
 * fake clock): connections start, receive data, change their idle timeout and ping interval,
 * stop, while time passes. The model says when each one must be pinged and closed: a ping
 * every `pingInterval` ms of silence, the close at exactly `idleTimeout` ms of silence, nothing
 * after its close or its stop, and no timer left when nobody waits.
 */
import { install } from '@sinonjs/fake-timers'
import fc from 'fast-check'
import t from 'tap'
import { firstStep, kDue, kHeartbeat, kNext, kPrev, kSince, restartSilence, stepAfterPing, stopBeating, type Beating, type Link } from '../lib/actor/heartbeat.js'
import { modelRuns } from './helpers.js'

/** A connection as the heartbeat sees it: it records what it was asked to do, and does what a connection does. */
class Owner implements Beating {
  declare [kPrev]: Link | undefined
  declare [kNext]: Link | undefined
  declare [kDue]: number
  declare [kSince]: number
  readonly events: string[] = []
  constructor (public idleTimeout: number, public pingInterval: number) {
    this[kPrev] = this[kNext] = undefined
    this[kDue] = this[kSince] = 0
  }

  [kHeartbeat] (silentMs: number): number {
    const at = Math.floor(performance.now())
    if (this.idleTimeout !== 0 && silentMs >= this.idleTimeout) {
      this.events.push(`close@${at}`)
      return 0
    }
    this.events.push(`ping@${at}`)
    return stepAfterPing(this.idleTimeout, this.pingInterval, silentMs)
  }
}

/** What the model knows of one: since when it is silent, its periods, whether it waits for an event, whether it ended (closed or stopped). */
interface Modelled { since: number, idleTimeout: number, pingInterval: number, waiting: boolean, ended: boolean, expected: string[] }

interface Model { now: number, owners: Modelled[] }
interface Real { clock: ReturnType<typeof install>, owners: Owner[] }

/** The model's events for `m` in (from, to]: pings every pingInterval of silence, then the close. */
function due (m: Modelled, from: number, to: number): void {
  if (!m.waiting) return
  const close = m.idleTimeout === 0 ? Infinity : m.since + m.idleTimeout
  if (firstStep(m.idleTimeout, m.pingInterval) !== 0 && m.pingInterval > 0) {
    for (let at = m.since + m.pingInterval; at < close && at <= to; at += m.pingInterval) if (at > from) m.expected.push(`ping@${at}`)
  }
  if (close > from && close <= to) {
    m.expected.push(`close@${close}`)
    m.waiting = false
    m.ended = true
  }
}

const periods = fc.record({ idleTimeout: fc.constantFrom(0, 30, 50, 100), pingInterval: fc.constantFrom(0, 10, 20, 30, 100) })

class Start implements fc.AsyncCommand<Model, Real> {
  constructor (readonly idleTimeout: number, readonly pingInterval: number) {}
  check (m: Model): boolean { return m.owners.length < 6 }
  async run (m: Model, r: Real): Promise<void> {
    const owner = new Owner(this.idleTimeout, this.pingInterval)
    r.owners.push(owner)
    restartSilence(owner, firstStep(this.idleTimeout, this.pingInterval))
    m.owners.push({ since: m.now, idleTimeout: this.idleTimeout, pingInterval: this.pingInterval, waiting: firstStep(this.idleTimeout, this.pingInterval) !== 0, ended: false, expected: [] })
  }

  toString (): string { return `start(${this.idleTimeout}, ${this.pingInterval})` }
}

/** Data arrives (or the periods change, which restarts the silence as a connection does). */
class Data implements fc.AsyncCommand<Model, Real> {
  constructor (readonly index: number, readonly change: { idleTimeout: number, pingInterval: number } | undefined) {}
  check (m: Model): boolean { return m.owners.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const i = this.index % m.owners.length
    const modelled = m.owners[i]!
    const owner = r.owners[i]!
    if (modelled.ended) return // closed or stopped: nothing enters any more
    if (this.change !== undefined) {
      Object.assign(owner, this.change)
      Object.assign(modelled, this.change)
    }
    restartSilence(owner, firstStep(owner.idleTimeout, owner.pingInterval))
    modelled.since = m.now
    modelled.waiting = firstStep(owner.idleTimeout, owner.pingInterval) !== 0
  }

  toString (): string { return `data(${this.index}${this.change === undefined ? '' : `, ${JSON.stringify(this.change)}`})` }
}

class Stop implements fc.AsyncCommand<Model, Real> {
  constructor (readonly index: number) {}
  check (m: Model): boolean { return m.owners.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const i = this.index % m.owners.length
    stopBeating(r.owners[i]!)
    m.owners[i]!.waiting = false
    m.owners[i]!.ended = true
  }

  toString (): string { return `stop(${this.index})` }
}

class Advance implements fc.AsyncCommand<Model, Real> {
  constructor (readonly ms: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    for (const modelled of m.owners) due(modelled, m.now, m.now + this.ms)
    m.now += this.ms
    r.clock.tick(this.ms)
    for (const [i, modelled] of m.owners.entries()) {
      const seen = r.owners[i]!.events.join(' ')
      const expected = modelled.expected.join(' ')
      if (seen !== expected) throw new Error(`connection ${i}: ${seen || 'nothing'}, the model says ${expected || 'nothing'}`)
    }
    if (m.owners.every((modelled) => !modelled.waiting) && r.clock.countTimers() !== 0) throw new Error('a timer left for nobody')
  }

  toString (): string { return `advance(${this.ms})` }
}

const commands = fc.commands([
  periods.map(({ idleTimeout, pingInterval }) => new Start(idleTimeout, pingInterval)),
  fc.tuple(fc.nat(5), fc.option(periods, { nil: undefined })).map(([i, change]) => new Data(i, change)),
  fc.nat(5).map((i) => new Stop(i)),
  fc.integer({ min: 1, max: 120 }).map((ms) => new Advance(ms)),
  fc.integer({ min: 1, max: 120 }).map((ms) => new Advance(ms))
], { maxCommands: 40 })

t.test('each connection is pinged every pingInterval of silence and closed at exactly idleTimeout, on shared timers, and none is left for nobody', async (t) => {
  await fc.assert(fc.asyncProperty(commands, async (sequence) => {
    const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
    const owners: Owner[] = []
    try {
      await fc.asyncModelRun(() => ({ model: { now: 0, owners: [] }, real: { clock, owners } }), sequence)
    } finally {
      for (const owner of owners) stopBeating(owner)
      clock.uninstall()
    }
  }), modelRuns(300))
  t.pass('300 runs of up to 40 commands')
})
