import { randomBytes } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import fp from 'fastify-plugin'
import envSchema from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'

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
  FLUSH_EXPIRED_INTERVAL: Duration('1h'),

  DEVICE_LIMIT: Type.Integer({ minimum: 0, default: 0 }),
  DEVICE_LIMIT_POLICY: Type.Union([Type.Literal('reject'), Type.Literal('evict_oldest')], { default: 'reject' }),
  TOKEN_BINDING: Type.Union([Type.Literal('none'), Type.Literal('device'), Type.Literal('ip'), Type.Literal('device+ip')], { default: 'none' }),
  SESSION_IDLE_TIMEOUT: Duration('0'),
  SESSION_MAX_LIFETIME: Duration('30d'),

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
  [K in keyof Env]-?: Env[K] extends string ? (K extends `${string}_TTL` | `${string}_WINDOW` | `${string}_INTERVAL` | `${string}_COOLDOWN` | 'JWT_LEEWAY' | 'JWKS_MAX_AGE' | 'REDIS_CONNECT_TIMEOUT' | 'SESSION_IDLE_TIMEOUT' | 'SESSION_MAX_LIFETIME' ? K : never) : never
}[keyof Env]

/** The environment, validated, with durations in seconds and the secrets resolved (JWT_SECRET under HS* only). */
export type Config = Omit<Env, DurationKey | 'TRUST_PROXY' | 'JWT_ALGORITHM'> & Record<DurationKey, number> & {
  JWT_ALGORITHM: Algorithm
  APP_SECRET: string
  TRUST_PROXY: TrustProxy
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

export function loadConfig (env: Record<string, string | undefined> = process.env, dotenv = false): Config {
  // Empty values count as unset, as they do in most .env tooling.
  const data = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''))
  const parsed = envSchema<Env>({ schema: EnvSchema, data, env: false, dotenv })
  const config = { ...parsed } as unknown as Config
  for (const key of durationKeys) config[key] = seconds(parsed[key] as string)
  config.TRUST_PROXY = trustProxy(parsed.TRUST_PROXY)
  // An asymmetric deployment signs with its private key and needs no HMAC secret.
  if (parsed.JWT_ALGORITHM.startsWith('HS')) config.JWT_SECRET = resolveSecret(parsed, 'JWT_SECRET', 'jwt-secret', 'the token-signing secret')
  config.APP_SECRET = resolveSecret(parsed, 'APP_SECRET', 'app-secret', 'the root of the email-code key')
  // Without SMTP the one-time codes are written to the log: fine on a laptop, never in production.
  if (parsed.NODE_ENV === 'production' && !parsed.SMTP_URL) {
    throw new Error('SMTP_URL is required when NODE_ENV=production (without it, email codes would be written to the log)')
  }
  // setInterval cannot wait longer than 2^31 - 1 ms; past it the flush would run back to back.
  if (config.FLUSH_EXPIRED_INTERVAL > 24 * 86400) {
    throw new Error('FLUSH_EXPIRED_INTERVAL must be at most 24d (0 turns the periodic flush off)')
  }
  // 0 would end every session the moment it opens.
  if (config.SESSION_MAX_LIFETIME === 0) throw new Error('SESSION_MAX_LIFETIME must be longer than 0')
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
