import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { build, freePort, password, register, startRedis, uniqueEmail, type App, type Env } from '../../helper.js'

const on = (overrides: Env = {}): Env => ({ RATE_LIMIT_ENABLED: 'true', ...overrides })

function loginFrom (app: App, ip: string, email: string, pass = 'not the password', headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: pass }, remoteAddress: ip, headers })
}

/** A 429 as SPEC §11 and §12 describe it, with the plugin's headers. */
function assertLimited (t: Test, res: Awaited<ReturnType<App['inject']>>, max: number, window: number) {
  t.equal(res.statusCode, 429, 'answers 429')
  const body = res.json()
  t.same(body, { statusCode: 429, code: 'rate_limited', error: 'Too Many Requests', message: body.message })
  const retryAfter = Number(res.headers['retry-after'])
  t.ok(retryAfter >= 1 && retryAfter <= window, `Retry-After in seconds (${res.headers['retry-after']}), within the window of ${window}`)
  t.equal(res.headers['x-ratelimit-limit'], String(max), 'x-ratelimit-limit')
  t.equal(res.headers['x-ratelimit-remaining'], '0', 'x-ratelimit-remaining')
  t.ok(Number(res.headers['x-ratelimit-reset']) >= 1, 'x-ratelimit-reset')
}

t.test('login: per IP', async t => {
  const app = await build(t, on({ RATE_LIMIT_LOGIN_IP_MAX: '3', RATE_LIMIT_LOGIN_EMAIL_MAX: '100' }))
  const remaining = []
  for (let i = 0; i < 3; i++) {
    const res = await loginFrom(app, '10.0.0.1', uniqueEmail())
    t.equal(res.statusCode, 401, `attempt ${i + 1} is answered`)
    t.equal(res.json().code, 'invalid_credentials')
    remaining.push(res.headers['x-ratelimit-remaining'])
  }
  t.same(remaining, ['2', '1', '0'], 'x-ratelimit-remaining counts down')
  assertLimited(t, await loginFrom(app, '10.0.0.1', uniqueEmail()), 3, 60)

  t.test('a right password does not get past the limit', async t => {
    const account = await register(app)
    const res = await loginFrom(app, '10.0.0.1', account.email, password)
    t.equal(res.statusCode, 429)
    t.notOk(res.json().tokens, 'no tokens')
  })

  t.test('another IP has its own counter', async t => {
    const res = await loginFrom(app, '10.0.0.2', uniqueEmail())
    t.equal(res.statusCode, 401)
    t.equal(res.headers['x-ratelimit-remaining'], '2')
  })
})

t.test('login: per normalised email, whatever the IP', async t => {
  const app = await build(t, on({ RATE_LIMIT_LOGIN_IP_MAX: '100', RATE_LIMIT_LOGIN_EMAIL_MAX: '2' }))
  const account = await register(app)
  const [local, domain] = account.email.split('@')

  const first = await loginFrom(app, '10.0.1.1', `  ${local.toUpperCase()}@${domain.toUpperCase()} `)
  t.equal(first.statusCode, 401, 'a spelling of the email, from one IP')
  const second = await loginFrom(app, '10.0.1.2', account.email)
  t.equal(second.statusCode, 401, 'the stored spelling, from another IP')

  const third = await loginFrom(app, '10.0.1.3', `${local}@${domain.toUpperCase()} `, password)
  assertLimited(t, third, 2, 15 * 60)
  t.ok(Number(third.headers['retry-after']) > 60, 'the 15-minute window, not the per-IP one')
  t.notOk(third.json().tokens, 'even the right password, from a third IP')

  t.test('another email from the same IPs is not limited', async t => {
    const other = await register(app)
    const res = await loginFrom(app, '10.0.1.3', other.email, password)
    t.equal(res.statusCode, 200)
    t.type(res.json().tokens.accessToken, 'string')
  })

  t.test('an invalid body is refused before it is counted', async t => {
    const fresh = uniqueEmail()
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: fresh, password: 'x'.repeat(8), extra: 1 }, remoteAddress: '10.0.1.4' })
      t.equal(res.statusCode, 400)
      t.equal(res.json().code, 'validation_failed')
    }
    t.equal((await loginFrom(app, '10.0.1.4', fresh)).statusCode, 401, 'the email was not counted')
  })
})

