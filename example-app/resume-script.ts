// The browser side of recovery, shared by the chat and feed pages (and pasteable as it is: the
// README shows it). One WebSocket that comes back after any close but a deliberate one, with
// exponential backoff and full jitter (so that the clients of a drained instance spread out),
// and that asks for what it missed: the URL of each attempt carries `since`, the position of the
// last publication the page saw ("<epoch>:<offset>").
export const resumeScript = `
function resumingSocket (urlFor, { onMessage, onStatus }) {
  let socket, attempt = 0, since = '', stopped = false
  function open () {
    socket = new WebSocket(urlFor(since))
    socket.onopen = () => { attempt = 0; onStatus('online') }
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data)
      if (message.pos !== undefined) since = message.pos // where to come back from
      onMessage(message)
    }
    socket.onclose = (event) => {
      if (stopped) return
      // Full jitter: a random wait up to the backoff, so reconnects do not come in waves.
      const wait = Math.random() * Math.min(500 * 2 ** attempt++, 10000)
      onStatus('reconnecting', event.code)
      setTimeout(open, wait)
    }
  }
  open()
  return {
    send: (data) => socket.readyState === WebSocket.OPEN && (socket.send(data), true),
    close: () => { stopped = true; socket.close(1000) }
  }
}
`
