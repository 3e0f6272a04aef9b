import type { Kysely } from 'kysely'
import type { Database, Session } from '../schema.js'

export interface NewSession {
  userId: string
  deviceName: string | null
  ip: string | null
  userAgent: string | null
  expiresAt: Date
}

export function insertSession (db: Kysely<Database>, session: NewSession): Promise<Session> {
  return db.insertInto('sessions').values({
    user_id: session.userId,
    device_name: session.deviceName,
    ip: session.ip,
    user_agent: session.userAgent,
    expires_at: session.expiresAt
  }).returningAll().executeTakeFirstOrThrow()
}

export function findSession (db: Kysely<Database>, id: string): Promise<Session | undefined> {
  return db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst()
}

export function listActiveSessions (db: Kysely<Database>, userId: string): Promise<Session[]> {
  return db.selectFrom('sessions').selectAll()
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', new Date())
    .orderBy('created_at', 'desc')
    .execute()
}

/** Revokes sessions of a user — all, one, or all but one — with their refresh tokens; returns the revoked ids. */
export async function revokeSessions (db: Kysely<Database>, userId: string, which: { only?: string, except?: string } = {}): Promise<string[]> {
  const now = new Date()
  let query = db.updateTable('sessions').set({ revoked_at: now })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
  if (which.only !== undefined) query = query.where('id', '=', which.only)
  if (which.except !== undefined) query = query.where('id', '!=', which.except)
  const ids = (await query.returning('id').execute()).map(r => r.id)
  if (ids.length > 0) {
    await db.updateTable('refresh_tokens').set({ revoked_at: now })
      .where('session_id', 'in', ids)
      .where('revoked_at', 'is', null)
      .execute()
  }
  return ids
}

export async function touchSession (db: Kysely<Database>, id: string, expiresAt?: Date): Promise<void> {
  await db.updateTable('sessions')
    .set({ last_seen_at: new Date(), ...(expiresAt && { expires_at: expiresAt }) })
    .where('id', '=', id)
    .execute()
}