t.test('register: per IP', async t => {
  const app = await build(t, on({ RATE_LIMIT_REGISTER_IP_MAX: '2' }))
  const emails = [uniqueEmail(), uniqueEmail(), uniqueEmail()]
  for (const email of emails.slice(0, 2)) {
    const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password }, remoteAddress: '10.0.2.1' })
    t.equal(res.statusCode, 201)
  }
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: emails[2], password }, remoteAddress: '10.0.2.1' })
  assertLimited(t, res, 2, 60)
  const row = await app.db.selectFrom('users').select('id').where('email', '=', emails[2]).executeTakeFirst()
  t.equal(row, undefined, 'the refused registration created no account')
  const elsewhere = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: emails[2], password }, remoteAddress: '10.0.2.2' })
  t.equal(elsewhere.statusCode, 201, 'another IP may register it')
})

t.test('the global limit per IP', async t => {
  const app = await build(t, on({ RATE_LIMIT_GLOBAL_MAX: '3' }))

  t.test('counts requests whatever their outcome, before authentication', async t => {
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ url: '/profile', remoteAddress: '10.0.3.1' })
      t.equal(res.statusCode, 401, `request ${i + 1}: no token`)
      t.equal(res.json().code, 'token_missing')
    }
    assertLimited(t, await app.inject({ url: '/profile', remoteAddress: '10.0.3.1' }), 3, 60)
    // A flood of forged tokens is limited the same way, instead of each being verified.
    const forged = await app.inject({ url: '/profile', remoteAddress: '10.0.3.1', headers: { authorization: 'Bearer a.b.c' } })
    t.equal(forged.statusCode, 429)
  })

  t.test('every protected route counts before authentication', async t => {
    const routes = [
      { method: 'GET', url: '/sessions' },
      { method: 'DELETE', url: '/sessions/00000000-0000-4000-8000-000000000000' },
      { method: 'PATCH', url: '/profile', payload: { name: 'x' } },
      { method: 'POST', url: '/auth/password/change', payload: { currentPassword: 'x', newPassword: 'y' } }
    ] as const
    for (const [i, route] of routes.entries()) {
      const remoteAddress = `10.0.3.${10 + i}`
      const forged = { ...route, remoteAddress, headers: { authorization: 'Bearer a.b.c' } }
      for (let n = 0; n < 3; n++) t.equal((await app.inject(forged)).statusCode, 401, `${route.method} ${route.url} ${n + 1}`)
      t.equal((await app.inject(forged)).statusCode, 429, `${route.method} ${route.url} is limited`)
    }
  })

  t.test('an authenticated caller is limited too', async t => {
    const account = await register(app)
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ url: '/profile', remoteAddress: '10.0.3.2', headers: { authorization: `Bearer ${account.tokens.accessToken}` } })
      t.equal(res.statusCode, 200, `request ${i + 1}`)
    }
    const res = await app.inject({ url: '/profile', remoteAddress: '10.0.3.2', headers: { authorization: `Bearer ${account.tokens.accessToken}` } })
    assertLimited(t, res, 3, 60)
  })

  t.test('POST /auth/token/verify counts under the global limit', async t => {
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token: 'a.b.c' }, remoteAddress: '10.0.3.3' })
      t.equal(res.statusCode, 401)
    }
    const res = await app.inject({ method: 'POST', url: '/auth/token/verify', payload: { token: 'a.b.c' }, remoteAddress: '10.0.3.3' })
    assertLimited(t, res, 3, 60)
  })

  t.test('health and readiness are never limited', async t => {
    for (let i = 0; i < 5; i++) {
      t.equal((await app.inject({ url: '/health', remoteAddress: '10.0.3.4' })).statusCode, 200)
    }
  })
})

