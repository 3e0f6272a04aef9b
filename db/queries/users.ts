import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database, NewUser, User } from '../schema.js'

/** Emails are stored trimmed and lower-cased; every lookup goes through this. */
export const normaliseEmail = (email: string) => email.trim().toLowerCase()

export function findUserByEmail (db: Kysely<Database>, email: string): Promise<User | undefined> {
  return db.selectFrom('users').selectAll().where('email', '=', normaliseEmail(email)).executeTakeFirst()
}

export function findUserById (db: Kysely<Database>, id: string): Promise<User | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
}

/** Inserts the user, or returns undefined when the email is taken (the unique index decides, not a prior read). */
export function insertUser (db: Kysely<Database>, user: NewUser): Promise<User | undefined> {
  return db.insertInto('users')
    .values({ ...user, email: normaliseEmail(user.email) })
    .onConflict(oc => oc.column('email').doNothing())
    .returningAll()
    .executeTakeFirst()
}

/** Every token of the user dies: their `ver` no longer matches. Returns the new version. */
export async function bumpTokenVersion (db: Kysely<Database>, id: string): Promise<number | undefined> {
  const row = await db.updateTable('users')
    .set(eb => ({ token_version: eb('token_version', '+', 1), updated_at: new Date() }))
    .where('id', '=', id)
    .returning('token_version')
    .executeTakeFirst()
  return row?.token_version
}

export async function touchLogin (db: Kysely<Database>, id: string): Promise<void> {
  await db.updateTable('users').set({ last_login_at: new Date() }).where('id', '=', id).execute()
}

/**
 * Reads the user's row and holds it until the transaction ends: per-account
 * writes run one at a time. The first lock of the lock order (user, then its
 * sessions, then their refresh tokens). NO KEY UPDATE, so inserting the user's
 * sessions and codes (which only take KEY SHARE) does not wait on it.
 */
export function lockUser (trx: Transaction<Database>, id: string): Promise<User | undefined> {
  return trx.selectFrom('users').selectAll().where('id', '=', id).forNoKeyUpdate().executeTakeFirst()
}

/** Marks the email confirmed (the first confirmation's time is kept). */
export async function markEmailVerified (db: Kysely<Database>, id: string, at = new Date()): Promise<void> {
  await db.updateTable('users')
    .set(eb => ({ email_verified_at: eb.fn.coalesce('email_verified_at', eb.val(at)), updated_at: at }))
    .where('id', '=', id)
    .execute()
}

export async function setPasswordHash (db: Kysely<Database>, id: string, passwordHash: string): Promise<void> {
  await db.updateTable('users').set({ password_hash: passwordHash, updated_at: new Date() }).where('id', '=', id).execute()
}

export function updateProfile (db: Kysely<Database>, id: string, changes: { name: string | null }): Promise<User | undefined> {
  return db.updateTable('users').set({ ...changes, updated_at: new Date() }).where('id', '=', id).returningAll().executeTakeFirst()
}

export async function setDisabled (db: Kysely<Database>, id: string, disabled: boolean, at = new Date()): Promise<void> {
  await db.updateTable('users').set({ disabled_at: disabled ? at : null, updated_at: at }).where('id', '=', id).execute()
}

export async function setRole (db: Kysely<Database>, id: string, role: User['role']): Promise<void> {
  await db.updateTable('users').set({ role, updated_at: new Date() }).where('id', '=', id).execute()
}

/** A user row with its position in the newest-first order: `created_at` in whole microseconds, exact where a Date is not. */
export type ListedUser = User & { created_us: string }

/**
 * Users newest first by (created_at, id), after the position given, with an
 * optional email prefix (emails are stored lower-case; `%`, `_` and `\` in
 * the prefix match themselves).
 */
export function listUsers (db: Kysely<Database>, options: { limit: number, emailPrefix?: string, after?: { us: string, id: string } }): Promise<ListedUser[]> {
  let query = db.selectFrom('users').selectAll()
    .select(sql<string>`(extract(epoch from created_at) * 1000000)::bigint::text`.as('created_us'))
  if (options.emailPrefix !== undefined) {
    const escaped = normaliseEmail(options.emailPrefix).replace(/[\\%_]/g, c => `\\${c}`)
    query = query.where('email', 'like', `${escaped}%`)
  }
  if (options.after !== undefined) {
    const { us, id } = options.after
    query = query.where(eb => eb(
      eb.refTuple('created_at', 'id'), '<',
      eb.tuple(sql<Date>`timestamptz 'epoch' + ${us}::bigint * interval '1 microsecond'`, sql<string>`${id}::uuid`)
    ))
  }
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(options.limit).execute()
}
