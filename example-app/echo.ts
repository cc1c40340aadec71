// Cowboy's guide, "Handling frames": text is echoed back, every other frame is ignored.
import { defineHandler, text } from '../lib/index.js'

export const echo = defineHandler({
  handle (frame) {
    if (frame.type === 'text') return { reply: text(frame.data) }
    return undefined
  }
})
