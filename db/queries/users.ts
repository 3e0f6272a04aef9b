import type { Kysely, Transaction } from 'kysely'
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

/** Holds the user's row until the transaction ends: per-account work (mailing a code) runs one at a time. */
export async function lockUser (trx: Transaction<Database>, id: string): Promise<boolean> {
  const row = await trx.selectFrom('users').select('id').where('id', '=', id).forNoKeyUpdate().executeTakeFirst()
  return row !== undefined
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
