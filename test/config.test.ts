import { mkdtempSync, readFileSync, statSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ConfigError, EnvSchema, loadConfig } from '../config.js'
import { build, testEnv } from './helper.js'

const tempDir = () => mkdtempSync(join(tmpdir(), 'latchkey-config-'))

t.test('with nothing set, the documented defaults apply', async t => {
  // Only what a bare `npm start` in a test process would have: no secret, an empty data directory.
  const config = loadConfig({ NODE_ENV: 'test', DATA_DIR: tempDir() })
  t.equal(config.HOST, '127.0.0.1')
  t.equal(config.PORT, 3000)
  t.equal(config.LOG_LEVEL, 'info')
  t.equal(config.DATABASE_URL, undefined)
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.SMTP_URL, undefined)
  t.equal(config.MIGRATE_ON_START, true)
  t.equal(config.TRUST_PROXY, false)
  t.equal(config.JWT_ALGORITHM, 'HS256')
  t.equal(config.JWT_ISSUER, 'latchkey')
  t.equal(config.JWT_AUDIENCE, 'latchkey')
  t.equal(config.JWT_LEEWAY, 0)
  t.equal(config.ACCESS_TOKEN_TTL, 5 * 60)
  t.equal(config.REFRESH_TOKEN_TTL, 24 * 60 * 60)
  t.equal(config.ROTATE_REFRESH_TOKENS, true)
  t.equal(config.BLACKLIST_AFTER_ROTATION, true)
  t.equal(config.REFRESH_REUSE_INTERVAL, 10)
  t.equal(config.OTP_TTL, 10 * 60)
  t.equal(config.OTP_MAX_ATTEMPTS, 5)
  t.equal(config.OTP_RESEND_COOLDOWN, 60)
  t.equal(config.PASSWORD_MIN_LENGTH, 8)
  t.equal(config.RATE_LIMIT_ENABLED, true)
  t.equal(config.DEVICE_LIMIT, 0)
  t.equal(config.DEVICE_LIMIT_POLICY, 'reject')
  t.equal(config.TOKEN_BINDING, 'none')
  t.equal(config.SESSION_IDLE_TIMEOUT, 0)
  t.equal(config.SESSION_MAX_LIFETIME, 30 * 86400)
})

t.test('the app exposes the validated configuration as app.config', async t => {
  const app = await build(t, { ACCESS_TOKEN_TTL: '90s', PORT: '4321' })
  t.equal(app.config.ACCESS_TOKEN_TTL, 90)
  t.equal(app.config.PORT, 4321)
})

t.test('empty values count as unset', async t => {
  const config = loadConfig({ NODE_ENV: 'test', DATA_DIR: tempDir(), PORT: '', ACCESS_TOKEN_TTL: '' })
  t.equal(config.PORT, 3000)
  t.equal(config.ACCESS_TOKEN_TTL, 300)
})

t.test('durations take seconds or a unit', async t => {
  const cases: Array<[string, number]> = [
    ['300', 300],
    ['0', 0],
    ['90s', 90],
    ['5m', 300],
    ['2h', 7200],
    ['1d', 86400]
  ]
  for (const [value, seconds] of cases) {
    const config = loadConfig(testEnv({ ACCESS_TOKEN_TTL: value, REFRESH_REUSE_INTERVAL: value }))
    t.equal(config.ACCESS_TOKEN_TTL, seconds, `ACCESS_TOKEN_TTL=${value}`)
    t.equal(config.REFRESH_REUSE_INTERVAL, seconds, `REFRESH_REUSE_INTERVAL=${value}`)
  }
})

