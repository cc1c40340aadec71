/**
 * An app in a process of its own, so that a test can kill it (test/fixtures/*-instance.ts):
 * started with this process's loaders (it runs TypeScript), it prints `listening <port>` once up,
 * and ends with the test (SIGKILL on teardown; and its stdin closes when this process ends,
 * however it ends).
 */
import { spawn, type ChildProcess } from 'node:child_process'

export interface Instance { readonly process: ChildProcess, readonly port: number }

export async function startInstance (t: { teardown(fn: () => unknown): void }, script: string, env: Record<string, string>): Promise<Instance> {
  const child = spawn(process.execPath, [...process.execArgv, script], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let output = ''
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the instance exited with ${code}: ${output}`)))
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening (\d+)/.exec(output)
      if (match !== null) resolve(Number(match[1]))
    })
  })
  child.removeAllListeners('exit')
  return { process: child, port }
}
