/**
 * The README's code blocks that name an example-app file are that file, word for word, but for
 * the imports: the README imports the package by name, so that a snippet can be pasted.
 */
import { readFileSync } from 'node:fs'
import t from 'tap'

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const blocks = [...readme.matchAll(/```ts\n\/\/ (example-app\/[\w-]+\.ts)\n([\s\S]*?)```/g)]

t.ok(blocks.length >= 3, 'the README shows example-app files')
for (const [, file, body] of blocks) {
  const source = readFileSync(new URL(`../${file!}`, import.meta.url), 'utf8')
    .replaceAll("from '../lib/index.js'", "from 'fastify-ws-handlers'")
    .replaceAll("from '../lib/redis.js'", "from 'fastify-ws-handlers/redis'")
  t.equal(body, source, `${file} in the README is the file, importing the package`)
}
