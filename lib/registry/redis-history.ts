/**
 * The Redis adapter's history (redis.ts): a topic's publications in a Redis Stream whose entry
 * ids are their offsets (`<offset>-0`, so a read by position is one XRANGE), its epoch and
 * offset counter in a hash beside it. One Lua script appends, trims and publishes to the topic's
 * channel at once, so every instance sees publications in offset order, and a publication is
 * delivered live only if it is kept. The keys of a topic share a hash tag with its channel: on
 * a Redis Cluster they live in one slot, and the script publishes with SPUBLISH there.
 *
 * The epoch is made by whichever script finds the hash missing: a Redis that lost its data (a
 * restart without persistence, an eviction, a FLUSHALL) starts a new epoch, and every client
 * that comes back with an older one is told to resync. A Redis that persists (AOF) keeps the
 * epoch and offsets across a restart, and recovery goes on across it.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { HistoryLimits, HistoryRead } from '../core/types.js'

/**
 * `{tag}` of a topic's keys and channel: the topic itself, unless it could end the tag early (a
 * brace) or be taken for a hashed one (a leading `~`): then `~` and its SHA-1. Injective: no two
 * topics share a channel, a stream or an offset counter.
 */
export function hashTagOf (topic: string): string {
  return topic.includes('}') || topic.includes('{') || topic.startsWith('~') ? `~${createHash('sha1').update(topic).digest('hex')}` : topic
}

/**
 * Lua, first in both scripts: the topic's epoch (KEYS[2]'s), or, when the hash is gone (the
 * history was lost), a new one (`candidate`, an ARGV) and an empty stream (KEYS[1]).
 */
function epochOf (candidate: string): string {
  return `
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ${candidate}
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  redis.call('DEL', KEYS[1])
end`
}

/**
 * KEYS: stream, meta. ARGV: the envelope's head up to the field length (wire format of redis.ts),
 * the JSON body, size, maxAgeMs (0: none), an epoch to start with, the channel, the publish
 * command. Returns { offset, epoch }.
 */
export const APPEND_SCRIPT = `${epochOf('ARGV[5]')}
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], offset .. '-0', 't', now, 'd', ARGV[2])
local maxAge = tonumber(ARGV[4])
if maxAge > 0 then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
  for _, entry in ipairs(oldest) do
    if tonumber(entry[2][2]) >= now - maxAge then
      redis.call('XTRIM', KEYS[1], 'MINID', entry[1])
      break
    end
  end
  -- Only the entries expire: the epoch and the counter stay, so an expired history reads as
  -- trimmed (its followers told so), never as lost (a new epoch, offsets from 1 again).
  redis.call('PEXPIRE', KEYS[1], maxAge)
end
local field = epoch .. ' ' .. offset
redis.call(ARGV[7], ARGV[6], ARGV[1] .. struct.pack('>I4', #field) .. field .. ARGV[2])
return {offset, epoch}
`

/**
 * KEYS: stream, meta. ARGV: after ('inf': none), count, maxAgeMs (0: none), an epoch to start
 * with. Returns { epoch, top, id1, data1, id2, data2, … }: what is kept after `after`, oldest first.
 */
export const READ_SCRIPT = `${epochOf('ARGV[4]')}
local top = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
local out = {epoch, top}
if ARGV[1] == 'inf' or tonumber(ARGV[1]) >= top then return out end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
local maxAge = tonumber(ARGV[3])
local cutoff = 0
if maxAge > 0 then
  local time = redis.call('TIME')
  cutoff = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - maxAge
end
for _, entry in ipairs(entries) do
  if maxAge == 0 or tonumber(entry[2][2]) >= cutoff then
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2][4]
  end
end
return out
`

/** A new epoch's name (used only if the script finds none). */
export function newEpoch (): string {
  return randomBytes(6).toString('hex')
}

/**
 * The read script's reply as a HistoryRead. An entry that does not parse (written by a bug or
 * another app) fails the read: its followers are told `unavailable`, never given a silent gap.
 */
export function historyReadOf (reply: unknown[]): HistoryRead {
  const [epoch, top] = reply as [string, number]
  const entries: Array<{ offset: number, message: unknown }> = []
  for (let i = 2; i < reply.length; i += 2) entries.push({ offset: parseInt(reply[i] as string, 10), message: JSON.parse(reply[i + 1] as string) })
  return { epoch: String(epoch), top: Number(top), entries }
}

/** The script arguments of a read. */
export function readArgs (after: number, limits: HistoryLimits): Array<string | number> {
  return [after === Infinity ? 'inf' : after, limits.size, limits.maxAgeMs ?? 0, newEpoch()]
}
