import { execFile, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { sql } from 'kysely'
import { buildApp } from '../../../app.js'
import { migrateToLatest } from '../../../db/migrate.js'
import { lockDataDir } from '../../../plugins/infra/db.js'
import pg from 'pg'
import { build, dbFault, login, realBackends, register, tcpProxy, testEnv, uniqueEmail } from '../../helper.js'
import { race } from '../../race.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))
const migrationNames = readdirSync(join(root, 'db/migrations')).filter(f => f.endsWith('.ts')).map(f => f.replace(/\.ts$/, '')).sort()
const backend = realBackends ? 'PostgreSQL' : 'the embedded database'

// Several embedded databases start from disk here, each in seconds on a loaded machine.
t.setTimeout(300_000)

const newUser = (email = uniqueEmail('db')) => ({ email, password_hash: 'not-a-real-hash' })

t.test(`on ${backend}, every migration has run at start and running again applies nothing`, async t => {
  const app = await build(t)
  const applied = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(app.db)
  t.same(applied.rows.map(r => r.name), migrationNames)
  t.same(await migrateToLatest(app.db), [], 'already up to date')
})

t.test(`on ${backend}, a written row reads back with the column defaults`, async t => {
  const app = await build(t)
  const email = uniqueEmail('db')
  const inserted = await app.db.insertInto('users').values(newUser(email)).returning('id').executeTakeFirstOrThrow()
  const user = await app.db.selectFrom('users').selectAll().where('id', '=', inserted.id).executeTakeFirstOrThrow()
  t.equal(user.email, email)
  t.equal(user.role, 'user')
  t.equal(user.token_version, 0)
  t.equal(user.name, null)
  t.equal(user.email_verified_at, null)
  t.ok(user.created_at instanceof Date, 'timestamps read as Date')
})

t.test(`on ${backend}, a transaction that fails leaves nothing behind; one that succeeds keeps everything`, async t => {
  const app = await build(t)
  const [a, b] = [uniqueEmail('rollback-a'), uniqueEmail('rollback-b')]
  await t.rejects(app.db.transaction().execute(async trx => {
    await trx.insertInto('users').values(newUser(a)).execute()
    await trx.insertInto('users').values(newUser(b)).execute()
    throw new Error('changed my mind')
  }), /changed my mind/)
  const left = await app.db.selectFrom('users').select('email').where('email', 'in', [a, b]).execute()
  t.same(left, [], 'neither row was kept')

  await app.db.transaction().execute(async trx => {
    await trx.insertInto('users').values(newUser(a)).execute()
    await trx.insertInto('users').values(newUser(b)).execute()
  })
  const kept = await app.db.selectFrom('users').select('email').where('email', 'in', [a, b]).orderBy('email').execute()
  t.same(kept.map(r => r.email), [a, b].sort())
})

t.test(`on ${backend}, the database itself refuses a duplicate or unnormalised email`, async t => {
  const app = await build(t)
  const email = uniqueEmail('unique')
  await app.db.insertInto('users').values(newUser(email)).execute()
  await t.rejects(app.db.insertInto('users').values(newUser(email)).execute(), /unique|duplicate/i)
  await t.rejects(app.db.insertInto('users').values(newUser(uniqueEmail('Upper'))).execute(), /check constraint/i)
})

t.test('embedded on disk: `npm run migrate` creates the schema, and rows and the secret survive a restart', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'latchkey-db-'))
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH, NODE_ENV: 'test', DATA_DIR: dataDir },
    timeout: 60_000
  })
  for (const name of migrationNames) t.match(stdout, name, `npm run migrate applies ${name}`)
  t.ok(readdirSync(join(dataDir, 'pglite')).length > 0, 'the database files are under DATA_DIR/pglite')

  // The server's way: no shared instance, no DATABASE_URL, no configured secret;
  // the schema is there already, so nothing migrates on start.
  const env = testEnv({ DATA_DIR: dataDir, DATABASE_URL: undefined, REDIS_URL: undefined, JWT_SECRET: undefined, MIGRATE_ON_START: 'false' })
  const email = uniqueEmail('restart')
  const first = await buildApp({ env })
  t.teardown(() => first.close())
  await first.db.insertInto('users').values(newUser(email)).execute()
  const secret = first.config.JWT_SECRET
  await first.close()

  const second = await buildApp({ env })
  t.teardown(() => second.close())
  const row = await second.db.selectFrom('users').select('email').where('email', '=', email).executeTakeFirst()
  t.same(row, { email }, 'the row survived the restart')
  t.equal(second.config.JWT_SECRET, secret, 'the same generated secret is used')

  // SPEC §3: the embedded database is one process's. While `second` holds it, another opener stops and names it.
  const lockFile = join(dataDir, 'pglite.lock')
  t.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, process.pid, 'the lock file names its holder')
  const refused = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH, NODE_ENV: 'test', DATA_DIR: dataDir },
    timeout: 60_000
  }).then(() => ({ code: 0, stderr: '' }), (err: { code: number, stderr: string }) => err)
  t.equal(refused.code, 1, 'a second process is refused')
  t.match(refused.stderr, `DATA_DIR: the embedded database in ${dataDir} is in use by process ${process.pid}`)
  t.notMatch(refused.stderr, /\n\s+at /, 'a sentence, not a stack trace')
  t.throws(() => lockDataDir(dataDir), /in use by this very process/, 'and so is a second opener in the same process')
  await second.close()
  t.notOk(existsSync(lockFile), 'closing releases the lock')

  // A holder killed without a chance to clean up leaves its lock behind: it is taken over.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' })
  writeFileSync(lockFile, JSON.stringify({ pid: Number(dead.stdout), since: new Date().toISOString(), command: 'killed' }))
  const third = await buildApp({ env })
  t.teardown(() => third.close())
  t.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, process.pid, 'a dead holder’s lock is taken over')
  t.same(await third.db.selectFrom('users').select('email').where('email', '=', email).executeTakeFirst(), { email })
})