t.test('X-Forwarded-For', async t => {
  const limits = { RATE_LIMIT_LOGIN_IP_MAX: '2', RATE_LIMIT_LOGIN_EMAIL_MAX: '100' }

  t.test('is ignored by default: the peer address is counted', async t => {
    const app = await build(t, on(limits))
    for (const [i, forwarded] of ['1.1.1.1', '2.2.2.2'].entries()) {
      const res = await loginFrom(app, '10.0.4.1', uniqueEmail(), undefined, { 'x-forwarded-for': forwarded })
      t.equal(res.statusCode, 401, `attempt ${i + 1}`)
    }
    const res = await loginFrom(app, '10.0.4.1', uniqueEmail(), undefined, { 'x-forwarded-for': '3.3.3.3' })
    assertLimited(t, res, 2, 60)
  })

  t.test('with TRUST_PROXY=true, the forwarded client is counted', async t => {
    const app = await build(t, on({ ...limits, TRUST_PROXY: 'true' }))
    for (const forwarded of ['1.1.1.1', '2.2.2.2', '3.3.3.3', '4.4.4.4']) {
      const res = await loginFrom(app, '10.0.4.2', uniqueEmail(), undefined, { 'x-forwarded-for': forwarded })
      t.equal(res.statusCode, 401, `client ${forwarded} behind one proxy`)
    }
    // One client behind two different proxies is still one client.
    t.equal((await loginFrom(app, '10.0.4.3', uniqueEmail(), undefined, { 'x-forwarded-for': '5.5.5.5' })).statusCode, 401)
    t.equal((await loginFrom(app, '10.0.4.4', uniqueEmail(), undefined, { 'x-forwarded-for': '5.5.5.5' })).statusCode, 401)
    assertLimited(t, await loginFrom(app, '10.0.4.5', uniqueEmail(), undefined, { 'x-forwarded-for': '5.5.5.5' }), 2, 60)
  })

  t.test('with TRUST_PROXY=1 (one hop), a spoofed first entry is not believed', async t => {
    const app = await build(t, on({ ...limits, TRUST_PROXY: '1' }))
    // The proxy appends the address it saw; whatever the client wrote before it is not trusted.
    for (const spoofed of ['7.7.7.1', '7.7.7.2']) {
      const res = await loginFrom(app, '10.0.4.6', uniqueEmail(), undefined, { 'x-forwarded-for': `${spoofed}, 6.6.6.6` })
      t.equal(res.statusCode, 401)
    }
    assertLimited(t, await loginFrom(app, '10.0.4.6', uniqueEmail(), undefined, { 'x-forwarded-for': '7.7.7.3, 6.6.6.6' }), 2, 60)
  })
})

t.test('RATE_LIMIT_ENABLED=false never answers 429', async t => {
  const app = await build(t, {
    RATE_LIMIT_ENABLED: 'false',
    RATE_LIMIT_GLOBAL_MAX: '1',
    RATE_LIMIT_LOGIN_IP_MAX: '1',
    RATE_LIMIT_LOGIN_EMAIL_MAX: '1',
    RATE_LIMIT_REGISTER_IP_MAX: '1'
  })
  const email = uniqueEmail()
  for (let i = 0; i < 4; i++) {
    const login = await loginFrom(app, '10.0.5.1', email)
    t.equal(login.statusCode, 401, `login ${i + 1}`)
    t.equal(login.headers['x-ratelimit-limit'], undefined, 'no rate-limit headers')
    t.equal((await app.inject({ url: '/profile', remoteAddress: '10.0.5.1' })).statusCode, 401, `profile ${i + 1}`)
    const registered = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: uniqueEmail(), password }, remoteAddress: '10.0.5.1' })
    t.equal(registered.statusCode, 201, `register ${i + 1}`)
  }
})

// Counting in Redis needs a Redis (the real-backends run).
const skip = process.env.REDIS_URL ? false : 'needs REDIS_URL'

t.test('two instances sharing one Redis count one limit', { skip }, async t => {
  const shared = on({ CACHE_PREFIX: `latchkey-test-${randomUUID()}:`, RATE_LIMIT_LOGIN_IP_MAX: '3', RATE_LIMIT_LOGIN_EMAIL_MAX: '2' })
  const a = await build(t, shared)
  const b = await build(t, shared)

  t.test('per IP', async t => {
    t.equal((await loginFrom(a, '10.0.6.1', uniqueEmail())).statusCode, 401)
    t.equal((await loginFrom(b, '10.0.6.1', uniqueEmail())).statusCode, 401)
    t.equal((await loginFrom(a, '10.0.6.1', uniqueEmail())).statusCode, 401)
    assertLimited(t, await loginFrom(b, '10.0.6.1', uniqueEmail()), 3, 60)
    assertLimited(t, await loginFrom(a, '10.0.6.1', uniqueEmail()), 3, 60)
  })

  t.test('per email', async t => {
    const email = uniqueEmail()
    t.equal((await loginFrom(a, '10.0.6.2', email)).statusCode, 401)
    t.equal((await loginFrom(b, '10.0.6.3', email.toUpperCase())).statusCode, 401)
    assertLimited(t, await loginFrom(a, '10.0.6.4', email), 2, 15 * 60)
  })

  t.test('an instance with another prefix counts apart', async t => {
    const c = await build(t, on({ RATE_LIMIT_LOGIN_IP_MAX: '3' }))
    t.equal((await loginFrom(c, '10.0.6.1', uniqueEmail())).statusCode, 401)
  })
})

