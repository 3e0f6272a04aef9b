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
  t.test('a versioned value: written only while its version is the one read; invalidate bumps the version and drops the value', async t => {
    const [cache] = await pair()
    const before = await cache.getVersioned('greeting')
    t.equal(before.value, null)
    await cache.setIfVersion('greeting', 'hello', 60, before.version)
    t.same(await cache.getVersioned('greeting'), { value: 'hello', version: before.version })
    await cache.invalidate('greeting', 'never-set')
    const after = await cache.getVersioned('greeting')
    t.equal(after.value, null, 'dropped')
    t.not(after.version, before.version, 'a new version')
    await cache.setIfVersion('greeting', 'stale', 60, before.version)
    t.equal((await cache.getVersioned('greeting')).value, null, 'a write with the old version is refused')
  })

  t.test('a versioned value is gone once its TTL has passed', async t => {
    const [cache] = await pair()
    await cache.setIfVersion('short', 'lived', 1, (await cache.getVersioned('short')).version)
    await cache.setIfVersion('long', 'lived', 60, (await cache.getVersioned('long')).version)
    t.equal((await cache.getVersioned('short')).value, 'lived')
    await sleep(1100)
    t.equal((await cache.getVersioned('short')).value, null, 'expired after 1 s')
    t.equal((await cache.getVersioned('long')).value, 'lived', 'a longer TTL is still there')
  })

  t.test('tiered: loads once, then serves from the cache; an invalidation on one instance reaches the other', async t => {
    const [a, b] = await pair()
    const namespace = `things-${randomUUID()}`
    let source = 'first'
    const loads: string[] = []
    const load = async (id: string) => { loads.push(id); return id === 'missing' ? null : { id, source } }
    const onA = a.tiered(namespace, { ttl: 60, load })
    const onB = b.tiered(namespace, { ttl: 60, load })
    t.same(await onA.get('x'), { id: 'x', source: 'first' })
    t.same(await onA.get('x'), { id: 'x', source: 'first' })
    t.same(loads, ['x'], 'loaded once')
    t.same(await onB.get('x'), { id: 'x', source: 'first' })
    t.equal(await onA.get('missing'), null)
    t.equal(await onA.get('missing'), null)
    t.same(loads.filter(id => id === 'missing'), ['missing', 'missing'], 'nothing found is never cached')

    source = 'second'
    await onA.invalidate(['x'])
    t.same(await onA.get('x'), { id: 'x', source: 'second' }, 'the invalidating instance reloads at once')
    // The broadcast takes a round trip through Redis.
    let seenOnB: string | undefined
    for (let i = 0; i < 100 && seenOnB !== 'second'; i++) {
      seenOnB = (await onB.get('x'))?.source
      if (seenOnB !== 'second') await sleep(20)
    }
    t.equal(seenOnB, 'second', 'the other instance reloads too')
  })

  t.test('tiered: a load that raced an invalidation of its id is not kept; one of another id is', async t => {
    const [cache] = await pair()
    const namespace = `raced-${randomUUID()}`
    let version = 1
    let release!: () => void
    let held: Promise<void> | undefined
    const loads: string[] = []
    let bothRead!: () => void
    const reading = new Promise<void>(resolve => { bothRead = resolve })
    const things = cache.tiered(namespace, {
      ttl: 60,
      async load (id) {
        loads.push(id)
        const read = version
        if (loads.length === 2) bothRead()
        await held
        return { id, version: read }
      }
    })
    held = new Promise(resolve => { release = resolve })
    const racing = things.get('a')
    const other = things.get('b')
    // Both loads have read; the change commits and invalidates 'a' before they finish.
    await reading
    version = 2
    await things.invalidate(['a'])
    release()
    held = undefined
    t.same(await racing, { id: 'a', version: 1 }, 'the racing read answers what it read')
    t.same(await other, { id: 'b', version: 1 })
    t.same(await things.get('a'), { id: 'a', version: 2 }, 'but it was not kept: the next read loads again')
    t.same(await things.get('b'), { id: 'b', version: 1 }, "and the other id's load was kept")
    t.same(loads, ['a', 'b', 'a'])
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
    await a.cache.setIfVersion('shared-name', 'a', 60, (await a.cache.getVersioned('shared-name')).version)
    t.equal((await a.cache.getVersioned('shared-name')).value, 'a')
    t.equal((await b.cache.getVersioned('shared-name')).value, null)
  })
})

// Port 1 refuses every connection: no Redis server is needed for this one.
// The boot waits for Redis at most REDIS_CONNECT_TIMEOUT (1 s here); the
// command timeout is long, so that a call which waited for Redis would take
// seconds: far beyond what a loaded machine adds to one that does not.
t.test('an unreachable Redis: the app starts, and the cache answers misses at once', async t => {
  await build(t)
  const started = Date.now()
  const app = await build(t, { REDIS_URL: 'redis://127.0.0.1:1', REDIS_CONNECT_TIMEOUT: '1s', REDIS_COMMAND_TIMEOUT_MS: '5000' })
  t.ok(Date.now() - started < 10_000, `the boot is held up by Redis no longer than its connect timeout (${Date.now() - started} ms)`)
  t.equal(app.cache.kind, 'redis')
  t.equal(app.cache.healthy, false)

  const begin = Date.now()
  t.same(await app.cache.getVersioned('anything'), { value: null, version: '' })
  await app.cache.setIfVersion('anything', 'value', 60, '0')
  await app.cache.invalidate('anything')
  let loads = 0
  const things = app.cache.tiered('things', { ttl: 60, load: async id => { loads++; return { id } } })
  t.same(await things.get('x'), { id: 'x' })
  t.same(await things.get('x'), { id: 'x' })
  t.equal(loads, 2, 'nothing is cached while Redis is not trusted: the source answers every time')
  await app.cache.publish('channel', 'message')
  t.equal(await app.cache.ping(), false)
  t.ok(Date.now() - begin < 4000, `every call answered without waiting for a command timeout (${Date.now() - begin} ms)`)

  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200, 'the service answers')
})
