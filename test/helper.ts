import { randomUUID } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { buildApp } from '../app.js'

type Test = { teardown (fn: () => unknown): void }
export type Env = Record<string, string | undefined>

// PGlite starts slowly and holds a lot of memory: one per test process,
// shared by every app the file builds; rows are kept apart by unique emails.
let sharedPglite: PGlite | undefined

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
  const pglite = env.DATABASE_URL ? undefined : (sharedPglite ??= new PGlite())
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