t.test('a wrong value stops the boot with a message naming the variable', async t => {
  const cases: Record<string, string> = {
    PORT: 'abc',
    ACCESS_TOKEN_TTL: '5x',
    REFRESH_TOKEN_TTL: '1 day',
    MIGRATE_ON_START: 'maybe',
    NODE_ENV: 'staging',
    LOG_LEVEL: 'loud',
    DATABASE_URL: 'mysql://127.0.0.1/latchkey',
    REDIS_URL: 'http://127.0.0.1:6379',
    JWT_ALGORITHM: 'none',
    PASSWORD_MIN_LENGTH: '4',
    DEVICE_LIMIT: '-1',
    DEVICE_LIMIT_POLICY: 'evict_newest',
    TOKEN_BINDING: 'cookie',
    SESSION_IDLE_TIMEOUT: '10 minutes',
    SESSION_MAX_LIFETIME: '0'
  }
  for (const [name, value] of Object.entries(cases)) {
    await t.rejects(build(t, { [name]: value }), new RegExp(`\\b${name}\\b`), `${name}=${value}`)
  }
})

t.test('production without JWT_SECRET refuses to start and names JWT_SECRET', async t => {
  const dataDir = tempDir()
  await t.rejects(build(t, { NODE_ENV: 'production', JWT_SECRET: undefined, DATA_DIR: dataDir }), /JWT_SECRET/)
  t.notOk(existsSync(join(dataDir, 'jwt-secret')), 'no secret is generated in production')
})

t.test('production without SMTP_URL refuses to start and names SMTP_URL (codes must never go to the log)', async t => {
  await t.rejects(build(t, { NODE_ENV: 'production', SMTP_URL: undefined }), /SMTP_URL/)
  const config = loadConfig(testEnv({ NODE_ENV: 'production', SMTP_URL: 'smtp://127.0.0.1:2525', DATABASE_URL: 'postgres://db.internal/latchkey' }))
  t.equal(config.SMTP_URL, 'smtp://127.0.0.1:2525', 'with it (and a database), production starts')
})

t.test('production without DATABASE_URL refuses to start: a misspelt variable never runs production on the embedded database', async t => {
  const env = testEnv({ NODE_ENV: 'production', SMTP_URL: 'smtp://127.0.0.1:2525', DATABASE_URL: undefined, DATABSE_URL: 'postgres://db.internal/latchkey' })
  const err = await build(t, env).then(() => undefined, (err: unknown) => err)
  t.type(err, ConfigError)
  t.same((err as ConfigError).problems, ['DATABASE_URL: required when NODE_ENV=production (the embedded database is for development)'])
  t.notOk(existsSync(join(env.DATA_DIR as string, 'pglite')), 'no embedded database was created')
})

t.test('every problem is reported at once, each naming its variable and the accepted form', async t => {
  const err = await build(t, {
    NODE_ENV: 'production',
    JWT_SECRET: 'too-short',
    ACCESS_TOKEN_TTL: '5min',
    PORT: '80000',
    DATABASE_URL: 'mysql://root:hunter2@db/latchkey',
    REDIS_URL: undefined,
    SMTP_URL: 'smtp://mail.internal',
    LOG_LEVEL: 'loud',
    ROTATE_REFRESH_TOKENS: 'yes',
    CORS_ORIGINS: 'https://app.example.com,https://app.example.com/login'
  }).then(() => undefined, (err: unknown) => err)
  t.type(err, ConfigError)
  t.same([...(err as ConfigError).problems].sort(), [
    'ACCESS_TOKEN_TTL: a number of seconds, or a number with s, m, h or d (got "5min")',
    'CORS_ORIGINS: comma-separated origins such as https://app.example.com (scheme and host, no path); not https://app.example.com/login',
    'DATABASE_URL: a URL starting with postgres:// or postgresql://',
    'JWT_SECRET: at least 32 characters',
    'LOG_LEVEL: one of fatal, error, warn, info, debug, trace, silent (got "loud")',
    'PORT: a whole number from 0 to 65535 (got "80000")',
    'ROTATE_REFRESH_TOKENS: true or false (got "yes")'
  ])
  const message = (err as Error).message
  t.match(message, /^The configuration has 7 problems:\n/)
  t.notMatch(message, /too-short|hunter2/, 'neither the secret nor a password in a URL is echoed')
})