/** The reply, or a failure if it takes longer than a generous bound: a dead Redis must not make requests hang. */
async function answered (request: Promise<Awaited<ReturnType<App['inject']>>>) {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('no answer within 10 s')), 10_000) })
  try {
    return await Promise.race([request, hang])
  } finally {
    clearTimeout(timer)
  }
}

t.test('Redis unreachable: limits are counted in process, never a 500', { skip }, async t => {
  const port = await freePort()
  let redis = await startRedis(port)
  // Runs after the app is closed (teardowns run last-registered first).
  t.teardown(() => { redis.kill('SIGKILL') })
  const app = await build(t, on({ REDIS_URL: `redis://127.0.0.1:${port}`, RATE_LIMIT_LOGIN_IP_MAX: '3', RATE_LIMIT_LOGIN_EMAIL_MAX: '100' }))

  t.equal((await loginFrom(app, '10.0.7.1', uniqueEmail())).statusCode, 401, 'counted in Redis while it is up')
  const client = new Redis({ port })
  const keys = await client.keys('*rl:*').finally(() => client.disconnect())
  t.ok(keys.length > 0, 'the counter is in Redis')

  redis.kill('SIGKILL')
  await new Promise(resolve => redis.once('exit', resolve))

  const statuses = []
  for (let i = 0; i < 4; i++) {
    const res = await answered(loginFrom(app, '10.0.7.1', uniqueEmail()))
    statuses.push(res.statusCode)
  }
  t.same(statuses, [401, 401, 401, 429], 'counted afresh in process: three answered, the fourth limited')
  const limited = await answered(loginFrom(app, '10.0.7.1', uniqueEmail()))
  assertLimited(t, limited, 3, 60)
  const other = await answered(loginFrom(app, '10.0.7.2', uniqueEmail()))
  t.equal(other.statusCode, 401, 'another IP is still answered')
  const profile = await answered(app.inject({ url: '/profile', remoteAddress: '10.0.7.2' }))
  t.equal(profile.statusCode, 401, 'the global limit still answers too')
  t.equal(profile.json().code, 'token_missing')

  // Back to shared counting once Redis is: the new server starts empty, so
  // the in-process count (past the limit) no longer decides.
  redis = await startRedis(port)
  for (let i = 0; i < 50 && !app.cache.healthy; i++) await sleep(100)
  t.ok(app.cache.healthy, 'the cache trusts Redis again')
  // After a failed command the limiter keeps counting in process for a second.
  await sleep(1100)
  const back = await answered(loginFrom(app, '10.0.7.1', uniqueEmail()))
  t.equal(back.statusCode, 401, 'counted in Redis again')
  t.equal(back.headers['x-ratelimit-remaining'], '2')
})

t.test('a dropped pub/sub connection does not move counting out of Redis', { skip }, async t => {
  const port = await freePort()
  const redis = await startRedis(port)
  t.teardown(() => { redis.kill('SIGKILL') })
  const app = await build(t, on({ REDIS_URL: `redis://127.0.0.1:${port}`, RATE_LIMIT_GLOBAL_MAX: '3' }))
  const admin = new Redis({ port })
  t.teardown(() => admin.disconnect())
  // Redis answers commands throughout; only the cache's invalidation channel
  // is lost for a moment, so the cache distrusts what it holds.
  const hit = () => app.inject({ url: '/profile', remoteAddress: '10.0.8.1' })
  t.equal((await hit()).statusCode, 401)
  t.equal((await hit()).statusCode, 401)
  t.ok(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) >= 1, 'the subscriber connection was dropped')
  await sleep(20)
  t.equal((await hit()).statusCode, 401, 'the third request')
  const res = await hit()
  assertLimited(t, res, 3, 60)
})