// PostgreSQL's own error, raised on purpose: the driver, Kysely and the helper see exactly what a real one looks like.
const raise = (code: 'deadlock_detected' | 'serialization_failure') =>
  sql`do $$ begin raise exception 'injected' using errcode = ${sql.raw(`'${code}'`)}; end $$`

t.test(`on ${backend}, afterCommit hooks run once the transaction has committed`, async t => {
  const app = await build(t)
  const email = uniqueEmail('after-commit')
  let seen: unknown
  await app.transaction(async (trx, afterCommit) => {
    await trx.insertInto('users').values(newUser(email)).execute()
    // Outside the transaction: only a committed row is visible here (on the embedded database it would wait forever).
    afterCommit(async () => { seen = await app.db.selectFrom('users').select('email').where('email', '=', email).executeTakeFirst() })
  })
  t.same(seen, { email }, 'the hook ran, and saw the committed row')
})

t.test(`on ${backend}, an afterCommit hook never runs after a rollback`, async t => {
  const app = await build(t)
  const email = uniqueEmail('rolled-back')
  let ran = false
  await t.rejects(app.transaction(async (trx, afterCommit) => {
    await trx.insertInto('users').values(newUser(email)).execute()
    afterCommit(() => { ran = true })
    throw new Error('boom')
  }), /boom/)
  t.equal(ran, false, 'the hook queued before the failure did not run')
  t.equal(await app.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst(), undefined, 'nothing written')
})

t.test(`on ${backend}, a deadlock is retried from the start: one result, the failed try's hooks dropped`, async t => {
  const app = await build(t)
  const email = uniqueEmail('retried')
  const tries: number[] = []
  const hooks: number[] = []
  const result = await app.transaction(async (trx, afterCommit) => {
    const attempt = tries.push(tries.length + 1)
    await trx.insertInto('users').values(newUser(email)).execute()
    afterCommit(() => { hooks.push(attempt) })
    if (attempt === 1) await raise('deadlock_detected').execute(trx)
    return `done on try ${attempt}`
  })
  t.equal(result, 'done on try 2')
  t.same(tries, [1, 2], 'run twice')
  t.same(hooks, [2], "only the committed try's hook ran")
  const rows = await app.db.selectFrom('users').select('id').where('email', '=', email).execute()
  t.equal(rows.length, 1, 'the rolled-back try left nothing')
})

t.test(`on ${backend}, past the retry bound the answer is 503 service_unavailable, and the log keeps PostgreSQL's code`, async t => {
  const app = await build(t)
  const logged: unknown[][] = []
  const error = app.log.error.bind(app.log)
  app.log.error = ((...args: unknown[]) => { logged.push(args); return error(...(args as [object])) }) as typeof app.log.error
  let tries = 0
  let ran = false
  await t.rejects(app.transaction(async (trx, afterCommit) => {
    tries++
    afterCommit(() => { ran = true })
    await raise('serialization_failure').execute(trx)
  }), { code: 'service_unavailable', statusCode: 503 })
  t.equal(tries, 5, 'the first try and 4 retries')
  t.equal(ran, false, 'no hook ran')
  const entry = logged.find(([, message]) => message === 'transaction failed after retries')
  t.equal((entry?.[0] as { err?: { code?: string } } | undefined)?.err?.code, '40001')
})

