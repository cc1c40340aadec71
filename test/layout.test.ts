/**
 * The layout of lib/ is its architecture: folders follow the path of a connection, and
 * dependencies point one way, down this list (each folder may import only from those below it):
 *
 *   lib/*.ts (the entry points: the plugin, /redis, /testing)
 *   route/, toolkit/    before the 101; the test toolkit (neither imports the other)
 *   registry/           connections, limits, topics, adapters
 *   actor/              one connection: the mailbox, its callbacks, its timers
 *   wire/               ws's internals, socket writes, the in-memory socket, the zlib pool
 *   core/               public types, errors, close codes, options, frame builders, diagnostics
 *
 * This test reads every import (type imports too) of lib/ and fails on an import that runs up
 * or sideways, and on any import circle between files.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const lib = fileURLToPath(new URL('../lib/', import.meta.url))
const rank: Readonly<Record<string, number>> = { core: 0, wire: 1, actor: 2, registry: 3, route: 4, toolkit: 4, '.': 5 }

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sources(path)
    return entry.name.endsWith('.ts') ? [relative(lib, path)] : []
  })
}

/** The lib files a file imports (relative specifiers, `.js` written for `.ts`). */
function importsOf (file: string): string[] {
  const text = readFileSync(join(lib, file), 'utf8')
  return [...text.matchAll(/^(?:import|export)\s[^;]*?from\s+'(\.{1,2}\/[^']+)'/gm)]
    .map((match) => normalize(join(dirname(file), match[1]!.replace(/\.js$/, '.ts'))))
}

const files = sources(lib)
const graph = new Map(files.map((file) => [file, importsOf(file)]))
const folderOf = (file: string): string => file.includes('/') ? file.slice(0, file.indexOf('/')) : '.'

t.test('every folder of lib/ has a rank, and every import points to an existing file', async (t) => {
  t.same([...new Set(files.map(folderOf))].filter((folder) => rank[folder] === undefined), [], 'no folder outside the layout')
  const missing = [...graph].flatMap(([file, imports]) => imports.filter((target) => !graph.has(target)).map((target) => `${file} -> ${target}`))
  t.same(missing, [])
})

t.test('dependencies point one way: no import runs up or sideways', async (t) => {
  const wrong: string[] = []
  for (const [file, imports] of graph) {
    for (const target of imports) {
      const from = folderOf(file)
      const to = folderOf(target)
      if (from !== to && rank[to]! >= rank[from]!) wrong.push(`${file} -> ${target}`)
    }
  }
  t.same(wrong, [], 'each import goes to its own folder or one below')
})

t.test('no import circle between files', async (t) => {
  const circles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'open') {
      circles.push([...path.slice(path.indexOf(file)), file].join(' -> '))
      return
    }
    state.set(file, 'open')
    for (const target of graph.get(file) ?? []) visit(target, [...path, file])
    state.set(file, 'done')
  }
  for (const file of files) visit(file, [])
  t.same(circles, [])
})
