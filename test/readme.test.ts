/**
 * The README's code blocks that name an example-app file are that file, word for word.
 */
import { readFileSync } from 'node:fs'
import t from 'tap'

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const blocks = [...readme.matchAll(/```ts\n\/\/ (example-app\/[\w-]+\.ts)\n([\s\S]*?)```/g)]

t.ok(blocks.length >= 3, 'the README shows example-app files')
for (const [, file, body] of blocks) {
  t.equal(body, readFileSync(new URL(`../${file!}`, import.meta.url), 'utf8'), `${file} in the README is the file`)
}
