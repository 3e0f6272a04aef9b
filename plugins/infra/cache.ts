import { EventEmitter } from 'node:events'
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import fastifyRedis, { type FastifyRedis } from '@fastify/redis'
import { Redis } from 'ioredis'

/**
 * A small key-value cache with versions and a broadcast channel. It is never
 * the source of truth: every failure reads as a miss, and callers fall back to
 * PostgreSQL.
 */
export interface Cache {
  readonly kind: 'memory' | 'redis'
  /** False while the backend is unreachable: values held elsewhere may be stale. */
  readonly healthy: boolean
  /** The value with the key's version, which `invalidate` bumps. */
  getVersioned (key: string): Promise<{ value: string | null, version: string }>
  /** Stores the value only while the key's version is still the one read: a load that raced an invalidation writes nothing. */
  setIfVersion (key: string, value: string, ttlSeconds: number, version: string): Promise<void>
  /** Bumps each key's version and deletes its value. */
  invalidate (...keys: string[]): Promise<void>
  /**
   * True for the first claim of the key within `ttlSeconds`, on any instance
   * sharing the backend; false for every later one (DPoP proof ids, SPEC §8.1).
   * Without the backend, claims are still remembered in this process.
   */
  claimOnce (key: string, ttlSeconds: number): Promise<boolean>
  publish (channel: string, message: string): Promise<void>
  subscribe (channel: string, handler: (message: string) => void): void
  /** Called when messages may have been missed (a reconnect): drop whatever was derived from them. */
  onReset (handler: () => void): void
  ping (): Promise<boolean>
  /** A read-through cache of one kind of value (see `Tiered`). */
  tiered<T> (namespace: string, options: TieredOptions<T>): Tiered<T>
}

export interface TieredOptions<T> {
  /** Seconds a value is kept, in either tier. */
  ttl: number
  /** Reads the value from the source of truth; null (nothing there) is never cached. */
  load (id: string): Promise<T | null>
  /** Told which tier answered each read (metrics). */
  onLookup? (tier: 'in_process' | 'redis' | 'database'): void
  /**
   * A second fan-out path (PostgreSQL's notifications), which calls `heard`
   * and `reset`: while it is up, the in-process tier stays trusted when the
   * backend is not, since the invalidations still arrive.
   */
  backup?: { readonly healthy: boolean }
}

/**
 * Values by id, read through an in-process map, then the shared tier (Redis,
 * when configured), then `load`. `invalidate` drops every copy, here and, by a
 * broadcast, on every instance sharing the backend.
 */
export interface Tiered<T> {
  get (id: string): Promise<T | null>
  /** After a committed change to these ids: drop every cached copy. */
  invalidate (ids: string[]): Promise<void>
  /** A change announced through the backup path: drops the copies here and in the shared tier, broadcasting nothing. */
  heard (ids: string[]): Promise<void>
  /** The backup path may have missed announcements: drops every in-process copy. */
  reset (): void
}

// A message on a tiered cache's channel is ids separated by spaces, or this: drop everything.
const everything = '*'
const maxLocal = 50_000

