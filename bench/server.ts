// The service under load, in its own process so its memory and event loop are
// its own; bench/run.ts drives it over IPC.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp } from '../app.js'

const app = await buildApp({
  env: {
    ...process.env,
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    RATE_LIMIT_ENABLED: 'false',
    JWT_SECRET: process.env.JWT_SECRET ?? 'bench-secret-bench-secret-bench-secret-00',
    DATA_DIR: process.env.DATA_DIR ?? mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
  }
})
// The baseline: a bare JSON route in the same process, through the same global hooks.
app.get('/bench/bare', async () => ({ ok: true }))
const address = await app.listen({ host: '127.0.0.1', port: 0 })

let peakRss = 0
const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 100)

process.on('message', async (message: string) => {
  if (message === 'rss') process.send?.({ peakRss })
  if (message === 'stop') {
    clearInterval(sampler)
    await app.close()
    process.disconnect()
  }
})
process.send?.({ address })
