import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { sql } from 'kysely'
import { build, tcpProxy, uniqueEmail } from '../helper.js'

// Nothing listens on port 1: a database that is gone, on every machine.
const deadDatabase = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/latchkey', MIGRATE_ON_START: 'false' }

t.test('GET /ready is 503 service_unavailable with Retry-After while the database is gone', async t => {
  const app = await build(t, deadDatabase)
  const res = await app.inject({ url: '/ready' })
  t.equal(res.statusCode, 503)
  t.match(res.json(), { statusCode: 503, code: 'service_unavailable', error: 'Service Unavailable', message: /database/ })
  t.notMatch(res.body, /ECONNREFUSED|127\.0\.0\.1/, 'no connection details in the reply')
  t.ok(Number(res.headers['retry-after']) > 0, 'Retry-After tells the client when to come back')
})

t.test('while the database is gone, the process stays up and requests get 503, not 500', async t => {
  const app = await build(t, deadDatabase)
  for (let i = 0; i < 3; i++) {
    const ready = await app.inject({ url: '/ready' })
    t.equal(ready.statusCode, 503, `ready probe ${i + 1}`)
  }
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200, 'liveness still answers')
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: uniqueEmail(), password: 'correct horse battery staple' } })
  t.equal(login.statusCode, 503, 'a route that needs the database answers 503')
  t.equal(login.json().code, 'service_unavailable')
  t.ok(login.headers['retry-after'], 'with Retry-After')
})

t.test('GET /ready stays 200, reported as degraded, when only the cache (Redis) cannot be reached', async t => {
  const app = await build(t, { REDIS_URL: 'redis://127.0.0.1:1', REDIS_CONNECT_TIMEOUT: '0' })
  const res = await app.inject({ url: '/ready' })
  t.equal(res.statusCode, 200, 'the service works on the database alone: no load balancer takes it out')
  t.same(res.json(), { status: 'degraded', database: 'ok', cache: 'unreachable' })
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: uniqueEmail(), password: 'correct horse battery staple' } })
  t.equal(login.json().code, 'invalid_credentials', 'and requests are served')
})

async function readyWithin (app: Awaited<ReturnType<typeof build>>, status: number, ms: number) {
  const until = Date.now() + ms
  let last = 0
  while (Date.now() < until) {
    last = (await app.inject({ url: '/ready' })).statusCode
    if (last === status) return last
    await sleep(200)
  }
  return last
}

async function statusWithin (app: Awaited<ReturnType<typeof build>>, status: string, ms: number) {
  const until = Date.now() + ms
  let last = ''
  while (Date.now() < until) {
    const res = await app.inject({ url: '/ready' })
    last = res.statusCode === 200 ? res.json().status : String(res.statusCode)
    if (last === status) return last
    await sleep(200)
  }
  return last
}

t.test('real PostgreSQL going down and coming back: /ready follows by itself', {
  skip: process.env.DATABASE_URL ? false : 'DATABASE_URL is not set: needs a real PostgreSQL'
}, async t => {
  const target = new URL(process.env.DATABASE_URL as string)
  const proxy = await tcpProxy(t, target.href)
  const viaProxy = new URL(target.href)
  viaProxy.hostname = '127.0.0.1'
  viaProxy.port = String(proxy.port)
  const app = await build(t, { DATABASE_URL: viaProxy.href })

  t.equal((await app.inject({ url: '/ready' })).statusCode, 200, 'ready while the database is up')
  const inFlight = sql`select pg_sleep(5)`.execute(app.db)
  await sleep(100)
  await proxy.close()
  await t.rejects(inFlight, /terminated/, 'a query in flight fails (and the process does not crash)')
  const down = await app.inject({ url: '/ready' })
  t.equal(down.statusCode, 503, 'not ready while it is down')
  t.equal(down.json().code, 'service_unavailable')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'the process is still up')

  await proxy.open()
  t.equal(await readyWithin(app, 200, 10_000), 200, 'ready again once the database is back, without a restart')
  const email = uniqueEmail('after-outage')
  await app.db.insertInto('users').values({ email, password_hash: 'x' }).execute()
  t.ok(await app.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst(), 'queries work again')
})

t.test('real Redis going down and coming back: /ready says degraded, then ok, by itself', {
  skip: process.env.REDIS_URL ? false : 'REDIS_URL is not set: needs a real Redis'
}, async t => {
  const proxy = await tcpProxy(t, process.env.REDIS_URL as string)
  const app = await build(t, { REDIS_URL: `redis://127.0.0.1:${proxy.port}` })

  t.equal((await app.inject({ url: '/ready' })).statusCode, 200, 'ready while Redis is up')
  await proxy.close()
  t.equal(await statusWithin(app, 'degraded', 5000), 'degraded', 'degraded while it is down, and still 200')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'the process is still up')

  await proxy.open()
  t.equal(await statusWithin(app, 'ok', 10_000), 'ok', 'ok again once Redis is back, without a restart')
})
