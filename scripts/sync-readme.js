// `npm run docs`: README code blocks that start with `// example-app/<file>.ts` are rewritten
// from that file, so the docs show the code that runs (test/readme.test.ts checks it). Imports
// of the plugin are shown as an app writes them: from 'fastify-ws-handlers'.
import { readFileSync, writeFileSync } from 'node:fs'

const readmeUrl = new URL('../README.md', import.meta.url)
const readme = readFileSync(readmeUrl, 'utf8')
const synced = readme.replace(/```ts\n\/\/ (example-app\/[\w-]+\.ts)\n[\s\S]*?```/g, (_block, file) =>
  '```ts\n// ' + file + '\n' + readFileSync(new URL(`../${file}`, import.meta.url), 'utf8')
    .replaceAll("from '../lib/index.js'", "from 'fastify-ws-handlers'") + '```')
writeFileSync(readmeUrl, synced)
