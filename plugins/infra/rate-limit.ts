import { createRequire } from 'node:module'
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from './errors.js'
import { normaliseEmail } from '../../db/queries/users.js'

type Counted = { current: number, ttl: number }
type Callback = (err: Error | null, result?: Counted) => void
interface Store {
  incr (key: string, cb: Callback, timeWindow: number, max: number): void
  child (routeOptions: object): Store
}
type StoreClass = new (...args: any[]) => Store

// The plugin's own stores, so a Redis outage can fall back to counting in process.
const require = createRequire(import.meta.url)
const RedisStore: StoreClass = require('@fastify/rate-limit/store/RedisStore.js')
const LocalStore: StoreClass = require('@fastify/rate-limit/store/LocalStore.js')

/** A route's `config` for a per-IP limit of `max` requests per `windowSeconds`. */
export const perIp = (max: number, windowSeconds: number) => ({ rateLimit: { max, timeWindow: windowSeconds * 1000 } })

export interface EmailLimit {
  /** Which limit: its counters are kept apart from every other. */
  name: string
  max: number
  windowSeconds: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** A preHandler counting requests per normalised `body.email`; 429 `rate_limited` past `max`. */
    emailRateLimit (limit: EmailLimit): (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

export default fp(async (app) => {
  const { config } = app
  if (!config.RATE_LIMIT_ENABLED) {
    app.decorate('emailRateLimit', () => async () => {})
    return
  }

  const redis = app.hasDecorator('redis') ? app.redis : undefined
  // Counting follows the Redis connection itself, not `cache.healthy`: the
  // cache also distrusts Redis while its pub/sub connection is down or while
  // it flushes stale state after an outage, and counts moved in process then
  // split one client's count in two and let it past the limit. After a failed
  // command (a stalled Redis costs a command timeout) counting stays in
  // process for a second before Redis is tried again.
  const retryAfterFailureMs = 1000
  let sharedFailedAt = 0
  class FallbackStore implements Store {
    constructor (private readonly shared: Store | undefined, private readonly local: Store) {}

    incr (key: string, cb: Callback, timeWindow: number, max: number) {
      const usable = this.shared && redis?.status === 'ready' && Date.now() - sharedFailedAt >= retryAfterFailureMs
      if (!this.shared || !usable) return this.local.incr(key, cb, timeWindow, max)
      this.shared.incr(key, (err, result) => {
        if (err) {
          sharedFailedAt = Date.now()
          return this.local.incr(key, cb, timeWindow, max)
        }
        cb(null, result)
      }, timeWindow, max)
    }

    child (routeOptions: object) {
      return new FallbackStore(this.shared?.child(routeOptions), this.local.child(routeOptions))
    }
  }

  // The plugin appends its check after a route's own onRequest hooks, so a
  // protected route authenticated first and refused bad tokens before they
  // were counted: a flood of forged tokens was never limited, and every
  // request paid for verification before being turned away. Its check is
  // moved in front of the route's hooks.
  const ownHooks = new WeakMap<object, Set<unknown>>()
  const hooksOf = (value: unknown): unknown[] => value === undefined ? [] : Array.isArray(value) ? value : [value]
  app.addHook('onRoute', (route) => { ownHooks.set(route, new Set(hooksOf(route.onRequest))) })

  await app.register(rateLimit, {
    global: true,
    max: config.RATE_LIMIT_GLOBAL_MAX,
    timeWindow: config.RATE_LIMIT_GLOBAL_WINDOW * 1000,
    store: class extends FallbackStore {
      constructor () {
        super(redis && new RedisStore(false, false, redis, `${config.CACHE_PREFIX}rl:`), new LocalStore(false, false, 10_000))
      }
    },
    errorResponseBuilder: (_request, context) => new AppError('rate_limited', {
      message: `Too many requests; try again in ${Math.max(1, Math.ceil(context.ttl / 1000))} seconds.`
    })
  })

  app.addHook('onRoute', (route) => {
    const own = ownHooks.get(route)
    const all = hooksOf(route.onRequest)
    if (!own || all.length === own.size) return
    route.onRequest = [...all.filter(hook => !own.has(hook)), ...all.filter(hook => own.has(hook))] as typeof route.onRequest
  })

  app.decorate('emailRateLimit', (limit: EmailLimit) => {
    const check = app.createRateLimit({
      max: limit.max,
      timeWindow: limit.windowSeconds * 1000,
      keyGenerator: (request) => {
        const email = (request.body as { email?: unknown } | undefined)?.email
        return `email:${limit.name}:${typeof email === 'string' ? normaliseEmail(email) : ''}`
      }
    })
    return async (request: FastifyRequest, reply: FastifyReply) => {
      const result = await check(request)
      if (result.isAllowed || !result.isExceeded) return
      const retryAfter = Math.max(1, result.ttlInSeconds)
      reply.headers({
        'retry-after': retryAfter,
        'x-ratelimit-limit': result.max,
        'x-ratelimit-remaining': 0,
        'x-ratelimit-reset': retryAfter
      })
      throw new AppError('rate_limited', { message: `Too many requests; try again in ${retryAfter} seconds.` })
    }
  })
}, { name: 'rate-limit', dependencies: ['config', 'cache'] })
