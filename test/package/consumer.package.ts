/**
 * The package as people install it: `npm pack`, then a scratch project (ESM and CommonJS) that
 * installs the tarball with nothing but the README's install line, compiles under strict
 * TypeScript, and runs a handler test written with the toolkit. Packages come from npm's cache
 * (the project's own install put them there); the registry is asked only for what is missing.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'

t.setTimeout(300_000) // packing and two installs take longer than tap's default per file

const root = new URL('../..', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'fws-consumer-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

const run = (command: string, args: string[], cwd: string): string =>
  execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false' } })

const handlerSource = `import Fastify from 'fastify'
import wsHandlers, { defineHandler, json, text } from 'fastify-ws-handlers'
import { handlerHarness, wsClient } from 'fastify-ws-handlers/testing'
import { resumingSocket, type ResumingSocketOptions } from 'fastify-ws-handlers/client'

interface Room { name: string, said: number }

export const room = defineHandler<Room, 'ping'>({
  init (request, reply) {
    const { name } = request.query as { name?: string }
    if (name === undefined) return reply.code(400).send({ error: 'name?' })
    return { state: { name, said: 0 } }
  },
  handle (frame, state) {
    if (frame.type !== 'text') return undefined
    return { state: { ...state, said: state.said + 1 }, reply: json({ room: state.name, text: frame.data.toUpperCase() }) }
  },
  info: (_message, state) => ({ reply: text(\`\${state.said} said\`) })
})

export async function check (): Promise<string> {
  const app = Fastify()
  await app.register(wsHandlers)
  app.ws('/room', room)
  const client = await wsClient(app, '/room?name=lobby')
  client.send('hello')
  const answer = await client.nextJson<{ room: string, text: string }>()
  client.close(1000)
  const reason = await client.terminated()
  const harness = handlerHarness(room, { state: { name: 'x', said: 0 } })
  const step = await harness.handle('hi')
  await app.close()
  // The browser client's entry point: typed, and it asks for a WebSocket where there is none.
  const options: ResumingSocketOptions<{ pos: string }> = { url: (since) => 'ws://127.0.0.1:1/' + since, onMessage: () => {} }
  let entry = 'client'
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'undefined') {
    try { resumingSocket(options) } catch (error) { entry = (error as Error).name }
  } else entry = 'TypeError'
  return [answer.room, answer.text, reason.type, step.state.said, entry].join(' ')
}
`

for (const flavour of ['esm', 'commonjs'] as const) {
  t.test(`a ${flavour} project installs the tarball, compiles strictly and runs a toolkit test`, async (t) => {
    const tarballs = join(work, 'packed')
    mkdirSync(tarballs, { recursive: true })
    if (readdirSync(tarballs).length === 0) run('npm', ['pack', '--silent', '--pack-destination', tarballs], root)
    const tarball = join(tarballs, readdirSync(tarballs)[0]!)
    const project = join(work, flavour)
    mkdirSync(join(project, 'src'), { recursive: true })
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: `consumer-${flavour}`, private: true, type: flavour === 'esm' ? 'module' : 'commonjs' }))
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true,
        target: 'ES2022',
        module: flavour === 'esm' ? 'nodenext' : 'commonjs',
        moduleResolution: flavour === 'esm' ? 'nodenext' : 'node10',
        esModuleInterop: true,
        outDir: 'dist',
        skipLibCheck: false, // the package's own .d.ts must compile too
        types: ['node']
      },
      include: ['src']
    }))
    // The README's install line (a tarball until the package is published), plus what the app uses.
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, 'fastify@5', 'typescript@5.9.3', '@types/node@20'], project)
    writeFileSync(join(project, 'src', 'room.ts'), handlerSource)
    writeFileSync(join(project, 'src', 'main.ts'), flavour === 'esm'
      ? "import { check } from './room.js'\nconsole.log(await check())\n"
      : "import { check } from './room'\ncheck().then((line) => { console.log(line) }, (error: unknown) => { console.error(error); process.exit(1) })\n")
    try {
      run('npx', ['tsc', '-p', '.'], project)
    } catch (error) {
      t.fail(`tsc failed:\n${(error as { stdout: string }).stdout}`)
      return
    }
    t.pass('strict tsc, the package\'s .d.ts included')
    t.equal(run('node', ['dist/main.js'], project).trim(), 'lobby HELLO remote 1 TypeError', 'the handler ran through the installed package')
  })
}
