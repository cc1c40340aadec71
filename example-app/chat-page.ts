// The chat page served at GET /chat: plain HTML and JavaScript with the browser's own WebSocket,
// no build step. It opens the WebSocket on the same path (/chat) and speaks JSON (chat.ts).
import { resumeScript } from './resume-script.js'

export const chatPage = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat · fastify-ws-handlers</title>
<style>
  :root { --accent: #2f6fdf; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: #111827; }
  header { display: flex; align-items: center; gap: 12px; padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 17px; margin: 0; }
  #status { margin-left: auto; font-size: 13px; color: var(--muted); }
  #status.online::before { content: "●"; color: #16a34a; margin-right: 6px; }
  #status.offline::before { content: "●"; color: #dc2626; margin-right: 6px; }
  main { display: grid; grid-template-columns: 1fr 220px; gap: 16px; padding: 16px 20px; height: calc(100vh - 58px); }
  #join { grid-column: 1 / -1; max-width: 420px; margin: 40px auto; background: #fff; padding: 24px; border: 1px solid var(--line); border-radius: 10px; }
  #join label { display: block; font-size: 13px; color: var(--muted); margin: 10px 0 4px; }
  input { width: 100%; padding: 9px 11px; border: 1px solid #cbd5e1; border-radius: 7px; font: inherit; }
  button { padding: 9px 16px; border: 0; border-radius: 7px; background: var(--accent); color: #fff; font: inherit; cursor: pointer; }
  #join button { margin-top: 16px; width: 100%; }
  #conversation { display: flex; flex-direction: column; background: #fff; border: 1px solid var(--line); border-radius: 10px; min-height: 0; }
  #messages { flex: 1; overflow-y: auto; padding: 14px 16px; margin: 0; list-style: none; }
  #messages li { margin: 0 0 10px; }
  #messages .who { font-weight: 600; margin-right: 6px; }
  #messages .mine .who { color: var(--accent); }
  #messages .at { color: var(--muted); font-size: 12px; margin-left: 6px; }
  #messages .notice { color: var(--muted); font-style: italic; font-size: 13px; }
  #say { display: flex; gap: 8px; padding: 12px; border-top: 1px solid var(--line); }
  aside { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; overflow-y: auto; }
  aside h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 0 0 10px; }
  #members { list-style: none; margin: 0; padding: 0; }
  #members li { padding: 4px 0; }
  #members li::before { content: "●"; color: #16a34a; font-size: 10px; margin-right: 8px; vertical-align: middle; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header><h1>Chat <span id="room-title"></span></h1><span id="status" class="offline">not connected</span></header>
<main>
  <form id="join">
    <strong>Join a room</strong>
    <label for="name">Your name</label><input id="name" name="name" maxlength="24" required autocomplete="off">
    <label for="room">Room</label><input id="room" name="room" maxlength="24" required value="lobby">
    <button type="submit">Join</button>
  </form>
  <section id="conversation" hidden>
    <ul id="messages" aria-live="polite"></ul>
    <form id="say"><input id="text" maxlength="2000" placeholder="Say something…" autocomplete="off"><button type="submit">Send</button></form>
  </section>
  <aside id="people" hidden><h2>In the room</h2><ul id="members"></ul></aside>
</main>
<script>
${resumeScript}
  const $ = (id) => document.getElementById(id)
  let socket, me, joined = false
  const time = (at) => new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })

  function add (html, className = '') {
    const item = document.createElement('li')
    item.className = className
    item.innerHTML = html
    $('messages').append(item)
    $('messages').scrollTop = $('messages').scrollHeight
  }
  const escape = (s) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
  const showMembers = (members) => { $('members').innerHTML = members.map((m) => '<li>' + escape(m) + '</li>').join('') }
  function status (online, text) { $('status').className = online ? 'online' : 'offline'; $('status').textContent = text }

  function connect (name, room) {
    const base = location.origin.replace(/^http/, 'ws') + '/chat?' + new URLSearchParams({ name, room })
    socket = resumingSocket((since) => since === '' ? base : base + '&since=' + encodeURIComponent(since), {
      onStatus: (state, code) => state === 'online'
        ? status(true, 'connected as ' + name)
        : status(false, 'disconnected (' + code + '), reconnecting…'),
      onMessage
    })
  }

  function onMessage (m) {
    if (m.type === 'welcome') {
      me = m.name; $('room-title').textContent = '· ' + m.room; showMembers(m.members)
      if (!joined) add('You joined <b>' + escape(m.room) + '</b>', 'notice')
      joined = true
    }
    else if (m.type === 'said') add('<span class="who">' + escape(m.from) + '</span>' + escape(m.text) + '<span class="at">' + time(m.at) + '</span>', m.from === me ? 'mine' : '')
    else if (m.type === 'caught-up') { if (m.recovered > 0) add('↻ ' + m.recovered + ' missed while away', 'notice') }
    else if (m.type === 'missed') add('Some messages were missed (' + escape(m.reason) + ')', 'notice')
    else if (m.type === 'joined') { showMembers(m.members); add(escape(m.name) + ' joined', 'notice') }
    else if (m.type === 'left') { showMembers(m.members); add(escape(m.name) + ' left', 'notice') }
    else if (m.type === 'members') showMembers(m.members)
    else if (m.type === 'error') add(escape(m.message), 'notice')
  }

  $('join').onsubmit = (event) => {
    event.preventDefault()
    $('join').hidden = true
    $('conversation').hidden = false
    $('people').hidden = false
    connect($('name').value.trim(), $('room').value.trim())
    $('text').focus()
  }
  $('say').onsubmit = (event) => {
    event.preventDefault()
    const text = $('text').value.trim()
    if (text === '' || !socket.send(JSON.stringify({ type: 'say', text }))) return
    $('text').value = ''
  }
</script>
</body>
</html>
`
