// The service under load, in its own process so its memory and event loop are
// its own; bench/run.ts drives it over IPC. It runs compiled (dist/bench/server.js,
// plain node), as production does.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { buildApp } from '../app.js'

// The rate limiter runs as deployed (its hooks and store, Redis when set), with
// every limit raised so that the load is never refused.
const raised = Object.fromEntries(['GLOBAL', 'LOGIN_IP', 'LOGIN_EMAIL', 'REGISTER_IP', 'REFRESH_IP', 'VERIFY_IP', 'MAIL_EMAIL']
  .map(name => [`RATE_LIMIT_${name}_MAX`, '1000000000']))

const app = await buildApp({
  env: {
    ...process.env,
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    RATE_LIMIT_ENABLED: 'true',
    ...raised,
    JWT_SECRET: process.env.JWT_SECRET ?? 'bench-secret-bench-secret-bench-secret-00',
    APP_SECRET: process.env.APP_SECRET ?? 'bench-app-secret-bench-app-secret-0000',
    DATA_DIR: process.env.DATA_DIR ?? mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
  }
})
// The baselines: bare JSON routes in the same process, through the same global
// hooks, and one without the security-header hook.
app.get('/bench/bare', async () => ({ ok: true }))
app.get('/bench/bare-no-headers', { config: { securityHeaders: false } }, async () => ({ ok: true }))

// The codes register mails, so the verify scenario confirms the accounts register made.
const codes: Array<{ email: string, code: string }> = []
await app.ready()
app.mailer.send = async (mail) => {
  const code = /\b([0-9]{6})\b/.exec(mail.text)?.[1]
  if (code) codes.push({ email: mail.to, code })
}

// SQL statements sent to PostgreSQL, for the count of one refresh's (-1 on PGlite: not counted).
let statements = process.env.DATABASE_URL ? 0 : -1
if (process.env.DATABASE_URL) {
  const query = pg.Client.prototype.query
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    statements++
    return (query as (...a: unknown[]) => unknown).apply(this, args)
  } as typeof query
}

const address = await app.listen({ host: '127.0.0.1', port: 0 })

const idleRss = process.memoryUsage().rss
let peakRss = idleRss
const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 50)

type Message = { type: 'rss' } | { type: 'healthy' } | { type: 'codes' } | { type: 'statements' } | { type: 'stop' }

process.on('message', async (message: Message) => {
  switch (message.type) {
    case 'rss':
      // Peak since the last ask, then counted afresh for the next scenario.
      process.send?.({ idleRss, peakRss })
      peakRss = process.memoryUsage().rss
      break
    // Whether the cache backend is reachable (the fan-out bench waits for its cut).
    case 'healthy': process.send?.(app.cache.healthy); break
    case 'codes': process.send?.(codes.splice(0)); break
    case 'statements': process.send?.(statements); break
    case 'stop':
      clearInterval(sampler)
      await app.close()
      process.disconnect()
  }
})
process.send?.({ address })
