import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { PGlite } from '@electric-sql/pglite'
import { Kysely, PGliteDialect, sql } from 'kysely'
import { SMTPServer } from 'smtp-server'
import { simpleParser } from 'mailparser'
import tap from 'tap'
import { buildApp, type LogStream } from '../app.js'
import type { Database } from '../db/schema.js'
import { migrateToLatest } from '../db/migrate.js'
import { embeddedStartParams } from '../plugins/infra/db.js'

type Test = { teardown (fn: () => unknown): void }
export type Env = Record<string, string | undefined>

// PGlite starts slowly and holds a lot of memory: one per test process,
// shared by every app the file builds; rows are kept apart by unique emails.
let sharedPglite: Promise<PGlite> | undefined

const root = fileURLToPath(new URL('..', import.meta.url))
const cacheDir = join(root, 'node_modules/.cache/latchkey')

// The template is named after what it holds: the PGlite release and the
// migrations (a changed or added migration makes a new one).
function templatePath (): string {
  const hash = createHash('sha256')
  hash.update(JSON.parse(readFileSync(join(root, 'node_modules/@electric-sql/pglite/package.json'), 'utf8')).version)
  const migrations = join(root, 'db/migrations')
  for (const name of readdirSync(migrations).sort()) hash.update(name).update(readFileSync(join(migrations, name)))
  return join(cacheDir, `pglite-${hash.digest('hex').slice(0, 16)}.tar.gz`)
}

// A fresh PGlite runs initdb and the migrations, which takes seconds; the
// data directory it leaves is dumped once and later test processes start from
// the dump, with nothing left to migrate.
async function openSharedPglite (): Promise<PGlite> {
  const templateFile = templatePath()
  let pglite: PGlite
  try {
    pglite = new PGlite({ loadDataDir: new Blob([readFileSync(templateFile)]), startParams: embeddedStartParams(PGlite) })
    await pglite.waitReady
  } catch {
    pglite = new PGlite({ startParams: embeddedStartParams(PGlite) })
    await migrateToLatest(new Kysely({ dialect: new PGliteDialect({ pglite }) }))
    const dump = await pglite.dumpDataDir('gzip')
    mkdirSync(cacheDir, { recursive: true })
    // Templates of older migrations go; files being written by another process stay.
    for (const old of readdirSync(cacheDir)) {
      if (/^pglite-.*\.tar\.gz$/.test(old) && join(cacheDir, old) !== templateFile) rmSync(join(cacheDir, old), { force: true })
    }
    // Written aside and renamed, so a process running beside this one never reads half a file.
    const partial = `${templateFile}.${process.pid}`
    writeFileSync(partial, Buffer.from(await dump.arrayBuffer()))
    renameSync(partial, templateFile)
  }
  // After a write PGlite keeps a 10 s timer alive: closed when the file's
  // tests are done, or every test process lingers that long before exiting.
  tap.teardown(() => pglite.close())
  return pglite
}

export const realBackends = process.env.DATABASE_URL !== undefined

/** The environment a test app runs with: the run's real backends when set, else the embedded ones. */
export function testEnv (overrides: Env = {}): Env {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    JWT_SECRET: 'test-secret-test-secret-test-secret-0123',
    APP_SECRET: 'test-app-secret-test-app-secret-0123456',
    DATA_DIR: mkdtempSync(join(tmpdir(), 'latchkey-test-')),
    DATABASE_URL: process.env.DATABASE_URL,
    REDIS_URL: process.env.REDIS_URL,
    // Rate-limit counters and cached state of one test never meet another's.
    CACHE_PREFIX: `latchkey-test-${randomUUID()}:`,
    RATE_LIMIT_ENABLED: 'false',
    ...overrides
  }
}

/** The app as the server builds it, closed when the test ends. */
export async function build (t: Test, overrides: Env = {}, options: { logStream?: LogStream } = {}) {
  const env = testEnv(overrides)
  const pglite = env.DATABASE_URL ? undefined : await (sharedPglite ??= openSharedPglite())
  const app = await buildApp({ env, pglite, logStream: options.logStream })
  t.teardown(() => app.close())
  return app
}

