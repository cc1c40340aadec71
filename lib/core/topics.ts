/**
 * Typed topics: a topic declared once with its message type, so that `publish` and the
 * subscribers' `info` are checked against each other by TypeScript.
 */
import { InvalidTopicError } from './errors.js'
import { show } from './options.js'
import type { Topic } from './types.js'

/**
 * Declare a topic with the type of its messages, once, where publisher and subscribers can
 * import it: `export const prices = topic<PriceUpdate>('prices')`. At runtime it is its name.
 */
export function topic<Message> (name: string): Topic<Message> {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidTopicError(show(name))
  return Object.freeze({ name })
}

/** A topic's name, from a name or a `topic()`; anything else is refused (FST_WS_INVALID_TOPIC). */
export function topicName (topic: unknown): string {
  const name = topic !== null && typeof topic === 'object' ? (topic as { name?: unknown }).name : topic
  if (typeof name !== 'string' || name.length === 0) throw new InvalidTopicError(show(topic))
  return name
}

/** The name to look up (leaving, counting): a `topic()`'s, or what was given, which then finds nothing if it is no name. */
export function nameOf (topic: string | Topic<unknown>): string {
  return topic !== null && typeof topic === 'object' ? topic.name : topic
}
