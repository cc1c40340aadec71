/**
 * The README's TypeScript compiles against the package's types: every ```ts block (but the
 * example-app files, which test/readme.test.ts compares with the files themselves) is written
 * out as a module that imports the package by name, and type-checked with the project's options.
 * Fragments may use `app` (a Fastify instance) and the plugin's exports without importing them,
 * as the README's prose does; what a block imports or declares itself is not given to it.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'

const root = fileURLToPath(new URL('..', import.meta.url))
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)]
  .map((match) => ({ code: match[1]!, line: readme.slice(0, match.index).split('\n').length + 1 }))
  .filter(({ code }) => !code.startsWith('// example-app/'))

/** Names a fragment may use unannounced; each line is left out where the block brings its own. */
const prelude: Array<[string, string]> = [
  ['Fastify', "import Fastify from 'fastify'"],
  ['wsHandlers', "import wsHandlers from 'fastify-ws-handlers'"],
  ['defineHandler', "import { defineHandler } from 'fastify-ws-handlers'"],
  ['text', "import { text } from 'fastify-ws-handlers'"],
  ['json', "import { json } from 'fastify-ws-handlers'"],
  ['app', 'const app = Fastify()']
]

t.test('every TypeScript block of the README type-checks against the package', async (t) => {
  t.ok(blocks.length >= 5, `${blocks.length} blocks`)
  const dir = `${root}test/.readme-snippets`
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // What the testing snippet imports from "your app".
  writeFileSync(`${dir}/app.ts`, "export declare function buildApp (): Promise<import('fastify').FastifyInstance>\n")
  writeFileSync(`${dir}/counter.ts`, "export { counter } from '../../example-app/counter.js'\n")
  const files = blocks.map(({ code, line }) => {
    const own = (name: string): boolean => new RegExp(`(import[^;]*\\b${name}\\b[^;]*from|(const|let|function|class) ${name}\\b)`).test(code)
    const lines = prelude.filter(([name]) => !own(name)).map(([, source]) => source)
    const file = `${dir}/readme-line-${line}.ts`
    writeFileSync(file, `${lines.join('\n')}\n${code}\nexport {}\n`)
    return file
  })
  const program = ts.createProgram(files, {
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: ['node'],
    skipLibCheck: true,
    noEmit: true,
    noUnusedLocals: false,
    baseUrl: root,
    paths: {
      'fastify-ws-handlers': ['lib/index.ts'],
      'fastify-ws-handlers/redis': ['lib/redis.ts'],
      'fastify-ws-handlers/testing': ['lib/testing.ts'],
      'fastify-ws-handlers/client': ['lib/client.ts']
    }
  })
  const problems = ts.getPreEmitDiagnostics(program)
    .filter((diagnostic) => diagnostic.file?.fileName.startsWith(dir) === true)
    .map((diagnostic) => `${diagnostic.file!.fileName.slice(dir.length + 1)}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`)
  t.same(problems, [], 'no type error in the README\'s code')
})
