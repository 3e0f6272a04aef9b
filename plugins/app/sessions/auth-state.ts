import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
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

function createAuthState (app: FastifyInstance) {
  const { cache, db, config } = app
  const ttl = config.STATE_CACHE_TTL
  const onLookup = app.metrics.stateLookup
  const users = cache.tiered<UserState>('users', {
    ttl,
    onLookup,
    async load (id) {
      const row = await findUserById(db, id)
      return row ? { tokenVersion: row.token_version, disabled: row.disabled_at !== null, profile: userView(row) } : null
    }
  })
  const sessions = cache.tiered<SessionState>('sessions', {
    ttl,
    onLookup,
    async load (id) {
      const row = await findSession(db, id)
      return row ? { userId: row.user_id, revoked: row.revoked_at !== null, createdAt: row.created_at.getTime() } : null
    }
  })

  return {
    user: (id: string) => users.get(id),
    session: (id: string) => sessions.get(id),
    /** After a committed change to users or sessions: drop every cached copy, here and on every instance. */
    async invalidate (changed: Changed) {
      await Promise.all([users.invalidate(changed.users ?? []), sessions.invalidate(changed.sessions ?? [])])
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    authState: ReturnType<typeof createAuthState>
  }
}

export default fp(async (app) => {
  app.decorate('authState', createAuthState(app))
}, { name: 'auth-state', dependencies: ['config', 'db', 'cache', 'metrics'] })
