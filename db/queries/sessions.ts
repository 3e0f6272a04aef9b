import type { Kysely, Transaction } from 'kysely'
import type { Database, Session } from '../schema.js'

export interface NewSession {
  userId: string
  deviceName: string | null
  ip: string | null
  userAgent: string | null
  createdAt: Date
  expiresAt: Date
  dpopJkt: string | null
}

export function insertSession (db: Kysely<Database>, session: NewSession): Promise<Session> {
  return db.insertInto('sessions').values({
    user_id: session.userId,
    device_name: session.deviceName,
    ip: session.ip,
    user_agent: session.userAgent,
    // From the same clock as the lifetimes computed from it, not the database's.
    created_at: session.createdAt,
    last_seen_at: session.createdAt,
    expires_at: session.expiresAt,
    dpop_jkt: session.dpopJkt
  }).returningAll().executeTakeFirstOrThrow()
}

export function findSession (db: Kysely<Database>, id: string): Promise<Session | undefined> {
  return db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst()
}

/** How old a session may be and how long ago it may have been seen, and still be active (SPEC §8). */
export interface Liveness {
  createdAfter: Date
  seenAfter?: Date
}

/** The user's active sessions, newest first: not revoked, and within their lifetimes. */
export function listActiveSessions (db: Kysely<Database>, userId: string, live: Liveness): Promise<Session[]> {
  let query = db.selectFrom('sessions').selectAll()
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', new Date())
    .where('created_at', '>', live.createdAfter)
  if (live.seenAfter !== undefined) query = query.where('last_seen_at', '>', live.seenAfter)
  return query.orderBy('created_at', 'desc').execute()
}

/** Reads a session and holds its row until the transaction ends: every write to its refresh tokens takes this first. */
export function lockSession (trx: Transaction<Database>, id: string): Promise<Session | undefined> {
  return trx.selectFrom('sessions').selectAll().where('id', '=', id).forUpdate().executeTakeFirst()
}

/** Holds every open session row of a user, in one order (by id), so two such lockers queue instead of deadlocking. */
export async function lockOpenSessions (trx: Transaction<Database>, userId: string): Promise<string[]> {
  const rows = await trx.selectFrom('sessions').select('id')
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .orderBy('id')
    .forUpdate()
    .execute()
  return rows.map(r => r.id)
}

/**
 * Revokes sessions of a user — all, one, or all but one — with their refresh
 * tokens; returns the revoked ids. The caller holds the rows (`lockSession`,
 * `lockOpenSessions`) first.
 */
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

/** Binds an unbound session to a DPoP key (SPEC §8.1); a bound session keeps its key. */
export async function bindSessionKey (db: Kysely<Database>, id: string, jkt: string): Promise<void> {
  await db.updateTable('sessions').set({ dpop_jkt: jkt }).where('id', '=', id).where('dpop_jkt', 'is', null).execute()
}

export async function touchSession (db: Kysely<Database>, id: string, expiresAt?: Date): Promise<void> {
  await db.updateTable('sessions')
    .set({ last_seen_at: new Date(), ...(expiresAt && { expires_at: expiresAt }) })
    .where('id', '=', id)
    .execute()
}
