import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { createMemoryCache, type Cache } from '../../../plugins/infra/cache.js'
import { build } from '../../helper.js'

const redisUrl = process.env.REDIS_URL
const skipRedis = redisUrl ? false : 'REDIS_URL is not set: the Redis backend is tested in the real-backend run'

/** Waits until `check` holds, for at most `ms`. */
async function eventually (check: () => boolean, ms = 2000) {
  const until = Date.now() + ms
  while (!check() && Date.now() < until) await sleep(20)
  return check()
}

/**
 * The behaviour every backend shares. `makePair` gives two caches that see the
 * same data and channels (two instances of the service, or one process twice);
 * they are made once for the suite, and each test uses keys of its own.
 */
function behaves (t: Test, makePair: (t: Test) => Promise<[Cache, Cache]>) {
  let made: Promise<[Cache, Cache]> | undefined
  const pair = () => (made ??= makePair(t))
  t.test('get answers null for a key never set; set then get answers the value', async t => {
    const [cache] = await pair()
    t.equal(await cache.get('missing'), null)
    await cache.set('greeting', 'hello', 60)
    t.equal(await cache.get('greeting'), 'hello')
    await cache.set('greeting', 'again', 60)
    t.equal(await cache.get('greeting'), 'again', 'set overwrites')
  })

  t.test('a value is gone once its TTL has passed', async t => {
    const [cache] = await pair()
    await cache.set('short', 'lived', 1)
    await cache.set('long', 'lived', 60)
    t.equal(await cache.get('short'), 'lived')
    await sleep(1100)
    t.equal(await cache.get('short'), null, 'expired after 1 s')
    t.equal(await cache.get('long'), 'lived', 'a longer TTL is still there')
  })

  t.test('del removes one or several keys', async t => {
    const [cache] = await pair()
    await cache.set('a', '1', 60)
    await cache.set('b', '2', 60)
    await cache.set('c', '3', 60)
    await cache.del('a')
    t.equal(await cache.get('a'), null)
    await cache.del('b', 'c', 'never-set')
    t.equal(await cache.get('b'), null)
    t.equal(await cache.get('c'), null)
  })

  t.test('incr counts up and the count expires TTL seconds after the first increment', async t => {
    const [cache] = await pair()
    t.equal(await cache.incr('hits', 1), 1)
    t.equal(await cache.incr('hits', 1), 2)
    await sleep(600)
    // A later increment does not push the expiry back: the window is fixed.
    t.equal(await cache.incr('hits', 1), 3)
    await sleep(500)
    t.equal(await cache.incr('hits', 1), 1, 'a new window starts at 1')
    t.equal(await cache.incr('other', 60), 1, 'counters are per key')
  })

  t.test('a published message reaches every subscriber, on the other instance too', async t => {
    const [a, b] = await pair()
    const channel = `channel-${randomUUID()}`
    const seenByA: string[] = []
    const seenByB: string[] = []
    const alsoSeenByB: string[] = []
    a.subscribe(channel, m => seenByA.push(m))
    b.subscribe(channel, m => seenByB.push(m))
    b.subscribe(channel, m => alsoSeenByB.push(m))
    b.subscribe(`${channel}-elsewhere`, m => t.fail(`a message on another channel arrived: ${m}`))
    // A subscription takes effect asynchronously (a round trip to Redis):
    // publish until the first message gets through, then check every copy.
    let sent = 0
    const arrived = await eventually(() => {
      if (seenByB.length === 0) a.publish(channel, `ping-${sent++}`)
      return seenByB.length > 0
    }, 3000)
    t.ok(arrived, 'the other instance received a message')
    await a.publish(channel, 'revoked:42')
    t.ok(await eventually(() => seenByB.includes('revoked:42') && alsoSeenByB.includes('revoked:42') && seenByA.includes('revoked:42')),
      'both subscribers of the other instance and the publisher itself received it')
  })

  t.test('ping answers true while the backend is reachable', async t => {
    const [cache] = await pair()
    t.equal(await cache.ping(), true)
    t.equal(cache.healthy, true)
  })
}

t.test('memory backend', async t => {
  t.test('the app uses it when REDIS_URL is not set', async t => {
    const app = await build(t, { REDIS_URL: undefined })
    t.equal(app.cache.kind, 'memory')
  })
  behaves(t, async t => {
    // One process, one cache: both "instances" are the same object.
    const cache = createMemoryCache()
    t.teardown(() => cache.close())
    return [cache, cache]
  })
})

t.test('Redis backend', { skip: skipRedis }, async t => {
  t.test('the app uses it when REDIS_URL is set', async t => {
    const app = await build(t)
    t.equal(app.cache.kind, 'redis')
  })
  behaves(t, async t => {
    // Two apps sharing one Redis and one key prefix, as two instances of the service do.
    const prefix = `latchkey-test-${randomUUID()}:`
    const a = await build(t, { CACHE_PREFIX: prefix })
    const b = await build(t, { CACHE_PREFIX: prefix })
    return [a.cache, b.cache]
  })

  t.test('keys of another prefix are not visible', async t => {
    const a = await build(t)
    const b = await build(t)
    await a.cache.set('shared-name', 'a', 60)
    t.equal(await b.cache.get('shared-name'), null)
  })
})

// Port 1 refuses every connection: no Redis server is needed for this one.
t.test('an unreachable Redis: the app starts, and the cache answers misses at once', async t => {
  const started = Date.now()
  const app = await build(t, { REDIS_URL: 'redis://127.0.0.1:1', REDIS_CONNECT_TIMEOUT: '1s', REDIS_COMMAND_TIMEOUT_MS: '200' })
  t.ok(Date.now() - started < 5000, 'the boot is not held up by Redis')
  t.equal(app.cache.kind, 'redis')
  t.equal(app.cache.healthy, false)

  const begin = Date.now()
  t.equal(await app.cache.get('anything'), null)
  await app.cache.set('anything', 'value', 60)
  t.equal(await app.cache.incr('counter', 60), 0, 'incr reports nothing counted')
  await app.cache.del('anything')
  await app.cache.publish('channel', 'message')
  t.equal(await app.cache.ping(), false)
  t.ok(Date.now() - begin < 1000, `every call answered without waiting (${Date.now() - begin} ms)`)

  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200, 'the service answers')
})
