import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import type { PGlite } from '@electric-sql/pglite'
import type { Database } from '../../db/schema.js'
import { embeddedOf } from './db.js'

/**
 * PostgreSQL's LISTEN/NOTIFY, the second fan-out path beside Redis (SPEC
 * §14). A notification sent in a transaction is delivered once it commits,
 * to every instance listening, so only committed changes are announced.
 */
export interface Notifications {
  readonly kind: 'postgres' | 'pglite'
  /** False while the listening connection is down: notifications sent meanwhile are lost. */
  readonly healthy: boolean
  /** Listens on the channel (from now on, and again after every reconnect). */
  on (channel: string, handler: (payload: string) => void): Promise<void>
  /** Called on every (re)connect: notifications may have been missed before it. */
  onReset (handler: () => void): void
  /** Sends a notification through `db`, a transaction's (delivered at its commit) or the pool's. */
  notify (db: Kysely<Database>, channel: string, payload: string): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    notifications: Notifications
  }
}

const notify = async (db: Kysely<Database>, channel: string, payload: string) => {
  await sql`select pg_notify(${channel}, ${payload})`.execute(db)
}

const quoted = (channel: string) => `"${channel.replaceAll('"', '""')}"`

// Between reconnection attempts: doubling from 100 ms up to 5 s, with jitter.
const backoff = (attempt: number) => Math.min(100 * 2 ** attempt, 5000) * (0.5 + Math.random() / 2)
// A listening connection can stall without closing (a frozen server, a dead
// route): it is pinged, and replaced when the ping does not come back.
const pingEveryMs = 5000
const pingTimeoutMs = 3000

function postgresNotifications (url: string, log: FastifyBaseLogger) {
  const handlers = new Map<string, Set<(payload: string) => void>>()
  const resets = new Set<() => void>()
  let client: pg.Client | undefined
  let attempts = 0
  let closed = false
  let retry: NodeJS.Timeout | undefined

  // Each connection is given up once, whichever of its error, its end or a failed ping tells first.
  const dead = new WeakSet<pg.Client>()
  const lost = (gone: pg.Client, err?: unknown) => {
    if (dead.has(gone)) return
    dead.add(gone)
    if (client === gone) {
      client = undefined
      log.warn({ err }, 'postgres notifications: listening connection lost')
    }
    gone.end().catch(() => {})
    if (closed || retry) return
    retry = setTimeout(() => {
      retry = undefined
      connect()
    }, backoff(attempts++))
    retry.unref()
  }

  async function connect (): Promise<void> {
    const next = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000, query_timeout: pingTimeoutMs, keepAlive: true })
    // Told by 'end' as well; without a listener an error would crash the process.
    next.on('error', err => lost(next, err))
    next.on('end', () => lost(next))
    next.on('notification', ({ channel, payload }) => {
      for (const handler of handlers.get(channel) ?? []) handler(payload ?? '')
    })
    try {
      await next.connect()
      for (const channel of handlers.keys()) await next.query(`listen ${quoted(channel)}`)
    } catch (err) {
      if (attempts === 0) log.warn({ err }, 'postgres notifications: cannot listen')
      lost(next, err)
      return
    }
    if (closed || dead.has(next)) {
      await next.end().catch(() => {})
      return
    }
    client = next
    attempts = 0
    for (const handler of resets) handler()
  }

  const pinger = setInterval(() => {
    const current = client
    current?.query('select 1').catch(err => lost(current, err))
  }, pingEveryMs)
  pinger.unref()

  const notifications: Notifications & { start (): Promise<void>, close (): Promise<void> } = {
    kind: 'postgres',
    get healthy () { return client !== undefined },
    async on (channel, handler) {
      const known = handlers.has(channel)
      if (!known) handlers.set(channel, new Set())
      handlers.get(channel)?.add(handler)
      if (!known && client) await client.query(`listen ${quoted(channel)}`).catch(err => lost(client as pg.Client, err))
    },
    onReset (handler) { resets.add(handler) },
    notify,
    start: connect,
    async close () {
      closed = true
      clearInterval(pinger)
      clearTimeout(retry)
      const current = client
      client = undefined
      await current?.end().catch(() => {})
    }
  }
  return notifications
}

// The embedded database is this process's own: what it commits, its own
// listeners hear (and every app sharing it, in the tests). It cannot lose the
// connection, so it is always healthy and never resets.
function pgliteNotifications (opened: Promise<PGlite>) {
  let closed = false
  let open = false
  opened.then(() => { open = true }, () => {})
  const unlistens: Array<Promise<() => Promise<void>>> = []
  const notifications: Notifications & { close (): Promise<void> } = {
    kind: 'pglite',
    healthy: true,
    async on (channel, handler) {
      const listening = opened.then(pglite => pglite.listen(channel, handler))
      // A database never opened (nothing queried) is never listened to, and closing does not wait for it.
      opened.then(() => { if (!closed) unlistens.push(listening) }, () => {})
      // Awaited only when the database is open already (the tests' shared one): a closed one is not opened for it.
      if (open) await listening
    },
    onReset () {},
    notify,
    async close () {
      closed = true
      for (const unlisten of unlistens) await unlisten.then(stop => stop()).catch(() => {})
    }
  }
  return notifications
}

export default fp(async (app) => {
  const { DATABASE_URL } = app.config
  if (DATABASE_URL) {
    const notifications = postgresNotifications(DATABASE_URL, app.log)
    // The first connection is awaited (boundedly, by its connect timeout), as Redis's is.
    await notifications.start()
    app.decorate('notifications', notifications)
    app.addHook('onClose', () => notifications.close())
    return
  }
  const notifications = pgliteNotifications(embeddedOf(app.db) as Promise<PGlite>)
  app.decorate('notifications', notifications)
  app.addHook('onClose', () => notifications.close())
}, { name: 'notifications', dependencies: ['config', 'db'] })