function tiered<T> (cache: Cache, log: FastifyBaseLogger | undefined, namespace: string, { ttl, load, onLookup, backup }: TieredOptions<T>): Tiered<T> {
  const channel = `tiered:${namespace}`
  const keyOf = (id: string) => `${namespace}:${id}`
  // The in-process tier, bounded (oldest first out).
  const local = new Map<string, { value: T, expires: number }>()
  // The memory backend is this process already: a second copy of it adds nothing.
  const shared = cache.kind === 'redis'
  // Per id with loads in flight: bumped by each invalidation of the id, so a
  // load that started before one does not keep its (maybe stale) result.
  // `epoch` does the same for "drop everything".
  const loading = new Map<string, { generation: number, loads: number }>()
  let epoch = 0

  const forget = (message: string) => {
    if (message === everything) {
      epoch++
      local.clear()
      return
    }
    for (const id of message.split(' ')) {
      local.delete(id)
      const inFlight = loading.get(id)
      if (inFlight) inFlight.generation++
    }
  }
  const remember = (id: string, value: T) => {
    if (local.size >= maxLocal) local.delete(local.keys().next().value as string)
    local.set(id, { value, expires: Date.now() + ttl * 1000 })
  }
  cache.subscribe(channel, forget)
  // Messages may have been missed while the backend was away, by this instance
  // or, for the invalidations this one made meanwhile, by the others: all forget.
  cache.onReset(() => {
    forget(everything)
    cache.publish(channel, everything).catch(err => log?.warn({ err }, 'reset broadcast failed'))
  })

  // Forgotten at once, and again once the shared tier has dropped its copy:
  // a read in between may have copied the stale shared one in afresh.
  async function drop (ids: string[]): Promise<void> {
    if (ids.length === 0) return
    const message = ids.join(' ')
    forget(message)
    if (shared) {
      await cache.invalidate(...ids.map(keyOf))
      forget(message)
    }
  }

  async function read (id: string, still: () => boolean): Promise<T | null> {
    let version = ''
    if (shared) {
      const remote = await cache.getVersioned(keyOf(id))
      version = remote.version
      if (remote.value !== null) {
        onLookup?.('redis')
        const value = JSON.parse(remote.value) as T
        if (still()) remember(id, value)
        return value
      }
    }
    onLookup?.('database')
    const value = await load(id)
    if (value !== null && still()) {
      remember(id, value)
      // Written back only if no invalidation bumped the key's version since it
      // was read; the reply does not wait for it (a failure only costs a later miss).
      if (shared) cache.setIfVersion(keyOf(id), JSON.stringify(value), ttl, version).catch(() => {})
    }
    return value
  }

  return {
    async get (id) {
      // While the backend is unreachable, its invalidations cannot reach this
      // instance either: unless the backup path still brings them, nothing
      // cached is trusted and the source answers.
      if (!cache.healthy && !backup?.healthy) {
        onLookup?.('database')
        return await load(id)
      }
      const hit = local.get(id)
      if (hit && hit.expires > Date.now()) {
        onLookup?.('in_process')
        return hit.value
      }
      const inFlight = loading.get(id) ?? { generation: 0, loads: 0 }
      loading.set(id, inFlight)
      inFlight.loads++
      const started = { generation: inFlight.generation, epoch }
      try {
        return await read(id, () => inFlight.generation === started.generation && epoch === started.epoch)
      } finally {
        if (--inFlight.loads === 0) loading.delete(id)
      }
    },
    async invalidate (ids) {
      if (ids.length === 0) return
      await drop(ids)
      await cache.publish(channel, ids.join(' '))
    },
    // The instance that made the change may not have reached the shared tier yet, or at all.
    heard: drop,
    reset () { forget(everything) }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    cache: Cache
  }
}

/** Keys claimed in this process, each until its expiry (bounded by the claim rate times the TTL, swept every minute). */
function localClaims () {
  const claimed = new Map<string, number>()
  return {
    claim (key: string, ttlSeconds: number): boolean {
      const now = Date.now()
      if ((claimed.get(key) ?? 0) > now) return false
      claimed.set(key, now + ttlSeconds * 1000)
      return true
    },
    sweep () {
      const now = Date.now()
      for (const [key, expires] of claimed) if (expires <= now) claimed.delete(key)
    },
    clear () { claimed.clear() }
  }
}

