import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import { Kysely, PGliteDialect, PostgresDialect, type Transaction } from 'kysely'
import type { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import type { Database } from '../../db/schema.js'
import { migrateToLatest } from '../../db/migrate.js'
import { ConfigError, type Config } from '../../config.js'
import { AppError } from './errors.js'

/** Queues work to run once the transaction has committed; after a rollback it never runs. */
export type AfterCommit = (hook: () => unknown) => void
export type Work<T> = (trx: Transaction<Database>, afterCommit: AfterCommit) => Promise<T>
export type Transact = <T>(work: Work<T>) => Promise<T>

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    /** Runs `work` in one transaction, retried whole on a deadlock or serialisation failure; its `afterCommit` hooks run after COMMIT. */
    transaction: Transact
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

// The embedded database behind a database, once it is open (for its notifications).
const embedded = new WeakMap<Kysely<Database>, Promise<PGlite>>()
export const embeddedOf = (db: Kysely<Database>): Promise<PGlite> | undefined => embedded.get(db)

/**
 * PGlite's start parameters with 16 MB of shared buffers instead of 128: the
 * kernel caches the files beneath them anyway, and 112 MB less resident
 * memory is what lets the embedded server fit a small box (SPEC §16).
 */
export const embeddedStartParams = (pglite: typeof PGlite): string[] =>
  [...pglite.defaultStartParams, '-c', 'shared_buffers=16MB']

/**
 * A new data directory's initdb, in a process of its own: it peaks at some
 * 750 MB, which a long-lived process would keep resident for the rest of its
 * life (WebAssembly memory never shrinks).
 */
async function initdb (dataDir: string): Promise<void> {
  const script = 'const { PGlite } = await import(process.argv[1]); await (await PGlite.create(process.argv[2])).close()'
  await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, import.meta.resolve('@electric-sql/pglite'), dataDir])
}

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
  if (pglite) {
    const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite: borrowed(pglite) }) })
    embedded.set(db, Promise.resolve(pglite))
    return db
  }
  const dataDir = resolve(config.DATA_DIR, 'pglite')
  mkdirSync(dataDir, { recursive: true })
  // Opened on the first query (a run that queries nothing creates nothing).
  let opened!: (pglite: PGlite) => void
  const release = lockDataDir(resolve(config.DATA_DIR))
  const db = new Kysely<Database>({
    dialect: new PGliteDialect({
      // Loaded only when used: a server on PostgreSQL never holds PGlite's WebAssembly in memory.
      pglite: async () => {
        if (!existsSync(join(dataDir, 'PG_VERSION'))) await initdb(dataDir)
        const { PGlite } = await import('@electric-sql/pglite')
        const own = new PGlite(dataDir, { startParams: embeddedStartParams(PGlite) })
        opened(own)
        return own
      }
    })
  })
  embedded.set(db, new Promise(resolve => { opened = resolve }))
  const destroy = db.destroy.bind(db)
  db.destroy = async () => {
    try {
      await destroy()
    } finally {
      release()
    }
  }
  return db
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * PGlite takes no lock of its own, and two processes on one data directory
 * corrupt it (SPEC §3): whoever opens the embedded database first creates
 * `DATA_DIR/pglite.lock` (exclusively, so of two openers one wins), naming
 * itself. A second opener stops with a message naming the holder; a lock left
 * by a process that no longer runs is taken over. Returns the release.
 */
export function lockDataDir (dir: string): () => void {
  const file = join(dir, 'pglite.lock')
  const me = JSON.stringify({ pid: process.pid, since: new Date().toISOString(), command: process.argv.slice(1).join(' ').slice(0, 200) })
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, me + '\n', { flag: 'wx', mode: 0o600 })
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    let holder: { pid?: unknown, since?: unknown, command?: unknown } | undefined
    try {
      holder = JSON.parse(readFileSync(file, 'utf8'))
    } catch {
      // Removed meanwhile, or being written by an opener this very moment: looked at again shortly.
    }
    if (attempt >= 3) throw new ConfigError([`DATA_DIR: could not take the lock ${file}; remove it if no latchkey process uses ${dir}`])
    if (holder === undefined) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100)
      continue
    }
    const pid = typeof holder.pid === 'number' ? holder.pid : undefined
    if (pid !== undefined && alive(pid)) {
      const what = [pid === process.pid ? 'this very process' : `process ${pid}`, holder.command && `(${String(holder.command)})`, holder.since && `since ${String(holder.since)}`].filter(Boolean).join(' ')
      throw new ConfigError([`DATA_DIR: the embedded database in ${dir} is in use by ${what}; stop it first, or point DATA_DIR at another directory`])
    }
    // Its holder is gone (a crash, a kill -9): the lock is stale.
    try {
      unlinkSync(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }
  let held = true
  const release = () => {
    if (!held) return
    held = false
    process.off('exit', release)
    try {
      // Only our own lock: never one a later opener took over.
      if (readFileSync(file, 'utf8').trim() === me) unlinkSync(file)
    } catch {}
  }
  process.on('exit', release)
  return release
}

// Deadlock, serialisation failure: PostgreSQL rolled the transaction back and
// running it again from the start is the documented remedy.
const retryable = new Set(['40P01', '40001'])

// Retries after the first try, and the longest pause before the last one;
// each pause is random up to its bound (jitter), so the transactions that
// deadlocked do not meet again in step.
const retries = 4
const maxDelayMs = 100

const codeOf = (err: unknown) => (err as { code?: unknown } | null)?.code

function createTransaction (db: Kysely<Database>, log: FastifyBaseLogger): Transact {
  return async function transaction<T> (work: Work<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const hooks: Array<() => unknown> = []
      // What the work itself threw: when ROLLBACK fails too (the connection is
      // gone), Kysely throws the rollback's error and this is the one that says why.
      let thrown: { err: unknown } | undefined
      let result: T
      try {
        result = await db.transaction().execute(async trx => {
          try {
            return await work(trx, hook => { hooks.push(hook) })
          } catch (err) {
            thrown = { err }
            throw err
          }
        })
      } catch (err) {
        const cause = thrown?.err ?? err
        if (cause instanceof AppError) throw cause
        if (retryable.has(codeOf(cause) as string) || retryable.has(codeOf(err) as string)) {
          if (attempt < retries) {
            log.warn({ err: cause, attempt: attempt + 1 }, 'transaction retried')
            await sleep(Math.random() * maxDelayMs * 2 ** (attempt + 1 - retries))
            continue
          }
          log.error({ err: cause, attempts: attempt + 1 }, 'transaction failed after retries')
          throw new AppError('service_unavailable', { cause })
        }
        if (thrown !== undefined && err !== thrown.err) {
          log.error({ err: cause, rollbackError: err }, 'transaction failed and its rollback too: connection lost')
          throw new AppError('service_unavailable', { cause })
        }
        throw err
      }
      for (const hook of hooks) {
        try {
          await hook()
        } catch (err) {
          log.error({ err }, 'after-commit hook failed')
        }
      }
      return result
    }
  }
}

export default fp<DbOptions>(async (app, opts) => {
  const db = createDatabase(app.config, opts.pglite)
  app.decorate('db', db)
  app.decorate('transaction', createTransaction(db, app.log))
  app.addHook('onClose', async () => { await db.destroy() })
  if (app.config.MIGRATE_ON_START) {
    const applied = await migrateToLatest(db)
    if (applied.length > 0) app.log.info({ migrations: applied }, 'migrations applied')
  }
}, { name: 'db', dependencies: ['config'] })
