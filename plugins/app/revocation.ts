import fp from 'fastify-plugin'
import type { User } from '../../db/schema.js'

/** What the authenticate hook needs to know about a user, fresh. */
export interface UserState {
  tokenVersion: number
  role: User['role']
  emailVerified: boolean
  disabled: boolean
}

/** What it needs to know about a session. */
export interface SessionState {
  userId: string
  revoked: boolean
}

export interface Changed {
  users?: string[]
  sessions?: string[]
}

declare module 'fastify' {
  interface FastifyInstance {
    revocation: {
      user (id: string): Promise<UserState | null>
      session (id: string): Promise<SessionState | null>
      /** After a committed change to users or sessions: drop every cached copy, here and on every instance. */
      invalidate (changed: Changed): Promise<void>
    }
  }
}

const channel = 'state-invalidated'
// A reader that loaded old rows just before a commit may write them back to
// Redis just after the invalidation; a second, later delete removes them.
const secondDeleteMs = 500

export default fp(async (app) => {
  const { cache, db } = app
  const ttl = app.config.STATE_CACHE_TTL
  // The in-process tier; Redis (when configured) is the shared tier behind it.
  const local = new Map<string, { value: string, expires: number }>()
  // Bumped on every invalidation of a key: a load that started before it does not store its result.
  const generations = new Map<string, number>()
  const shared = cache.kind === 'redis' ? cache : null
  const timers = new Set<NodeJS.Timeout>()

  const drop = (key: string) => {
    local.delete(key)
    generations.set(key, (generations.get(key) ?? 0) + 1)
  }
  cache.subscribe(channel, drop)
  // Messages may have been missed while Redis was away: forget everything.
  cache.onReset(() => {
    for (const key of local.keys()) drop(key)
  })

  async function read<T> (key: string, load: () => Promise<T | null>): Promise<T | null> {
    // While the shared tier is unreachable, invalidations cannot reach this
    // instance either, so nothing cached is trusted: the database answers.
    const trusted = cache.healthy
    if (trusted) {
      const hit = local.get(key)
      if (hit && hit.expires > Date.now()) return JSON.parse(hit.value) as T
      const remote = shared ? await shared.get(key) : null
      if (remote !== null) {
        local.set(key, { value: remote, expires: Date.now() + ttl * 1000 })
        return JSON.parse(remote) as T
      }
    }
    const generation = generations.get(key) ?? 0
    const value = await load()
    if (value !== null && trusted && generation === (generations.get(key) ?? 0)) {
      const json = JSON.stringify(value)
      local.set(key, { value: json, expires: Date.now() + ttl * 1000 })
      await shared?.set(key, json, ttl)
    }
    return value
  }

  async function evict (keys: string[]) {
    for (const key of keys) drop(key)
    if (shared) await shared.del(...keys)
    await Promise.all(keys.map(key => cache.publish(channel, key)))
  }

  app.decorate('revocation', {
    user: (id: string) => read<UserState>(`user:${id}`, async () => {
      const row = await db.selectFrom('users')
        .select(['token_version', 'role', 'email_verified_at', 'disabled_at'])
        .where('id', '=', id)
        .executeTakeFirst()
      return row
        ? { tokenVersion: row.token_version, role: row.role, emailVerified: row.email_verified_at !== null, disabled: row.disabled_at !== null }
        : null
    }),
    session: (id: string) => read<SessionState>(`session:${id}`, async () => {
      const row = await db.selectFrom('sessions')
        .select(['user_id', 'revoked_at', 'expires_at'])
        .where('id', '=', id)
        .executeTakeFirst()
      return row ? { userId: row.user_id, revoked: row.revoked_at !== null } : null
    }),
    async invalidate ({ users = [], sessions = [] }: Changed) {
      const keys = [...users.map(id => `user:${id}`), ...sessions.map(id => `session:${id}`)]
      if (keys.length === 0) return
      await evict(keys)
      const timer = setTimeout(() => {
        timers.delete(timer)
        evict(keys).catch(err => app.log.warn({ err }, 'second invalidation failed'))
      }, secondDeleteMs)
      timer.unref()
      timers.add(timer)
    }
  })

  app.addHook('onClose', async () => {
    for (const timer of timers) clearTimeout(timer)
  })
}, { name: 'revocation', dependencies: ['config', 'db', 'cache'] })