export function createMemoryCache (): Cache & { close (): void } {
  const entries = new Map<string, { value: string, expires: number }>()
  const versions = new Map<string, number>()
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
  const claims = localClaims()
  const live = (key: string) => {
    const entry = entries.get(key)
    if (entry && entry.expires <= Date.now()) {
      entries.delete(key)
      return undefined
    }
    return entry
  }
  // Expired entries nobody reads again are swept now and then, so memory stays bounded.
  const sweeper = setInterval(() => {
    const now = Date.now()
    for (const [key, entry] of entries) if (entry.expires <= now) entries.delete(key)
    claims.sweep()
  }, 60_000)
  sweeper.unref()

  const cache: Cache & { close (): void } = {
    kind: 'memory',
    healthy: true,
    async getVersioned (key) { return { value: live(key)?.value ?? null, version: String(versions.get(key) ?? 0) } },
    async setIfVersion (key, value, ttlSeconds, version) {
      if (String(versions.get(key) ?? 0) === version) entries.set(key, { value, expires: Date.now() + ttlSeconds * 1000 })
    },
    async invalidate (...keys) {
      for (const key of keys) {
        versions.set(key, (versions.get(key) ?? 0) + 1)
        entries.delete(key)
      }
    },
    async claimOnce (key, ttlSeconds) { return claims.claim(key, ttlSeconds) },
    async publish (channel, message) { bus.emit(channel, message) },
    subscribe (channel, handler) { bus.on(channel, handler) },
    onReset () {},
    async ping () { return true },
    tiered: (namespace, options) => tiered(cache, undefined, namespace, options),
    close () {
      clearInterval(sweeper)
      entries.clear()
      bus.removeAllListeners()
      versions.clear()
      claims.clear()
    }
  }
  return cache
}

// Compare-and-set: KEYS[1] the value, KEYS[2] its version; ARGV value, ttl, the version read.
const setIfVersionLua = `
if (redis.call('GET', KEYS[2]) or '0') == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0`
// A version outlives any load that could have read the one before it.
const versionTtlSeconds = 3600

function createRedisCache (client: Redis, subscriber: Redis, prefix: string, log: FastifyBaseLogger): Cache & { close (): void } {
  const namespace = `${prefix}c:`
  // Outside `namespace`: emptying the cache after an outage must not forget what was claimed.
  const claimNamespace = `${prefix}once:`
  // Claims are remembered here too, so a replay to this instance is refused even while Redis is away.
  const claims = localClaims()
  const sweeper = setInterval(claims.sweep, 60_000)
  sweeper.unref()
  const handlers = new Map<string, Set<(message: string) => void>>()
  const resetHandlers = new Set<() => void>()
  // After an outage Redis may hold values written before a revocation it never
  // heard of; they are dropped before the cache is trusted again.
  let trusted = client.status === 'ready'

  const distrust = () => {
    if (trusted) log.warn('redis unreachable: reading state from the database')
    trusted = false
  }
  let recovering = false
  let lastRecovery = 0
  const recover = async () => {
    recovering = true
    lastRecovery = Date.now()
    try {
      let cursor = '0'
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', `${namespace}*`, 'COUNT', 500)
        if (keys.length > 0) await client.unlink(...keys)
        cursor = next
      } while (cursor !== '0')
      trusted = true
      for (const handler of resetHandlers) handler()
      log.info('redis reachable again: cache emptied and trusted')
    } catch (err) {
      log.warn({ err }, 'redis recovery failed')
    } finally {
      recovering = false
    }
  }
  // A stalled server comes back without a reconnect (no 'ready' event): while
  // distrusted, each use tries recovery again, at most once a second.
  const maybeRecover = () => {
    if (!recovering && client.status === 'ready' && Date.now() - lastRecovery > 1000) recover()
  }
  client.on('close', distrust)
  subscriber.on('close', distrust)
  client.on('ready', () => { if (!trusted) recover() })
  subscriber.on('ready', () => {
    // Subscribed again here, with its failure handled: ioredis's own
    // resubscription leaves an unhandled rejection when closed mid-way.
    if (handlers.size > 0) {
      subscriber.subscribe(...[...handlers.keys()].map(channel => prefix + channel))
        .catch(err => log.warn({ err }, 'redis resubscribe failed'))
    }
    for (const handler of resetHandlers) handler()
  })
  // Connection errors are retried by ioredis; they are reported through `healthy`.
  client.on('error', () => {})
  subscriber.on('error', () => {})

  subscriber.on('message', (channel: string, message: string) => {
    for (const handler of handlers.get(channel.slice(prefix.length)) ?? []) handler(message)
  })

  async function attempt<T> (fallback: T, op: () => Promise<T>): Promise<T> {
    if (!trusted) {
      maybeRecover()
      return fallback
    }
    try {
      return await op()
    } catch (err) {
      log.warn({ err }, 'redis command failed')
      distrust()
      return fallback
    }
  }

  const cache: Cache & { close (): void } = {
    kind: 'redis',
    get healthy () {
      if (!trusted) maybeRecover()
      return trusted && subscriber.status === 'ready'
    },
    getVersioned: key => attempt({ value: null, version: '' }, async () => {
      const [value, version] = await client.mget(namespace + key, `${namespace}v:${key}`)
      return { value, version: version ?? '0' }
    }),
    setIfVersion: (key, value, ttlSeconds, version) => attempt(undefined, async () => {
      await client.eval(setIfVersionLua, 2, namespace + key, `${namespace}v:${key}`, value, ttlSeconds, version)
    }),
    invalidate: (...keys) => attempt(undefined, async () => {
      const batch = client.multi()
      for (const key of keys) {
        batch.incr(`${namespace}v:${key}`).expire(`${namespace}v:${key}`, versionTtlSeconds).del(namespace + key)
      }
      await batch.exec()
    }),
    async claimOnce (key, ttlSeconds) {
      if (!claims.claim(key, ttlSeconds)) return false
      return await attempt(true, async () => (await client.set(claimNamespace + key, '1', 'EX', ttlSeconds, 'NX')) === 'OK')
    },
    publish: (channel, message) => attempt(undefined, async () => { await client.publish(prefix + channel, message) }),
    subscribe (channel, handler) {
      if (!handlers.has(channel)) {
        handlers.set(channel, new Set())
        subscriber.subscribe(prefix + channel).catch(err => log.warn({ err, channel }, 'redis subscribe failed'))
      }
      handlers.get(channel)?.add(handler)
    },
    onReset (handler) { resetHandlers.add(handler) },
    async ping () {
      try {
        return (await client.ping()) === 'PONG'
      } catch {
        return false
      }
    },
    tiered: (namespace, options) => tiered(cache, log, namespace, options),
    close () {
      clearInterval(sweeper)
      claims.clear()
    }
  }
  return cache
}