t.test('CORS_ORIGINS: a comma-separated list of exact origins; unset, none', async t => {
  t.same(loadConfig(testEnv()).CORS_ORIGINS, [])
  t.same(loadConfig(testEnv({ CORS_ORIGINS: 'https://app.example.com, http://localhost:5173' })).CORS_ORIGINS, ['https://app.example.com', 'http://localhost:5173'])
})

t.test('server timeouts: durations, the header timeout within the request timeout and never off', async t => {
  const config = loadConfig(testEnv())
  t.same([config.HEADERS_TIMEOUT, config.REQUEST_TIMEOUT, config.KEEP_ALIVE_TIMEOUT, config.CONNECTION_TIMEOUT, config.SHUTDOWN_GRACE], [10, 30, 5, 60, 10])
  t.throws(() => loadConfig(testEnv({ HEADERS_TIMEOUT: '1m', REQUEST_TIMEOUT: '30s' })), /HEADERS_TIMEOUT: at most REQUEST_TIMEOUT \(30s\)/)
  t.throws(() => loadConfig(testEnv({ HEADERS_TIMEOUT: '0' })), /HEADERS_TIMEOUT: more than 0/)
})

t.test('FLUSH_EXPIRED_INTERVAL beyond what a timer can wait is refused', async t => {
  await t.rejects(build(t, { FLUSH_EXPIRED_INTERVAL: '30d' }), /FLUSH_EXPIRED_INTERVAL/)
  t.equal((await build(t, { FLUSH_EXPIRED_INTERVAL: '24d' })).config.FLUSH_EXPIRED_INTERVAL, 24 * 86400)
})

t.test('a JWT_SECRET shorter than 32 characters is refused without echoing it', async t => {
  const secret = 'x'.repeat(31)
  const err = await build(t, { JWT_SECRET: secret }).then(() => undefined, (err: Error) => err)
  t.match(err?.message, /JWT_SECRET/)
  t.notMatch(err?.message, secret)
  const app = await build(t, { JWT_SECRET: 'y'.repeat(32) })
  t.equal(app.config.JWT_SECRET, 'y'.repeat(32), '32 characters are enough')
})

t.test('outside production a secret is generated once in DATA_DIR (mode 0600) and reused', async t => {
  const dataDir = join(tempDir(), 'not-yet-created')
  const first = await build(t, { JWT_SECRET: undefined, DATA_DIR: dataDir })
  const file = join(dataDir, 'jwt-secret')
  t.ok((first.config.JWT_SECRET ?? '').length >= 32, 'the generated secret is long enough')
  t.equal(readFileSync(file, 'utf8').trim(), first.config.JWT_SECRET)
  t.equal(statSync(file).mode & 0o777, 0o600)
  await first.close()

  const second = await build(t, { JWT_SECRET: undefined, DATA_DIR: dataDir })
  t.equal(second.config.JWT_SECRET, first.config.JWT_SECRET, 'the next start uses the same secret')

  const other = await build(t, { JWT_SECRET: undefined, DATA_DIR: tempDir() })
  t.not(other.config.JWT_SECRET, first.config.JWT_SECRET, 'another data directory gets its own secret')
})

t.test('.env.example lists every variable with its default', async t => {
  const file = fileURLToPath(new URL('../.env.example', import.meta.url))
  const documented = new Map<string, { value: string, commented: boolean }>()
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^(# )?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line)
    if (match) documented.set(match[2], { value: match[3].replace(/^"(.*)"$/, '$1'), commented: match[1] !== undefined })
  }
  for (const [name, schema] of Object.entries(EnvSchema.properties)) {
    const entry = documented.get(name)
    if (!entry) {
      t.fail(`${name} is missing from .env.example`)
      continue
    }
    const fallback = (schema as { default?: unknown }).default
    if (fallback === undefined) {
      t.ok(entry.commented, `${name} has no default, so .env.example shows it commented out`)
    } else {
      t.notOk(entry.commented, `${name} is set to its default in .env.example`)
      t.equal(entry.value, String(fallback), `${name}'s default in .env.example matches the schema`)
    }
  }
  for (const name of documented.keys()) {
    t.ok(name in EnvSchema.properties, `${name} in .env.example is a variable the service reads`)
  }
})
