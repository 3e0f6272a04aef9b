import { randomUUID } from 'node:crypto'
import t from 'tap'
import { buildApp } from '../app.js'
import { authed, build, eventually, freePort, login, realBackends, refresh, register, startRedis, tcpProxy, testEnv, type App, type Tokens } from './helper.js'
import { stateChannel } from '../plugins/app/sessions/auth-state.js'

// Scale-out and Redis faults need a real PostgreSQL and Redis (.ci/run's second pass).
const skip = realBackends && process.env.REDIS_URL ? false : 'needs DATABASE_URL and REDIS_URL'

const profile = (app: App, tokens: Tokens) => authed(app, tokens.accessToken, { url: '/profile' })
/** Waits until the instance refuses the token: the fan-out's delay is the bench's to measure (npm run bench -- fanout), not a test's to guess. */
const refusedOn = (app: App, tokens: Tokens) => eventually(async () => (await profile(app, tokens)).statusCode === 401)

/** Resolves once the app has heard, through PostgreSQL's notifications, a change naming `id`. */
const heard = (app: App, id: string) => new Promise<void>(resolve => {
  app.notifications.on(stateChannel, payload => { if (payload.includes(id)) resolve() })
})

t.test('two instances on one PostgreSQL and one Redis behave as one service', { skip }, async t => {
  const shared = { CACHE_PREFIX: `latchkey-test-${randomUUID()}:` }
  const a = await build(t, shared)
  const b = await build(t, shared)

  t.test('a global logout on one instance is seen by the other', async t => {
    const account = await register(a)
    t.equal((await profile(b, account.tokens)).statusCode, 200, 'b has the state cached')
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
    t.ok(await refusedOn(b, account.tokens), 'b refuses it')
    const res = await profile(b, account.tokens)
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'token_revoked')
  })

  t.test('a session revoked on one instance dies on the other', async t => {
    const account = await register(a)
    const phone = await login(b, account.email, 'phone')
    t.equal((await profile(b, account.tokens)).statusCode, 200)
    t.equal((await profile(a, phone)).statusCode, 200)
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204)
    t.ok(await refusedOn(b, account.tokens), 'the logged-out session is refused on b')
    t.equal((await profile(b, phone)).statusCode, 200, 'the other session still works on b')
  })

  t.test('a load that raced a logout cannot write the old state back', async t => {
    const account = await register(a)
    // b misses both tiers and reads PostgreSQL; its write-back to Redis is held
    // (an injected delay) until a's logout has answered.
    let reached!: () => void
    let release!: () => void
    const atWrite = new Promise<void>(resolve => { reached = resolve })
    const held = new Promise<void>(resolve => { release = resolve })
    const original = b.cache.setIfVersion
    b.cache.setIfVersion = async (...args) => {
      reached()
      await held
      return original(...args)
    }
    t.teardown(() => { b.cache.setIfVersion = original })

    const concurrent = profile(b, account.tokens)
    await atWrite
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
    release()
    await concurrent
    t.equal((await profile(a, account.tokens)).statusCode, 401, 'refused on a at once, although b wrote after the logout')
    t.ok(await refusedOn(b, account.tokens), 'and on b')
  })

  t.test('a logout made while one instance had lost Redis reaches the others once it is back', async t => {
    const account = await register(a)
    t.equal((await profile(b, account.tokens)).statusCode, 200, 'b has the state cached')
    a.redis.disconnect()
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
    t.equal((await profile(a, account.tokens)).statusCode, 401, 'a refuses at once, from PostgreSQL')
    await a.redis.connect()
    t.ok(await eventually(async () => a.cache.healthy), 'a trusts Redis again')
    t.equal((await profile(b, account.tokens)).statusCode, 401, 'b has dropped what it cached meanwhile')
  })

  t.test('refresh rotation is shared: two tabs on two instances get one successor', async t => {
    const account = await register(a)
    const next = await refresh(a, account.tokens.refreshToken)
    t.equal(next.statusCode, 200)
    const tab = await refresh(b, account.tokens.refreshToken)
    t.equal(tab.statusCode, 200, 'a second tab on the other instance, within the interval')
    t.equal(tab.json().tokens.refreshToken, next.json().tokens.refreshToken, 'gets the same successor')
  })
})

