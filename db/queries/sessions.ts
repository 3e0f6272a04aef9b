import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database, Session, User } from '../schema.js'
import type { NewRefreshToken } from './refresh-tokens.js'
import type { NewAuditEvent } from './audit-events.js'

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

/** A login's session, whose id is chosen before its tokens are signed. */
export interface LoginSession extends NewSession {
  id: string
}

/**
 * A login after its password check, in one statement (one round trip, its own
 * transaction): the user's row is taken by the update of `last_login_at`, and
 * only while it is still the row the password was checked against — the same
 * hash, version, role and verification, and not disabled (a concurrent
 * password reset holding the row is waited for and then seen). The session,
 * its first refresh token and the login's event are written with it, all or
 * none. Undefined when the row no longer matches: nothing was written.
 */
export async function openLoginSession (
  db: Kysely<Database>,
  checked: Pick<User, 'id' | 'password_hash' | 'token_version' | 'role' | 'email_verified_at'>,
  session: LoginSession,
  refresh: Omit<NewRefreshToken, 'sessionId' | 'userId' | 'parentJti'>,
  event: Omit<NewAuditEvent, 'userId' | 'sessionId'>
): Promise<Session | undefined> {
  // INSERT … SELECT gives its parameters no column types: each is cast.
  const { rows } = await sql<Session>`
    with taken as (
      update users set last_login_at = ${session.createdAt}::timestamptz
      where id = ${checked.id}::uuid
        and password_hash = ${checked.password_hash}
        and token_version = ${checked.token_version}::integer
        and role = ${checked.role}
        and (email_verified_at is not null) = ${checked.email_verified_at !== null}::boolean
        and disabled_at is null
      returning id
    ), opened as (
      insert into sessions (id, user_id, device_name, ip, user_agent, created_at, last_seen_at, expires_at, dpop_jkt)
      select ${session.id}::uuid, taken.id, ${session.deviceName}::text, ${session.ip}::text, ${session.userAgent}::text,
        ${session.createdAt}::timestamptz, ${session.createdAt}::timestamptz, ${session.expiresAt}::timestamptz, ${session.dpopJkt}::text
      from taken
      returning *
    ), token as (
      insert into refresh_tokens (jti, session_id, user_id, issued_at, expires_at)
      select ${refresh.jti}::uuid, opened.id, opened.user_id, ${new Date(refresh.iat * 1000)}::timestamptz, ${new Date(refresh.exp * 1000)}::timestamptz
      from opened
    ), event as (
      insert into audit_events (type, user_id, session_id, ip, user_agent, detail)
      select ${event.type}, opened.user_id, opened.id, ${event.ip}::text, ${event.userAgent}::text, ${JSON.stringify(event.detail)}::jsonb
      from opened
    )
    select * from opened`.execute(db)
  return rows[0]
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
