import { randomBytes } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import fp from 'fastify-plugin'
import envSchema from 'env-schema'
import { Type, type Static, type TSchema } from '@sinclair/typebox'

// A duration is whole seconds, or a number with a unit: 300, 90s, 5m, 2h, 1d.
const Duration = (fallback: string) => Type.String({ pattern: '^[0-9]+(s|m|h|d)?$', default: fallback })
const Bool = (fallback: boolean) => Type.Boolean({ default: fallback })
const Count = (fallback: number, minimum = 1) => Type.Integer({ minimum, default: fallback })

export const EnvSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  HOST: Type.String({ default: '127.0.0.1' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  DATA_DIR: Type.String({ default: './.data' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
  TRUST_PROXY: Type.String({ default: 'false' }),
  CORS_ORIGINS: Type.Optional(Type.String()),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  HEADERS_TIMEOUT: Duration('10s'),
  REQUEST_TIMEOUT: Duration('30s'),
  KEEP_ALIVE_TIMEOUT: Duration('5s'),
  CONNECTION_TIMEOUT: Duration('60s'),
  SHUTDOWN_GRACE: Duration('10s'),

  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_POOL_MAX: Count(10),
  MIGRATE_ON_START: Bool(true),

  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  REDIS_CONNECT_TIMEOUT: Duration('2s'),
  REDIS_COMMAND_TIMEOUT_MS: Count(500),
  CACHE_PREFIX: Type.String({ default: 'latchkey:' }),
  STATE_CACHE_TTL: Duration('5m'),

  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://' })),
  MAIL_FROM: Type.String({ default: 'latchkey <no-reply@latchkey.local>' }),

  JWT_SECRET: Type.Optional(Type.String({ minLength: 32 })),
  JWT_ALGORITHM: Type.Union(['HS256', 'HS384', 'HS512', 'RS256', 'ES256', 'EdDSA'].map(a => Type.Literal(a)), { default: 'HS256' }),
  JWT_PRIVATE_KEY: Type.Optional(Type.String()),
  JWT_PRIVATE_KEY_FILE: Type.Optional(Type.String()),
  JWT_KEY_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$' })),
  JWT_PREVIOUS_SECRETS: Type.Optional(Type.String()),
  JWT_PREVIOUS_PUBLIC_KEYS: Type.Optional(Type.String()),
  JWT_PREVIOUS_PUBLIC_KEYS_FILE: Type.Optional(Type.String()),
  JWT_NEXT_PUBLIC_KEY: Type.Optional(Type.String()),
  JWT_NEXT_PUBLIC_KEY_FILE: Type.Optional(Type.String()),
  JWKS_MAX_AGE: Duration('300'),
  TOKEN_ENCRYPTION_KEY: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' })),
  TOKEN_ENCRYPTION_PREVIOUS_KEYS: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{43}(,[A-Za-z0-9_-]{43})*$' })),
  APP_SECRET: Type.Optional(Type.String({ minLength: 32 })),
  JWT_ISSUER: Type.String({ minLength: 1, default: 'latchkey' }),
  JWT_AUDIENCE: Type.String({ minLength: 1, default: 'latchkey' }),
  JWT_LEEWAY: Duration('0'),
  ACCESS_TOKEN_TTL: Duration('5m'),
  REFRESH_TOKEN_TTL: Duration('1d'),
  ROTATE_REFRESH_TOKENS: Bool(true),
  BLACKLIST_AFTER_ROTATION: Bool(true),
  REFRESH_REUSE_INTERVAL: Duration('10s'),
  REFRESH_COOKIE: Type.Union([Type.Literal('off'), Type.Literal('on')], { default: 'off' }),
  FLUSH_EXPIRED_INTERVAL: Duration('1h'),
  AUDIT_RETENTION: Duration('90d'),
  REVOCATION_FEED_TOKEN: Type.Optional(Type.String({ minLength: 32 })),

  DEVICE_LIMIT: Type.Integer({ minimum: 0, default: 0 }),
  DEVICE_LIMIT_POLICY: Type.Union([Type.Literal('reject'), Type.Literal('evict_oldest')], { default: 'reject' }),
  TOKEN_BINDING: Type.Union([Type.Literal('none'), Type.Literal('device'), Type.Literal('ip'), Type.Literal('device+ip')], { default: 'none' }),
  SESSION_IDLE_TIMEOUT: Duration('0'),
  SESSION_MAX_LIFETIME: Duration('30d'),
  DPOP: Type.Union([Type.Literal('off'), Type.Literal('allowed'), Type.Literal('required')], { default: 'allowed' }),
  DPOP_PROOF_MAX_AGE: Duration('60s'),

  PASSWORD_MIN_LENGTH: Type.Integer({ minimum: 8, maximum: 128, default: 8 }),

  OTP_TTL: Duration('10m'),
  OTP_MAX_ATTEMPTS: Count(5),
  OTP_RESEND_COOLDOWN: Duration('60s'),
  OTP_DAILY_FAILURE_LIMIT: Count(20),

  RATE_LIMIT_ENABLED: Bool(true),
  RATE_LIMIT_GLOBAL_MAX: Count(300),
  RATE_LIMIT_GLOBAL_WINDOW: Duration('1m'),
  RATE_LIMIT_LOGIN_IP_MAX: Count(10),
  RATE_LIMIT_LOGIN_IP_WINDOW: Duration('1m'),
  RATE_LIMIT_LOGIN_EMAIL_MAX: Count(5),
  RATE_LIMIT_LOGIN_EMAIL_WINDOW: Duration('15m'),
  RATE_LIMIT_REGISTER_IP_MAX: Count(5),
  RATE_LIMIT_REGISTER_IP_WINDOW: Duration('1m'),
  RATE_LIMIT_REFRESH_IP_MAX: Count(60),
  RATE_LIMIT_REFRESH_IP_WINDOW: Duration('1m'),
  RATE_LIMIT_VERIFY_IP_MAX: Count(10),
  RATE_LIMIT_VERIFY_IP_WINDOW: Duration('1m'),
  RATE_LIMIT_MAIL_EMAIL_MAX: Count(3),
  RATE_LIMIT_MAIL_EMAIL_WINDOW: Duration('10m')
})

type Env = Static<typeof EnvSchema>
type DurationKey = {
  [K in keyof Env]-?: Env[K] extends string ? (K extends `${string}_TTL` | `${string}_WINDOW` | `${string}_INTERVAL` | `${string}_COOLDOWN` | `${string}_TIMEOUT` | 'JWT_LEEWAY' | 'JWKS_MAX_AGE' | 'SHUTDOWN_GRACE' | 'SESSION_MAX_LIFETIME' | 'AUDIT_RETENTION' | 'DPOP_PROOF_MAX_AGE' ? K : never) : never
}[keyof Env]

/** The environment, validated, with durations in seconds and the secrets resolved (JWT_SECRET under HS* only). */
export type Config = Omit<Env, DurationKey | 'TRUST_PROXY' | 'JWT_ALGORITHM' | 'CORS_ORIGINS'> & Record<DurationKey, number> & {
  JWT_ALGORITHM: Algorithm
  APP_SECRET: string
  TRUST_PROXY: TrustProxy
  /** Exact origins allowed by CORS; empty = no CORS headers at all. */
  CORS_ORIGINS: string[]
}

export type Algorithm = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'ES256' | 'EdDSA'

const units: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }
const durationKeys = Object.entries(EnvSchema.properties)
  .filter(([, schema]) => 'pattern' in schema && schema.pattern === Duration('0').pattern)
  .map(([key]) => key as DurationKey)

function seconds (value: string): number {
  const unit = value.at(-1) as string
  return unit in units ? Number(value.slice(0, -1)) * units[unit] : Number(value)
}

type TrustProxy = boolean | string | ((address: string, hop: number) => boolean)

// `true`/`false`, a hop count, or a comma-separated list of trusted addresses or CIDRs.
function trustProxy (value: string): TrustProxy {
  if (value === 'true' || value === 'false') return value === 'true'
  if (/^[0-9]+$/.test(value)) {
    const hops = Number(value)
    return (_address, hop) => hop < hops
  }
  return value
}

// Outside production a missing secret is generated once and kept beside the
// embedded database, so tokens and email codes survive restarts of `npm start`.
function resolveSecret (env: Env, name: 'JWT_SECRET' | 'APP_SECRET', fileName: string, why: string): string {
  const given = env[name]
  if (given) return given
  if (env.NODE_ENV === 'production') {
    throw new Error(`${name} is required when NODE_ENV=production (at least 32 characters; ${why})`)
  }
  const dir = resolve(env.DATA_DIR)
  const file = join(dir, fileName)
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true })
    // Written whole under a private name, then linked into place, which fails if
    // the file exists: of two first starts on one DATA_DIR, both read one secret.
    const draft = `${file}.${process.pid}`
    writeFileSync(draft, randomBytes(48).toString('base64url') + '\n', { mode: 0o600 })
    try {
      linkSync(draft, file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    } finally {
      unlinkSync(draft)
    }
  }
  const secret = readFileSync(file, 'utf8').trim()
  if (secret.length < 32) throw new Error(`${file} must hold a secret of at least 32 characters (${name}); delete it to generate a new one`)
  return secret
}

