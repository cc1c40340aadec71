// `npm start`: PORT (default 3000) and HOST (default 127.0.0.1). `npm run start:h2` (HTTP2=1):
// HTTPS with HTTP/2 and HTTP/1.1 on the same port, WebSockets over both (RFC 8441 on h2), with
// the self-signed certificate for localhost in example-app/tls (or TLS_KEY and TLS_CERT files).
import { readFileSync } from 'node:fs'
import type { FastifyServerOptions } from 'fastify'
import { buildExampleApp } from './app.js'

const http2 = process.env.HTTP2 === '1'
const tlsFile = (name: string, fallback: string): Buffer => readFileSync(process.env[name] ?? new URL(`../../example-app/tls/${fallback}`, import.meta.url))
const options = http2
  ? { logger: true, http2: true, https: { key: tlsFile('TLS_KEY', 'localhost-key.pem'), cert: tlsFile('TLS_CERT', 'localhost-cert.pem'), allowHTTP1: true } }
  : { logger: true }
const { app } = await buildExampleApp(options as FastifyServerOptions)
const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
await app.listen({ port, host })
if (http2) app.log.info(`HTTP/2 and HTTP/1.1 over TLS: open https://localhost:${port}/chat (a self-signed certificate: accept it once)`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    // A rolling deploy: connections get 1012 in batches (the drain) and their terminates before
    // the server stops; with history, the clients recover on the other instances.
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}
