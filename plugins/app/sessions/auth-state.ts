import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Kysely } from 'kysely'
import type { Database } from '../../../db/schema.js'
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

/** The PostgreSQL channel announcing committed changes to auth state (the second fan-out path, SPEC §14). */
export const stateChannel = 'latchkey_auth_state'

// What a notification carries: the ids, who sent it (an instance skips its
// own) and when (the lag metric). PostgreSQL caps a payload at 8000 bytes:
// ids go 100 to a notification (under 4 KB).
interface Announcement { u: string[], s: string[], from: string, at: number }
const perNotification = 100

function announcements (changed: Changed, from: string): string[] {
  const ids = [...(changed.users ?? []).map(id => ['u', id] as const), ...(changed.sessions ?? []).map(id => ['s', id] as const)]
  const payloads: string[] = []
  for (let i = 0; i < ids.length; i += perNotification) {
    const chunk = ids.slice(i, i + perNotification)
    const announcement: Announcement = { u: chunk.filter(([k]) => k === 'u').map(([, id]) => id), s: chunk.filter(([k]) => k === 's').map(([, id]) => id), from, at: Date.now() }
    payloads.push(JSON.stringify(announcement))
  }
  return payloads
}

function createAuthState (app: FastifyInstance) {
  const { cache, db, config, notifications, metrics } = app
  const ttl = config.STATE_CACHE_TTL
  const onLookup = metrics.stateLookup
  // Either path keeps the in-process copies honest: Redis's broadcast, or PostgreSQL's notifications.
  const backup = notifications
  const instance = randomUUID()
  const users = cache.tiered<UserState>('users', {
    ttl,
    onLookup,
    backup,
    async load (id) {
      const row = await findUserById(db, id)
      return row ? { tokenVersion: row.token_version, disabled: row.disabled_at !== null, profile: userView(row) } : null
    }
  })
  const sessions = cache.tiered<SessionState>('sessions', {
    ttl,
    onLookup,
    backup,
    async load (id) {
      const row = await findSession(db, id)
      return row ? { userId: row.user_id, revoked: row.revoked_at !== null, createdAt: row.created_at.getTime() } : null
    }
  })

  /** Sends the change through PostgreSQL too, on `db`: in the change's transaction, or after its commit. */
  async function announce (on: Kysely<Database>, changed: Changed): Promise<void> {
    for (const payload of announcements(changed, instance)) await notifications.notify(on, stateChannel, payload)
  }

  /** Hears the changes other instances announce through PostgreSQL; duplicates of Redis's broadcast change nothing. */
  async function listen (): Promise<void> {
    notifications.onReset(() => {
      users.reset()
      sessions.reset()
    })
    await notifications.on(stateChannel, payload => {
      let heard: Announcement
      try {
        heard = JSON.parse(payload)
      } catch (err) {
        app.log.warn({ err }, 'auth-state notification unreadable')
        return
      }
      if (heard.from === instance) return
      metrics.fanoutLag((Date.now() - heard.at) / 1000)
      Promise.all([users.heard(heard.u ?? []), sessions.heard(heard.s ?? [])])
        .catch(err => app.log.warn({ err }, 'auth-state notification not applied to the shared cache'))
    })
  }

  return {
    user: (id: string) => users.get(id),
    session: (id: string) => sessions.get(id),
    announce,
    listen,
    /**
     * After a committed change to users or sessions: drop every cached copy,
     * here and on every instance, through both paths (`announced` when the
     * transaction has sent it through PostgreSQL already).
     */
    async invalidate (changed: Changed, options: { announced?: boolean } = {}) {
      await Promise.all([users.invalidate(changed.users ?? []), sessions.invalidate(changed.sessions ?? [])])
      if (!options.announced) await announce(db, changed)
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    authState: ReturnType<typeof createAuthState>
  }
}

export default fp(async (app) => {
  const authState = createAuthState(app)
  await authState.listen()
  app.decorate('authState', authState)
}, { name: 'auth-state', dependencies: ['config', 'db', 'cache', 'metrics', 'notifications'] })
