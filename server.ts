import { resolve } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, type Config } from './config.js'

// A configuration mistake is the operator's to fix: every problem, plainly, no stack trace.
const app = await buildApp({ dotenv: true }).catch((err: unknown) => {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`latchkey did not start. ${err.message}\n(.env.example lists every variable and its default.)\n`)
  process.exit(1)
})

// "PostgreSQL postgres@db.internal:5432/latchkey": where it runs, never the password.
function where (url: string): string {
  const { username, host, pathname } = new URL(url)
  return `${username ? `${decodeURIComponent(username)}@` : ''}${host}${pathname === '/' ? '' : pathname}`
}

function banner (config: Config, url: string): string {
  const rows = [
    ['docs', `${url}/docs`],
    ['database', config.DATABASE_URL ? `PostgreSQL ${where(config.DATABASE_URL)}` : `embedded (PGlite) in ${resolve(config.DATA_DIR, 'pglite')}`],
    ['cache', config.REDIS_URL ? `Redis ${where(config.REDIS_URL)}` : 'in process (one instance only)'],
    ['mail', config.SMTP_URL ? `SMTP ${where(config.SMTP_URL)}` : 'written to this log (no SMTP_URL)'],
    ['metrics', config.METRICS_PORT ? `http://${config.HOST}:${config.METRICS_PORT}/metrics` : 'off (no METRICS_PORT)']
  ]
  return [`latchkey is running at ${url}`, ...rows.map(([name, value]) => `  ${name.padEnd(10)}${value}`)].join('\n')
}

// In-flight requests get SHUTDOWN_GRACE to finish; past it, the connections
// still open (a slow client, a slowloris halfway through its headers) are cut,
// the pool, Redis and SMTP close, and the exit is still 0. close-with-grace's
// own timeout, a little later, is only the backstop for a close that hangs.
const grace = app.config.SHUTDOWN_GRACE * 1000
closeWithGrace({ delay: grace + 5000 }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  const cutoff = setTimeout(() => {
    app.log.warn('shutdown grace over: closing the connections still open')
    app.server.closeAllConnections()
  }, grace)
  await app.close()
  clearTimeout(cutoff)
})

const url = await app.listen({ host: app.config.HOST, port: app.config.PORT })
app.log.info(banner(app.config, url))
