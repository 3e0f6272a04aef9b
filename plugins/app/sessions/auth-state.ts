import fp from 'fastify-plugin'
import { findUserById } from '../../../db/queries/users.js'
import { findSession } from '../../../db/queries/sessions.js'
import { userView } from '../accounts/accounts.js'
import type { UserView } from '../../../openapi/components.js'

/** What the authenticate hook needs to know about a user, fresh, and the profile GET /profile serves without a query. */
export interface UserState {
  tokenVersion: number
  disabled: boolean
  profile: UserView
}

/** What it needs to know about a session. */
export interface SessionState {
  userId: string
  revoked: boolean
  /** Milliseconds since the epoch: the maximum lifetime counts from here. */
  createdAt: number
}

export interface Changed {
  users?: string[]
  sessions?: string[]
}

declare module 'fastify' {
  interface FastifyInstance {
    authState: {
      user (id: string): Promise<UserState | null>
      session (id: string): Promise<SessionState | null>
      /** After a committed change to users or sessions: drop every cached copy, here and on every instance. */
      invalidate (changed: Changed): Promise<void>
    }
  }
}

const channel = 'state-invalidated'
// A message on the channel is keys separated by spaces, or this: drop everything.
const everything = '*'

export default fp(async (app) => {
  const { cache, db } = app
  const ttl = app.config.STATE_CACHE_TTL
  // The in-process tier, bounded (oldest first out); Redis, when configured, is the shared tier behind it.
  const local = new Map<string, { value: unknown, expires: number }>()
  const maxLocal = 50_000
  // Bumped on every invalidation: a load that started before one does not keep its result.
  let invalidations = 0
  const shared = cache.kind === 'redis' ? cache : null

  const forget = (message: string) => {
    invalidations++
    if (message === everything) local.clear()
    else for (const key of message.split(' ')) local.delete(key)
  }
  const remember = (key: string, value: unknown) => {
    if (local.size >= maxLocal) local.delete(local.keys().next().value as string)
    local.set(key, { value, expires: Date.now() + ttl * 1000 })
  }
  cache.subscribe(channel, forget)
  // Messages may have been missed while Redis was away, by this instance or,
  // for the revocations this one made meanwhile, by the others: all forget.
  cache.onReset(() => {
    forget(everything)
    cache.publish(channel, everything).catch(err => app.log.warn({ err }, 'reset broadcast failed'))
  })

  async function read<T> (key: string, load: () => Promise<T | null>): Promise<T | null> {
    // While the shared tier is unreachable, invalidations cannot reach this
    // instance either, so nothing cached is trusted: the database answers.
    const trusted = cache.healthy
    const before = invalidations
    let version = ''
    if (trusted) {
      const hit = local.get(key)
      if (hit && hit.expires > Date.now()) return hit.value as T
      if (shared) {
        const remote = await shared.getVersioned(key)
        version = remote.version
        if (remote.value !== null) {
          const value = JSON.parse(remote.value) as T
          if (before === invalidations) remember(key, value)
          return value
        }
      }
    }
    const value = await load()
    if (value !== null && trusted && before === invalidations) {
      remember(key, value)
      // Written back only if no invalidation bumped the key's version since it was read.
      await shared?.setIfVersion(key, JSON.stringify(value), ttl, version)
    }
    return value
  }

  app.decorate('authState', {
    user: (id: string) => read<UserState>(`users:${id}`, async () => {
      const row = await findUserById(db, id)
      return row ? { tokenVersion: row.token_version, disabled: row.disabled_at !== null, profile: userView(row) } : null
    }),
    session: (id: string) => read<SessionState>(`sessions:${id}`, async () => {
      const row = await findSession(db, id)
      return row ? { userId: row.user_id, revoked: row.revoked_at !== null, createdAt: row.created_at.getTime() } : null
    }),
    async invalidate ({ users = [], sessions = [] }: Changed) {
      const keys = [...users.map(id => `users:${id}`), ...sessions.map(id => `sessions:${id}`)]
      if (keys.length === 0) return
      forget(keys.join(' '))
      await shared?.invalidate(...keys)
      await cache.publish(channel, keys.join(' '))
    }
  })
}, { name: 'auth-state', dependencies: ['config', 'db', 'cache'] })