export function uniqueEmail (label = 'user'): string {
  return `${label}-${randomUUID()}@example.com`
}

export type App = Awaited<ReturnType<typeof build>>
export const password = 'correct horse battery staple'

export interface Tokens { accessToken: string, refreshToken?: string, tokenType: string, expiresIn: number, refreshExpiresIn?: number }
export interface Account { id: string, email: string, tokens: Tokens }

/** Registers a fresh account and returns its first tokens. */
export async function register (app: App, email = uniqueEmail()): Promise<Account> {
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password } })
  if (res.statusCode !== 201) throw new Error(`register: ${res.statusCode} ${res.body}`)
  const body = res.json()
  return { id: body.user.id, email, tokens: body.tokens }
}

/** A fresh account made admin by the operator (as `npm run admin:create` does), logged in again: its first tokens died with the promotion. */
export async function registerAdmin (app: App, email = uniqueEmail('admin')): Promise<Account> {
  const account = await register(app, email)
  await app.accounts.changeUser(null, account.id, { role: 'admin' })
  return { ...account, tokens: await login(app, email) }
}

/** Polls until `check` holds (a change reaching another instance), failing after `ms`; waits on the event, not on a guess of its delay. */
export async function eventually (check: () => Promise<boolean>, ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return true
    await sleep(5)
  }
  return await check()
}

/** Logs in again (another device) and returns the new tokens. */
export async function login (app: App, email: string, deviceName?: string): Promise<Tokens> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password, ...(deviceName && { deviceName }) } })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return res.json().tokens
}

/** A request with the access token. */
export function authed (app: App, accessToken: string, options: { method?: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object }) {
  return app.inject({ ...options, headers: { authorization: `Bearer ${accessToken}` } })
}

