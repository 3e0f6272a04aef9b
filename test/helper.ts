import { randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PGlite } from '@electric-sql/pglite'
import tap from 'tap'
import { buildApp } from '../app.js'

type Test = { teardown (fn: () => unknown): void }
export type Env = Record<string, string | undefined>

// PGlite starts slowly and holds a lot of memory: one per test process,
// shared by every app the file builds; rows are kept apart by unique emails.
let sharedPglite: Promise<PGlite> | undefined

const root = fileURLToPath(new URL('..', import.meta.url))
const pgliteVersion = JSON.parse(readFileSync(join(root, 'node_modules/@electric-sql/pglite/package.json'), 'utf8')).version
const templateFile = join(root, 'node_modules/.cache/latchkey', `pglite-${pgliteVersion}.tar.gz`)

// A fresh PGlite runs initdb, which takes seconds; the data directory it
// leaves is dumped once and every later test process starts from the dump.
async function openSharedPglite (): Promise<PGlite> {
  let pglite: PGlite
  try {
    pglite = new PGlite({ loadDataDir: new Blob([readFileSync(templateFile)]) })
    await pglite.waitReady
  } catch {
    pglite = new PGlite()
    await pglite.waitReady
    const dump = await pglite.dumpDataDir('gzip')
    mkdirSync(join(templateFile, '..'), { recursive: true })
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
export async function build (t: Test, overrides: Env = {}) {
  const env = testEnv(overrides)
  const pglite = env.DATABASE_URL ? undefined : await (sharedPglite ??= openSharedPglite())
  const app = await buildApp({ env, pglite })
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