export default fp(async (app) => {
  const { REDIS_URL, REDIS_CONNECT_TIMEOUT, REDIS_COMMAND_TIMEOUT_MS, CACHE_PREFIX } = app.config
  if (!REDIS_URL) {
    const cache = createMemoryCache()
    app.decorate('cache', cache)
    app.addHook('onClose', async () => cache.close())
    return
  }

  const client = new Redis(REDIS_URL, {
    // Bounded everywhere: a dead Redis fails a command at once instead of
    // queueing it, and reconnects in the background.
    connectTimeout: REDIS_CONNECT_TIMEOUT * 1000,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => Math.min(times * 100, 1000)
  })
  // The first connection is awaited, boundedly, so a Redis that is up is
  // trusted from the first request on (refusals meanwhile are retried, not thrown).
  client.on('error', () => {})
  await new Promise<void>(resolve => {
    const done = () => {
      clearTimeout(timer)
      client.off('ready', done)
      resolve()
    }
    const timer = setTimeout(done, REDIS_CONNECT_TIMEOUT * 1000)
    client.once('ready', done)
  })
  if (client.status === 'ready') {
    await app.register(fastifyRedis, { client })
  } else {
    // @fastify/redis would hold the boot until Redis answers; a service
    // (re)started during a Redis outage serves from PostgreSQL instead, with
    // the cache distrusted until Redis is ready.
    app.log.warn('redis unreachable at start: serving from the database until it answers')
    app.decorate('redis', client as FastifyRedis)
  }
  const subscriber = client.duplicate({ enableOfflineQueue: true, commandTimeout: undefined, autoResubscribe: false })
  const cache = createRedisCache(client, subscriber, CACHE_PREFIX, app.log)
  app.decorate('cache', cache)
  app.addHook('onClose', async () => {
    cache.close()
    subscriber.disconnect()
    // QUIT lets commands in flight finish; with Redis down it cannot be sent, and the socket is just dropped.
    await client.quit().catch(() => client.disconnect())
  })
}, { name: 'cache', dependencies: ['config'] })
