// `npm run check:ws-latest`: the behaviour check that registration runs (lib/ws-internals.ts),
// against the newest ws the registry serves, installed into a temporary folder. It says whether
// a fresh install that let ws float would still start, long before a user finds out: CI runs it
// and prints the verdict (package.json pins ws to the tested minor, so users are not affected).
// Exit code 0: the newest ws passes (or is the pinned one); 1: it fails, with the reason.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TESTED_WS, checkWs } from '../dist/lib/wire/ws-check.js'

const dir = mkdtempSync(join(tmpdir(), 'fws-newest-ws-'))
try {
  execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--ignore-scripts', '--prefix', dir, 'ws@latest'], { stdio: 'ignore' })
  const fromDir = createRequire(join(dir, 'package.json'))
  const version = fromDir('ws/package.json').version
  try {
    await checkWs(() => ({ ws: fromDir('ws'), version }))
    console.log(`newest ws ${version}: passes the behaviour check (tested: ${TESTED_WS})`)
  } catch (error) {
    console.log(`NEWEST WS ${version} FAILS the behaviour check: ${error.message}`)
    process.exitCode = 1
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