/** Every problem with the environment at once, each naming its variable; thrown before anything starts. */
export class ConfigError extends Error {
  constructor (readonly problems: string[]) {
    super(`The configuration has ${problems.length === 1 ? 'a problem' : `${problems.length} problems`}:\n${problems.map(p => `  ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

// What a variable accepts, in words, for the message when its value does not fit.
const urlForms: Record<string, string> = {
  DATABASE_URL: 'a URL starting with postgres:// or postgresql://',
  REDIS_URL: 'a URL starting with redis:// or rediss://',
  SMTP_URL: 'a URL starting with smtp:// or smtps://'
}

function acceptedForm (name: string): string {
  const schema = EnvSchema.properties[name as keyof Env] as TSchema & Record<string, any>
  if (name in urlForms) return urlForms[name]
  if (schema.pattern === Duration('0').pattern) return 'a number of seconds, or a number with s, m, h or d'
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: { const: unknown }) => s.const).join(', ')}`
  if (schema.type === 'boolean') return 'true or false'
  if (schema.type === 'integer') {
    return schema.maximum === undefined ? `a whole number, at least ${schema.minimum}` : `a whole number from ${schema.minimum} to ${schema.maximum}`
  }
  if (schema.minLength !== undefined) return `at least ${schema.minLength} characters`
  return 'a string'
}

// Values worth echoing back; secrets, keys, tokens and URLs (which may carry a password) are not.
const echoable = (name: string) => !/SECRET|_KEYS?$|_FEED_TOKEN$|_URL$/.test(name)

const origin = /^https?:\/\/[^/\s?#]+$/

export function loadConfig (env: Record<string, string | undefined> = process.env, dotenv = false): Config {
  // Empty values count as unset, as they do in most .env tooling.
  const data: Record<string, string> = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')) as Record<string, string>
  const problems = new Map<string, string>()
  const problem = (name: string, text: string) => { if (!problems.has(name)) problems.set(name, `${name}: ${text}`) }

  let parsed: Env
  try {
    parsed = envSchema<Env>({ schema: EnvSchema, data, env: false, dotenv })
  } catch (err) {
    const invalid = (err as { errors?: Array<{ instancePath: string, params: { missingProperty?: string } }> }).errors
    if (!invalid) throw err
    for (const e of invalid) {
      const name = e.instancePath.replace(/^\//, '').split('/')[0] || e.params.missingProperty || ''
      if (!(name in EnvSchema.properties)) continue
      const value = data[name]
      problem(name, acceptedForm(name) + (echoable(name) && value !== undefined ? ` (got "${value}")` : ''))
      delete data[name]
    }
    // The rest is checked with the wrong values left out, so every problem is reported in one go.
    parsed = envSchema<Env>({ schema: EnvSchema, data, env: false, dotenv })
  }

  const config = { ...parsed } as unknown as Config
  for (const key of durationKeys) config[key] = seconds(parsed[key] as string)
  config.TRUST_PROXY = trustProxy(parsed.TRUST_PROXY)
  config.CORS_ORIGINS = (parsed.CORS_ORIGINS ?? '').split(',').map(o => o.trim()).filter(Boolean)
  // A secret refused above is not generated in its place; an asymmetric
  // deployment signs with its private key and needs no HMAC secret.
  const secrets = [
    ['JWT_SECRET', 'jwt-secret', 'the token-signing secret', parsed.JWT_ALGORITHM.startsWith('HS')],
    ['APP_SECRET', 'app-secret', 'the root of the email-code key', true]
  ] as const
  for (const [name, fileName, why, needed] of secrets) {
    if (!needed || problems.has(name)) continue
    try {
      config[name] = resolveSecret(parsed, name, fileName, why)
    } catch (err) {
      const [, named = name, text = (err as Error).message] = /^([A-Z][A-Z0-9_]+) (?:is )?(.*)$/s.exec((err as Error).message) ?? []
      problem(named, text)
    }
  }

  const bad = config.CORS_ORIGINS.filter(o => !origin.test(o))
  if (bad.length > 0) problem('CORS_ORIGINS', `comma-separated origins such as https://app.example.com (scheme and host, no path); not ${bad.join(', ')}`)
  if (parsed.NODE_ENV === 'production') {
    // A misspelt DATABASE_URL must not silently run production on a file in DATA_DIR.
    if (!parsed.DATABASE_URL) problem('DATABASE_URL', 'required when NODE_ENV=production (the embedded database is for development)')
    // Without SMTP the one-time codes are written to the log: fine on a laptop, never in production.
    if (!parsed.SMTP_URL) problem('SMTP_URL', 'required when NODE_ENV=production (without it, email codes would be written to the log)')
  }
  // setInterval cannot wait longer than 2^31 - 1 ms; past it the flush would run back to back.
  if (config.FLUSH_EXPIRED_INTERVAL > 24 * 86400) problem('FLUSH_EXPIRED_INTERVAL', 'at most 24d (0 turns the periodic flush off)')
  // Node refuses a header timeout longer than the request timeout it is part of.
  if (config.REQUEST_TIMEOUT > 0 && config.HEADERS_TIMEOUT > config.REQUEST_TIMEOUT) {
    problem('HEADERS_TIMEOUT', `at most REQUEST_TIMEOUT (${config.REQUEST_TIMEOUT}s)`)
  }
  if (config.HEADERS_TIMEOUT === 0) problem('HEADERS_TIMEOUT', 'more than 0 (a client sending its headers slowly would hold a socket forever)')
  // 0 would end every session the moment it opens.
  if (config.SESSION_MAX_LIFETIME === 0) problem('SESSION_MAX_LIFETIME', 'longer than 0')

  if (problems.size > 0) throw new ConfigError([...problems.values()])
  return config
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export default fp<{ config: Config }>(async (app, opts) => {
  app.decorate('config', opts.config)
}, { name: 'config' })