t.test('the second fan-out path: PostgreSQL notifications reach an instance that lost Redis', { skip }, async t => {
  const shared = { CACHE_PREFIX: `latchkey-test-${randomUUID()}:` }
  const redis = await tcpProxy(t, process.env.REDIS_URL as string)
  const a = await build(t, shared)
  const b = await build(t, { ...shared, REDIS_URL: `redis://127.0.0.1:${redis.port}` })

  t.test('b with its Redis cut still refuses a token logged out on a, once the notification arrived', async t => {
    const account = await register(a)
    t.equal((await profile(b, account.tokens)).statusCode, 200, 'b has the state cached')
    // 'close', whatever the socket reported before it ('error' would reject events.once).
    const lost = new Promise(resolve => b.redis.once('close', resolve))
    await redis.close()
    await lost
    t.equal(b.cache.healthy, false, 'b has lost Redis')
    t.equal(b.notifications.healthy, true, 'and still listens to PostgreSQL, so its in-process copies stay trusted')
    t.equal((await profile(b, account.tokens)).statusCode, 200, 'b answers from its in-process copy')
    const arrived = heard(b, account.id)
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })).statusCode, 204)
    await arrived
    const res = await profile(b, account.tokens)
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'token_revoked')
    await redis.open()
  })

  t.test('with both paths up, the duplicate changes nothing', async t => {
    const account = await register(a)
    const phone = await login(a, account.email, 'phone')
    t.equal((await profile(b, account.tokens)).statusCode, 200)
    t.equal((await profile(b, phone)).statusCode, 200)
    const sid = JSON.parse(Buffer.from(account.tokens.accessToken.split('.')[1], 'base64url').toString()).sid
    const arrived = heard(b, sid)
    t.equal((await authed(a, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })).statusCode, 204)
    await arrived
    t.equal((await profile(b, account.tokens)).statusCode, 401, 'the ended session is refused on b')
    t.equal((await profile(b, phone)).statusCode, 200, 'the other one works, cached again')
    // The same announcement once more, as a late duplicate from either path.
    const again = heard(b, account.id)
    await b.authState.invalidate({ users: [account.id] })
    await again
    t.equal((await profile(b, account.tokens)).statusCode, 401, 'still refused')
    t.equal((await profile(b, phone)).statusCode, 200, 'still accepted')
  })
})

t.test('Redis faults: requests are answered from PostgreSQL and revoked tokens stay revoked', { skip }, async t => {
  const port = await freePort()
  let redis = await startRedis(port)
  t.teardown(() => { redis.kill('SIGKILL') })
  const app = await build(t, { REDIS_URL: `redis://127.0.0.1:${port}` })

  t.test('Redis stopped mid-run', async t => {
    const account = await register(app)
    const phone = await login(app, account.email, 'phone')
    t.equal((await profile(app, account.tokens)).statusCode, 200, 'state cached while Redis is up')

    redis.kill('SIGKILL')
    await new Promise(resolve => redis.once('exit', resolve))

    t.equal((await profile(app, phone)).statusCode, 200, 'a valid token still works, read from PostgreSQL')
    const out = await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout', payload: { scope: 'local' } })
    t.equal(out.statusCode, 204, 'logout still works')
    const revoked = await profile(app, account.tokens)
    t.equal(revoked.statusCode, 401, 'the revoked token is refused although its state was cached')
    t.equal(revoked.json().code, 'token_revoked')
    t.equal((await refresh(app, phone.refreshToken)).statusCode, 200, 'refresh works')
    const ready = await app.inject({ url: '/ready' })
    // The service works without Redis, so a load balancer must keep it (SPEC §3): degraded, not 503.
    t.equal(ready.statusCode, 200, '/ready stays up without Redis')
    t.match(ready.json(), { status: 'degraded', cache: 'unreachable' }, '/ready reports the cache as unreachable')

    redis = await startRedis(port)
    t.ok(await eventually(async () => (await app.inject({ url: '/ready' })).json().status === 'ok', 20_000), 'ready again once Redis is back')
    t.equal((await profile(app, account.tokens)).statusCode, 401, 'still revoked after Redis returns')
    t.equal((await profile(app, phone)).statusCode, 200)
  })

  t.test('Redis stalled: stale cached state is dropped before Redis is trusted again', async t => {
    const account = await register(app)
    t.equal((await profile(app, account.tokens)).statusCode, 200, 'state cached in Redis')

    redis.kill('SIGSTOP')
    t.teardown(() => { redis.kill('SIGCONT') })
    const out = await authed(app, account.tokens.accessToken, { method: 'POST', url: '/auth/logout' })
    t.equal(out.statusCode, 204, 'logout answers while Redis hangs')
    t.equal((await profile(app, account.tokens)).statusCode, 401, 'refused while Redis hangs')

    redis.kill('SIGCONT')
    t.ok(await eventually(async () => app.cache.healthy, 20_000), 'the cache is trusted again once it has been emptied')
    // Redis still holds the pre-logout state it cached; it must not come back.
    for (let i = 0; i < 3; i++) {
      const res = await profile(app, account.tokens)
      t.equal(res.statusCode, 401, `refused after Redis resumes (${i + 1})`)
    }
  })
})

t.test('the service closes cleanly while Redis is down', { skip }, async t => {
  const port = await freePort()
  const redis = await startRedis(port)
  t.teardown(() => { redis.kill('SIGKILL') })
  const app = await buildApp({ env: testEnv({ REDIS_URL: `redis://127.0.0.1:${port}` }) })
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  redis.kill('SIGKILL')
  await new Promise(resolve => redis.once('exit', resolve))
  await t.resolves(app.close(), 'close resolves: the pool and the dead Redis connection are let go')
})
