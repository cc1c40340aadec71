// MQTT over WebSocket: a gateway that carries MQTT packets in binary frames between each
// WebSocket client and its own broker connection. Bytes from the broker arrive as `info`
// messages. Packets may span frames or share one (MQTT 5 §6): the bytes are a stream, and the
// broker parses it. Back-pressure both ways: a full broker connection pauses reading from the
// client (`active: false`), a slow client pauses reading from the broker.
import type { Duplex } from 'node:stream'
import { binary, close, defineHandler, type WebSocketContext } from '../lib/index.js'
import { tokenUser, unauthorized } from './auth.js'
import type { Broker } from './broker.js'

type GatewayInfo =
  | { type: 'broker-data', chunk: Buffer }
  | { type: 'broker-drain' }
  | { type: 'broker-closed' }
  | { type: 'client-drain-check' }
  | { type: 'mailbox-drained' }

interface GatewayState {
  user: string
  link: Duplex | undefined
  /** Reading from the broker is paused until the client drains. */
  brokerPaused: boolean
}

/** Counters an app would export as metrics; the tests read them. */
export interface GatewayStats { brokerPauses: number, clientPauses: number, brokerLosses: number }

const HIGH_WATER = 1024 * 1024 // bytes waiting for the client before the broker is paused
const LOW_WATER = 256 * 1024
/** The close code when the broker connection is lost: 1014, "bad gateway" (RFC 6455 registry). */
export const BROKER_LOST = 1014

export function mqttGateway (broker: Broker, stats: GatewayStats) {
  function openLink (ctx: WebSocketContext<GatewayInfo>): Duplex {
    const link = broker.connect()
    link.on('data', (chunk: Buffer) => {
      if (ctx.post({ type: 'broker-data', chunk })) return
      // The mailbox is full (a burst the gateway has not handled yet): keep the chunk and stop
      // reading the broker; a timer message queues behind the burst and resumes it.
      link.pause()
      link.unshift(chunk)
      ctx.sendAfter(0, { type: 'mailbox-drained' })
    })
    link.on('drain', () => ctx.post({ type: 'broker-drain' }))
    link.on('close', () => ctx.post({ type: 'broker-closed' }))
    link.on('error', (error) => ctx.log.warn({ err: error }, 'MQTT broker connection failed'))
    return link
  }

  return defineHandler<GatewayState, GatewayInfo>({
    // The same token rule as /private, before any upgrade.
    init (request, reply) {
      const user = tokenUser(request)
      if (user === undefined) return reply.code(401).send(unauthorized)
      return { state: { user, link: undefined, brokerPaused: false } }
    },

    websocketInit: (state, ctx) => ({ state: { ...state, link: openLink(ctx) } }),

    handle (frame, state) {
      if (frame.type === 'text') return { reply: close(1003, 'MQTT packets travel in binary frames') }
      if (frame.type !== 'binary') return undefined
      if (state.link!.write(frame.data)) return undefined
      stats.clientPauses++
      return { active: false } // the broker is slow: stop reading the client until 'drain'
    },

    info (message, state, ctx) {
      switch (message.type) {
        case 'broker-data': {
          if (!state.brokerPaused && ctx.bufferedAmount > HIGH_WATER) {
            stats.brokerPauses++
            state.link!.pause()
            ctx.sendAfter(20, { type: 'client-drain-check' })
            return { state: { ...state, brokerPaused: true }, reply: binary(message.chunk) }
          }
          return { reply: binary(message.chunk) }
        }
        case 'client-drain-check':
          if (ctx.bufferedAmount > LOW_WATER) {
            ctx.sendAfter(20, message)
            return undefined
          }
          state.link!.resume()
          return { state: { ...state, brokerPaused: false } }
        case 'mailbox-drained':
          if (!state.brokerPaused) state.link!.resume()
          return undefined
        case 'broker-drain':
          return { active: true }
        case 'broker-closed':
          stats.brokerLosses++
          return { reply: close(BROKER_LOST, 'MQTT broker connection lost') }
      }
    },

    terminate (_reason, _request, state) {
      state.link?.destroy() // a closed WebSocket closes its broker connection
    }
  })
}
