/**
 * `npm run bench:profile [-- <kind> [<scenario>]]`: the 64 B echo (or `async-echo`, or a
 * `compressed` one) against one
 * server (default: the plugin) under `--cpu-prof`, then the functions that took the most CPU.
 * The .cpuprofile file stays in bench/profiles/ for Chrome DevTools.
 */
import { execFileSync, fork } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import type { EchoResult } from './load.js'
import type { Kind, Scenario } from './server.js'

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, children?: number[] }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

const kind = (process.argv[2] ?? 'plugin') as Kind
const scenario = (process.argv[3] ?? 'echo') as Scenario
const directory = new URL(`./profiles/${kind}/`, import.meta.url).pathname
rmSync(directory, { recursive: true, force: true })
mkdirSync(directory, { recursive: true })

const pin = (pid: number | undefined, cpu: number): void => {
  try { execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }) } catch {}
}
const server = fork(new URL('./server.js', import.meta.url), [kind, scenario], { execArgv: ['--expose-gc', '--cpu-prof', `--cpu-prof-dir=${directory}`] })
pin(server.pid, 0)
const [{ port }] = await once(server, 'message') as [{ port: number }]
// The compressed scenarios as the bench runs them: one connection, 200 B, 5 ms of idle after each echo.
const task = scenario.startsWith('compressed')
  ? { type: 'echo', url: `ws://127.0.0.1:${port}/`, connections: 1, inFlight: 1, size: 200, binary: false, compress: true, gapMs: 5, warmupMs: 500, durationMs: 4000 }
  : { type: 'echo', url: `ws://127.0.0.1:${port}/`, connections: 50, inFlight: 10, size: 64, binary: false, warmupMs: 500, durationMs: 4000 }
const load = fork(new URL('./load.js', import.meta.url), [JSON.stringify(task)])
pin(load.pid, 1)
const [{ result }] = await once(load, 'message') as [{ result: EchoResult }]
server.send({ id: 0, cmd: 'exit' }) // a clean exit writes the profile
await once(server, 'exit')

const file = readdirSync(directory).find((name) => name.endsWith('.cpuprofile'))!
const profile = JSON.parse(readFileSync(directory + file, 'utf8')) as Profile
const timeOf = new Map<number, number>()
profile.samples.forEach((id, i) => timeOf.set(id, (timeOf.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
const self = new Map<string, number>()
let total = 0
for (const node of profile.nodes) {
  const time = timeOf.get(node.id) ?? 0
  const { functionName, url, lineNumber } = node.callFrame
  const name = `${functionName === '' ? '(anonymous)' : functionName} ${url.split('/').slice(-2).join('/')}:${lineNumber + 1}`
  self.set(name, (self.get(name) ?? 0) + time)
  total += time
}
console.log(`${kind}: ${Math.round(result.messagesPerSecond).toLocaleString('en-US')} messages/s under the profiler; profile in ${directory}${file}\n`)
console.log('self time, % of the run')
for (const [name, time] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`${(100 * time / total).toFixed(1).padStart(5)}  ${name}`)
}
