// `npm start`: PORT (default 3000) and HOST (default 127.0.0.1).
import { buildExampleApp } from './app.js'

const { app } = await buildExampleApp({ logger: true })
const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
await app.listen({ port, host })

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    // Every connection gets close 1001 and its terminate before the server stops.
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}
