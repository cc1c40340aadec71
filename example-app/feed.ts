// A live feed: the app publishes a tick to the topic `feed` (a topic with history) every
// `intervalMs`, on every instance; the page at GET /feed shows a counter, the position of the
// last tick, that must never skip nor repeat, whatever happens to the connection or the
// instance it is on. Kill the instance a page is on (with Redis, another takes over): the
// page says "reconnecting…", comes back with `?since=`, gets what it missed, and counts on.
import type { FastifyInstance } from 'fastify'
import { defineHandler, json, topic, type Position, type TopicEvent } from '../lib/index.js'
import { resumeScript } from './resume-script.js'
import { posOf, sinceOf } from './positions.js'

/** One tick: which instance published it, and when. */
export interface Tick { from: string, at: number }

export const feedTopic = topic<Tick>('feed')
/** The plugin's `history` option for the feed: the last 10,000 ticks. */
export const feedHistory = { feed: { size: 10_000 } }

/** What the page gets: each tick at its offset, where it is after a (re)connect, or that it missed some. */
export type FeedEvent =
  | { type: 'tick', offset: number, from: string, at: number, pos: string }
  | { type: 'caught-up', recovered: number, offset: number, pos: string }
  | { type: 'missed', reason: string, offset: number, pos: string }

export const feed = defineHandler<Position | undefined, TopicEvent<Tick>>({
  init: (request) => ({ state: sinceOf((request.query as { since?: unknown }).since) }),
  websocketInit (since, ctx) {
    ctx.subscribe(feedTopic, { since })
  },
  info (event) {
    const { position } = event
    const base = { offset: position.offset, pos: posOf(position) }
    if (event.kind === 'publication') return { reply: json({ type: 'tick', ...event.message, ...base } satisfies FeedEvent) }
    if (event.kind === 'subscribed') return { reply: json({ type: 'caught-up', recovered: event.recovered, ...base } satisfies FeedEvent) }
    return { reply: json({ type: 'missed', reason: event.reason, ...base } satisfies FeedEvent) }
  }
})

/** Publish a tick every `intervalMs` (0: never) until the app closes. */
export function publishTicks (app: FastifyInstance, intervalMs: number): void {
  if (intervalMs <= 0) return
  const timer = setInterval(() => {
    app.wsConnections.publish(feedTopic, { from: app.wsConnections.instanceId, at: Date.now() })
  }, intervalMs)
  timer.unref()
  app.addHook('preClose', async () => { clearInterval(timer) })
}

export const feedPage = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live feed · fastify-ws-handlers</title>
<style>
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: #f6f7f9; color: #111827; display: grid; place-items: center; min-height: 100vh; }
  main { background: #fff; border: 1px solid #e5e7eb; border-radius: 12px; padding: 28px 36px; min-width: 340px; }
  #counter { font: 700 64px/1 ui-monospace, monospace; margin: 8px 0 16px; }
  #status { font-size: 13px; padding: 2px 8px; border-radius: 99px; }
  .online { background: #dcfce7; color: #166534; } .offline { background: #fee2e2; color: #991b1b; }
  dl { display: grid; grid-template-columns: auto auto; gap: 4px 16px; margin: 0; font-size: 14px; }
  dt { color: #6b7280; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  .bad { color: #b91c1c; font-weight: 700; }
</style>
</head>
<body>
<main>
  <div>Live feed <span id="status" class="offline">connecting…</span></div>
  <div id="counter">–</div>
  <dl>
    <dt>received</dt><dd id="received">0</dd>
    <dt>skipped</dt><dd id="skipped">0</dd>
    <dt>repeated</dt><dd id="repeated">0</dd>
    <dt>reconnects</dt><dd id="reconnects">0</dd>
    <dt>recovered</dt><dd id="recovered">0</dd>
    <dt>last from</dt><dd id="from">–</dd>
  </dl>
</main>
<script>
${resumeScript}
  const $ = (id) => document.getElementById(id)
  // What the page checks: every tick's offset is the last one plus one (none skipped, none twice).
  const seen = { last: undefined, received: 0, skipped: 0, repeated: 0, reconnects: 0, recovered: 0, opened: 0 }
  window.feedStats = seen
  const show = () => { for (const key of ['received', 'skipped', 'repeated', 'reconnects', 'recovered']) { $(key).textContent = seen[key]; $(key).className = (key === 'skipped' || key === 'repeated') && seen[key] > 0 ? 'bad' : '' } }
  const base = location.origin.replace(/^http/, 'ws') + '/feed'
  resumingSocket((since) => since === '' ? base : base + '?since=' + encodeURIComponent(since), {
    onStatus (state, code) {
      $('status').className = state === 'online' ? 'online' : 'offline'
      $('status').textContent = state === 'online' ? 'live' : 'reconnecting… (' + code + ')'
      if (state === 'online' && seen.opened++ > 0) seen.reconnects++
      show()
    },
    onMessage (m) {
      if (m.type === 'tick') {
        if (seen.last !== undefined && m.offset > seen.last + 1) seen.skipped += m.offset - seen.last - 1
        if (seen.last !== undefined && m.offset <= seen.last) seen.repeated++
        seen.last = m.offset
        seen.received++
        $('counter').textContent = m.offset
        $('from').textContent = m.from
      } else if (m.type === 'caught-up') {
        seen.recovered += m.recovered
        if (seen.last === undefined) { seen.last = m.offset; $('counter').textContent = m.offset }
      } else if (m.type === 'missed') {
        seen.last = m.offset // the app would resync here; the page starts counting anew
        $('counter').textContent = m.offset
      }
      show()
    }
  })
</script>
</body>
</html>
`