export function refresh (app: App, refreshToken: string | undefined) {
  return app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

export interface CaughtMail { to: string, subject: string, text: string, html: string }

export interface SmtpCatcher {
  /** The SMTP_URL that reaches it. */
  url: string
  /** Every message accepted so far, in order. */
  messages: CaughtMail[]
  /** The messages sent to one address. */
  to (email: string): CaughtMail[]
  /** Stops listening: sends fail with a refused connection. */
  stop (): Promise<void>
  /** Listens again on the same port. */
  start (): Promise<void>
}

/**
 * A real SMTP server on 127.0.0.1 catching what the app sends through
 * nodemailer's SMTP transport; build the app with `SMTP_URL: smtp.url`.
 * A message is in `messages` by the time the app's send resolves.
 */
export async function startSmtp (t: Test): Promise<SmtpCatcher> {
  const messages: CaughtMail[] = []
  let server: SMTPServer | undefined
  let port = 0
  const catcher: SmtpCatcher = {
    url: '',
    messages,
    to: email => messages.filter(m => m.to === email.trim().toLowerCase()),
    async stop () {
      const running = server
      server = undefined
      if (running) await new Promise<void>(resolve => running.close(() => resolve()))
    },
    async start () {
      const next = new SMTPServer({
        authOptional: true,
        disabledCommands: ['STARTTLS', 'AUTH'],
        logger: false,
        onData (stream, _session, callback) {
          simpleParser(stream).then(mail => {
            const to = Array.isArray(mail.to) ? mail.to[0] : mail.to
            messages.push({ to: to?.value[0]?.address ?? '', subject: mail.subject ?? '', text: mail.text ?? '', html: mail.html || '' })
            callback()
          }, callback)
        }
      })
      await new Promise<void>((resolve, reject) => {
        next.server.once('error', reject)
        next.listen(port, '127.0.0.1', () => resolve())
      })
      port = (next.server.address() as AddressInfo).port
      catcher.url = `smtp://127.0.0.1:${port}`
      server = next
    }
  }
  await catcher.start()
  t.teardown(() => catcher.stop())
  return catcher
}

/** The 6-digit code a mail carries (the text body; the HTML body must show the same). */
export function mailedCode (mail: CaughtMail | undefined): string {
  const code = /\b([0-9]{6})\b/.exec(mail?.text ?? '')?.[1]
  if (code === undefined || !mail?.html.includes(code)) throw new Error(`no code in mail: ${JSON.stringify(mail)}`)
  return code
}

/** The newest code mailed to the address (after the mails in flight have gone out). */
export async function lastCode (app: App, smtp: SmtpCatcher, email: string): Promise<string> {
  await app.emailCodes.drain()
  return mailedCode(smtp.to(email).at(-1))
}

/** Registers an account and confirms its email with the mailed code. */
export async function registerVerified (app: App, smtp: SmtpCatcher, email = uniqueEmail()): Promise<Account> {
  const account = await register(app, email)
  const code = await lastCode(app, smtp, email)
  const res = await app.inject({ method: 'POST', url: '/auth/email/verify', payload: { email, code } })
  if (res.statusCode !== 200) throw new Error(`verify: ${res.statusCode} ${res.body}`)
  return account
}

/** A TCP port nothing listens on right now. */
export async function freePort (): Promise<number> {
  const probe = createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as AddressInfo
  await new Promise(resolve => probe.close(resolve))
  return port
}

/** A Redis of the test's own (to stop, stall or kill), ready when this resolves. */
export async function startRedis (port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const probe = new Redis({ port, lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 0 })
  // Refused connections until the server listens are expected, not worth a warning.
  probe.on('error', () => {})
  try {
    for (let i = 0; i < 100; i++) {
      if (await probe.ping().then(() => true, () => false)) return child
      await sleep(50)
    }
    throw new Error(`redis-server did not start on port ${port}`)
  } finally {
    probe.disconnect()
  }
}

/** A TCP proxy in front of a real server, which a test can cut and restore. */
export async function tcpProxy (t: Test, target: string) {
  const { hostname, port: targetPort } = new URL(target)
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let port = 0
  const proxy = {
    get port () { return port },
    async open () {
      const next = createServer(client => {
        const upstream = connect(Number(targetPort), hostname)
        const drop = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        sockets.add(client).add(upstream)
        client.on('error', drop).on('close', drop)
        upstream.on('error', drop).on('close', drop)
        client.pipe(upstream).pipe(client)
      })
      await new Promise<void>((resolve, reject) => {
        next.once('error', reject)
        next.listen(port, '127.0.0.1', () => resolve())
      })
      port = (next.address() as AddressInfo).port
      server = next
    },
    /** Refuses new connections and cuts the open ones, as a server going down does. */
    async close () {
      const running = server
      server = undefined
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      if (running) await new Promise<void>(resolve => running.close(() => resolve()))
    }
  }
  await proxy.open()
  t.teardown(() => proxy.close())
  return proxy
}

/**
 * A fault injected in the database itself: `plpgsql` runs before each insert of
 * the user's rows into `table`, with `calls` counting them (1 on the first,
 * across rollbacks), so PostgreSQL raises its own errors or waits mid-transaction.
 * Only the user's rows are touched, so other tests on the same database go on.
 * Returns the removal, which also runs when the test ends.
 */
export async function dbFault (t: Test, db: Kysely<Database>, fault: { table: 'refresh_tokens' | 'sessions', userId: string, plpgsql: string }) {
  const name = `latchkey_fault_${randomUUID().replaceAll('-', '')}`
  if (!/^[0-9a-f-]{36}$/.test(fault.userId)) throw new Error(`not a user id: ${fault.userId}`)
  await sql.raw(`create sequence ${name}_calls`).execute(db)
  await sql.raw(`create function ${name}() returns trigger language plpgsql as $fault$
    declare calls bigint;
    begin
      if new.user_id = '${fault.userId}' then
        calls := nextval('${name}_calls');
        ${fault.plpgsql}
      end if;
      return new;
    end $fault$`).execute(db)
  await sql.raw(`create trigger ${name} before insert on ${fault.table} for each row execute function ${name}()`).execute(db)
  let removed = false
  const remove = async () => {
    if (removed) return
    removed = true
    for (const statement of [`drop trigger ${name} on ${fault.table}`, `drop function ${name}()`, `drop sequence ${name}_calls`]) {
      await sql.raw(statement).execute(db)
    }
  }
  t.teardown(() => remove().catch(() => {}))
  return remove
}