t.test('on PostgreSQL, a real deadlock between two transactions: both succeed, one of them retried', {
  skip: realBackends ? false : 'needs PostgreSQL: the embedded database runs one transaction at a time'
}, async t => {
  const app = await build(t)
  const [a, b] = await Promise.all([newUser(), newUser()].map(u => app.db.insertInto('users').values(u).returning('id').executeTakeFirstOrThrow()))
  // Each holds its first row before either asks for its second: a barrier, not a sleep.
  const holding = (): { reached: Promise<void>, done: () => void } => {
    let done!: () => void
    return { reached: new Promise<void>(resolve => { done = resolve }), done }
  }
  const first = holding()
  const second = holding()
  let tries = 0
  const cross = (mine: string, theirs: string, me: typeof first, other: typeof first) => app.transaction(async trx => {
    tries++
    await trx.updateTable('users').set({ name: 'x' }).where('id', '=', mine).execute()
    me.done()
    await other.reached
    await trx.updateTable('users').set({ name: 'y' }).where('id', '=', theirs).execute()
    return 'ok'
  })
  t.same(await Promise.all([cross(a.id, b.id, first, second), cross(b.id, a.id, second, first)]), ['ok', 'ok'])
  t.equal(tries, 3, 'PostgreSQL chose one victim, which ran again')
})

t.test('on PostgreSQL, the connection cut while transactions are in flight: 503 service_unavailable with Retry-After, never 500, and recovery without a restart', {
  skip: realBackends ? false : 'needs PostgreSQL behind a TCP proxy'
}, async t => {
  const direct = await build(t)
  const proxy = await tcpProxy(t, process.env.DATABASE_URL as string)
  const viaProxy = new URL(process.env.DATABASE_URL as string)
  viaProxy.hostname = '127.0.0.1'
  viaProxy.port = String(proxy.port)
  const lines: string[] = []
  const app = await build(t, { DATABASE_URL: viaProxy.href, LOG_LEVEL: 'error' }, { logStream: { write: line => { lines.push(line) } } })
  const account = await register(app)
  const sessions = [account.tokens, ...await Promise.all([1, 2, 3, 4].map(i => login(app, account.email, `device ${i}`)))]

  // Each refresh stops inside its transaction, on an advisory lock this connection holds, until the cut.
  const key = Math.floor(Math.random() * 2 ** 31)
  const holder = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('select pg_advisory_lock($1)', [key])
  const remove = await dbFault(t, direct.db, { table: 'refresh_tokens', userId: account.id, plpgsql: `perform pg_advisory_xact_lock(${key});` })

  const inFlight = race(app, sessions.map(s => ({ url: '/auth/refresh', payload: { refreshToken: s.refreshToken } })))
  const waiting = async () => Number((await sql<{ n: string }>`select count(*) as n from pg_stat_activity
    where datname = current_database() and wait_event = 'advisory' and query like '%refresh_tokens%'`.execute(direct.db)).rows[0].n)
  while (await waiting() < sessions.length) await sleep(50)
  await proxy.close()

  const replies = await inFlight
  t.same(replies.map(r => [r.status, r.body?.code]), sessions.map(() => [503, 'service_unavailable']), 'every one 503 service_unavailable')
  t.ok(replies.every(r => Number(r.headers['retry-after']) > 0), 'each with Retry-After')
  const logged = lines.map(line => JSON.parse(line)).filter(entry => entry.msg === 'transaction failed and its rollback too: connection lost')
  t.ok(logged.length > 0 && logged.every(entry => /Connection terminated/.test(entry.err?.message)), 'the original error is what the log shows')

  await holder.query('select pg_advisory_unlock($1)', [key])
  await remove()
  await proxy.open()
  while ((await app.inject({ url: '/ready' })).statusCode !== 200) await sleep(100)
  for (const [i, s] of sessions.entries()) {
    t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: s.refreshToken } })).statusCode, 200, `session ${i + 1} refreshes again: nothing was half-written`)
  }
})
