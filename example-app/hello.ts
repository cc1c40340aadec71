// Cowboy's guide, "Post-upgrade initialization" and "Receiving Erlang messages": greet once the
// connection is open, then a timer started there says hello again every second through `info`.
import { defineHandler, text } from '../lib/index.js'

export const hello = defineHandler<undefined, 'hello'>({
  websocketInit (_state, ctx) {
    ctx.sendAfter(1000, 'hello')
    return { reply: text('Hello!') }
  },
  info (_message, _state, ctx) {
    ctx.sendAfter(1000, 'hello') // timers end with the connection: nothing to clean up
    return { reply: text('Hello!') }
  }
})
