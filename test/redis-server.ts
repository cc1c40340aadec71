/**
 * A redis-server of the test's own, on a free local port, for tests that stop, silence or kill
 * Redis (never the machine's own). Stopped in teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { Redis } from 'ioredis'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface OwnRedis {
  readonly port: number
  readonly url: string
  /** SIGSTOP: Redis keeps its sockets open and answers nothing (a partition, a hung host). */
  silence(): void
  /** SIGCONT. */
  wake(): void
  /** SIGKILL, and wait until it is gone. */
  kill(): Promise<void>
  /** Start again on the same port (after `kill`). */
  restart(): Promise<void>
}

async function freePort (): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/**
 * Every redis-server this process started and that still runs: killed when the process exits,
 * whatever ended it (a test that timed out, a run stopped midway), so that none is left behind.
 */
const running = new Set<ChildProcess>()
process.once('exit', () => { for (const child of running) child.kill('SIGKILL') })

/** `dir`: persist there (AOF, fsync'd on every write), so that a restart keeps everything. */
async function run (port: number, dir: string | undefined, extra: string[] = []): Promise<ChildProcess> {
  const persistence = dir === undefined ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir]
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  child.once('exit', () => running.delete(child))
  let output = ''
  await new Promise<void>((resolve, reject) => {
    child.once('error', (error) => reject(new Error(`cannot start redis-server (is it installed?): ${error.message}`)))
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output}`)))
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes('Ready to accept connections')) resolve()
    })
  })
  child.removeAllListeners('exit')
  child.stdout!.resume()
  return child
}

export async function ownRedis (t: { teardown(fn: () => unknown): void }, { persist = false } = {}): Promise<OwnRedis> {
  const port = await freePort()
  const dir = persist ? mkdtempSync(join(tmpdir(), 'fws-redis-')) : undefined
  let child = await run(port, dir)
  const children = [child] // each one this Redis ran: a restart makes another
  t.teardown(() => {
    for (const each of children) each.kill('SIGKILL')
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    silence: () => { child.kill('SIGSTOP') },
    wake: () => { child.kill('SIGCONT') },
    async kill () {
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    },
    async restart () {
      child = await run(port, dir)
      children.push(child)
    }
  }
}

export interface OwnCluster {
  /** Seed nodes, for `redisAdapter({ cluster })`. */
  readonly nodes: Array<{ host: string, port: number }>
  /** The port of the master that holds `key`'s slot. */
  ownerOf(key: string): Promise<number>
  /** Move `key`'s slot, and every key in it, to the master on `port` (as `redis-cli --cluster reshard` does, one slot). */
  moveSlotOf(key: string, port: number): Promise<void>
  /** SIGKILL the node on `port`, and wait until it is gone. */
  kill(port: number): Promise<void>
  /** Start the node on `port` again (its cluster config kept, its data not), and wait until the cluster is up. */
  restart(port: number): Promise<void>
  /** One command to the node on `port`, its answer. */
  call(port: number, ...args: Array<string | number>): Promise<unknown>
}

/**
 * A Redis Cluster of three masters of the test's own, on free local ports, with `replicas`
 * replicas each (a master's failure is noticed after 1 s then); stopped in teardown.
 */
export async function ownCluster (t: { teardown(fn: () => unknown): void }, { replicas = 0 } = {}): Promise<OwnCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'fws-cluster-'))
  const ports: number[] = []
  for (let i = 0; i < 3 * (1 + replicas); i++) ports.push(await freePort())
  const children = new Map<number, ChildProcess>()
  const admins = new Map<number, Redis>()
  t.teardown(() => {
    for (const admin of admins.values()) admin.disconnect()
    for (const child of children.values()) child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const start = async (port: number): Promise<void> => {
    children.set(port, await run(port, undefined, ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--dir', dir, '--cluster-node-timeout', '1000', '--repl-diskless-sync-delay', '0']))
  }
  for (const port of ports) await start(port)
  const create = spawn('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  create.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  create.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const [code] = await once(create, 'exit') as [number]
  if (code !== 0) throw new Error(`redis-cli --cluster create failed: ${output}`)
  const alive = (port: number): boolean => children.get(port)?.exitCode === null && children.get(port)?.signalCode === null
  const up = async (): Promise<void> => {
    for (const port of ports.filter(alive)) {
      for (let attempt = 0; ; attempt++) {
        const info = await command(port, 'CLUSTER INFO')
        if (info.includes('cluster_state:ok')) break
        if (attempt === 400) throw new Error(`the cluster never came up: ${info}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }
  await up() // every node agrees the cluster is up
  // A replica that never synced cannot be promoted: every one is in sync before the test starts.
  for (const port of replicas === 0 ? [] : ports) {
    for (let attempt = 0; ; attempt++) {
      const info = await command(port, 'INFO replication')
      if (info.includes('role:master') || info.includes('master_link_status:up')) break
      if (attempt === 400) throw new Error(`replica ${port} never synced: ${info}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const call = async (port: number, ...args: Array<string | number>): Promise<unknown> => {
    let admin = admins.get(port)
    if (admin === undefined) {
      admin = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 })
      admin.on('error', () => {}) // a node the test killed
      admins.set(port, admin)
    }
    return await admin.call(String(args[0]), ...args.slice(1))
  }
  const idOf = async (port: number): Promise<string> => String(await call(port, 'CLUSTER', 'MYID'))
  const slotOf = async (key: string): Promise<number> => Number(await call(ports.find(alive)!, 'CLUSTER', 'KEYSLOT', key))
  const ownerOf = async (key: string): Promise<number> => {
    const slot = await slotOf(key)
    const ranges = await call(ports.find(alive)!, 'CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
    const range = ranges.find(([from, to]) => slot >= from && slot <= to)!
    return Number(range[2][1])
  }
  return {
    nodes: ports.slice(0, 3).map((port) => ({ host: '127.0.0.1', port })), // seeds: three are enough
    ownerOf,
    async moveSlotOf (key, port) {
      const slot = await slotOf(key)
      const source = await ownerOf(key)
      const [sourceId, targetId] = [await idOf(source), await idOf(port)]
      await call(port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId)
      await call(source, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId)
      for (;;) {
        const keys = await call(source, 'CLUSTER', 'GETKEYSINSLOT', slot, 100) as string[]
        if (keys.length === 0) break
        await call(source, 'MIGRATE', '127.0.0.1', port, '', 0, 5000, 'KEYS', ...keys)
      }
      for (const each of [port, source, ...ports.filter((other) => other !== port && other !== source)]) {
        await call(each, 'CLUSTER', 'SETSLOT', slot, 'NODE', targetId)
      }
      // Every node agrees on the new owner.
      for (let attempt = 0; ; attempt++) {
        const owners = await Promise.all(ports.map(async (each) => {
          const ranges = await call(each, 'CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
          return ranges.find(([from, to]) => slot >= from && slot <= to)?.[2][1]
        }))
        if (owners.every((owner) => owner === port)) break
        if (attempt === 400) throw new Error(`the nodes do not agree on slot ${slot}: ${owners.join(', ')}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    },
    async kill (port) {
      const child = children.get(port)!
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    },
    async restart (port) {
      await start(port)
      await up()
    },
    call
  }
}

/** One inline command to a node, its raw answer. */
async function command (port: number, line: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  socket.write(`${line}\r\n`)
  let answer = ''
  for await (const chunk of socket) {
    answer += String(chunk)
    if (answer.endsWith('\r\n') && (!answer.startsWith('$') || answer.split('\r\n').length > 2)) break
  }
  socket.destroy()
  return answer
}

/**
 * The machine's Redis (REDIS_URL, else 127.0.0.1:6379) for a test file, with an admin
 * connection: checked before the file's tests, which fail with a clear message when it is not
 * there (they never skip); disconnected after them.
 */
export function machineRedis (t: { before(fn: () => Promise<void>): void, teardown(fn: () => unknown): void }): { url: string, admin: Redis } {
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const admin = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  t.before(async () => {
    try {
      await admin.connect()
    } catch (error) {
      throw new Error(`Redis is not reachable at ${url} (${(error as Error).message}): start it, or set REDIS_URL`)
    }
  })
  t.teardown(() => admin.disconnect())
  return { url, admin }
}
