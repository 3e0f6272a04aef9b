import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import fp from 'fastify-plugin'
import { Kysely, PGliteDialect, PostgresDialect } from 'kysely'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import type { Database } from '../../db/schema.js'
import { migrateToLatest } from '../../db/migrate.js'
import type { Config } from '../../config.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
  }
}

export interface DbOptions {
  config: Config
  /** An embedded database owned by the caller (the tests share one per process); it is not closed with the app. */
  pglite?: PGlite
}

// Keeps Kysely from closing an embedded database that outlives this app.
function borrowed (pglite: PGlite) {
  return {
    get closed () { return pglite.closed },
    get ready () { return pglite.ready },
    get waitReady () { return pglite.waitReady },
    query: pglite.query.bind(pglite),
    transaction: pglite.transaction.bind(pglite),
    close: async () => {}
  }
}

// The PostgreSQL pool behind a database, for the metrics of its use.
const pools = new WeakMap<Kysely<Database>, pg.Pool>()
export const poolOf = (db: Kysely<Database>): pg.Pool | undefined => pools.get(db)

export function createDatabase (config: Config, pglite?: PGlite): Kysely<Database> {
  if (config.DATABASE_URL) {
    const pool = new pg.Pool({
      connectionString: config.DATABASE_URL,
      max: config.DATABASE_POOL_MAX,
      // A dead database answers within seconds instead of hanging requests.
      connectionTimeoutMillis: 3000,
      query_timeout: 15000
    })
    // An idle client losing its server must not crash the process; the pool replaces it.
    pool.on('error', () => {})
    // Nor one that is checked out: pg emits 'error' on it as well, and without
    // a listener a PostgreSQL restart mid-query killed the process. The query
    // in flight fails by itself (503) and the pool discards the dead client.
    pool.on('connect', client => { client.on('error', () => {}) })
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
    pools.set(db, pool)
    return db
  }
  if (pglite) return new Kysely<Database>({ dialect: new PGliteDialect({ pglite: borrowed(pglite) }) })
  const dataDir = resolve(config.DATA_DIR, 'pglite')
  mkdirSync(dataDir, { recursive: true })
  return new Kysely<Database>({ dialect: new PGliteDialect({ pglite: () => new PGlite(dataDir) }) })
}

export default fp<DbOptions>(async (app, opts) => {
  const db = createDatabase(app.config, opts.pglite)
  app.decorate('db', db)
  app.addHook('onClose', async () => { await db.destroy() })
  if (app.config.MIGRATE_ON_START) {
    const applied = await migrateToLatest(db)
    if (applied.length > 0) app.log.info({ migrations: applied }, 'migrations applied')
  }
}, { name: 'db', dependencies: ['config'] })
