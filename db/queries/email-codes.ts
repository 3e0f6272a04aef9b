import type { Kysely, Transaction } from 'kysely'
import type { Database, EmailCode, EmailCodePurpose } from '../schema.js'

export interface NewEmailCode {
  userId: string
  purpose: EmailCodePurpose
  codeHash: string
  createdAt: Date
  expiresAt: Date
}

/** When the account's last code for the purpose was created: the resend cooldown runs from it. */
export async function lastCodeCreatedAt (db: Kysely<Database>, userId: string, purpose: EmailCodePurpose): Promise<Date | undefined> {
  const row = await db.selectFrom('email_codes').select('created_at')
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .orderBy('created_at', 'desc')
    .limit(1)
    .executeTakeFirst()
  return row?.created_at
}

/** Voids the account's usable code for the purpose, if any: a newer code replaces it. */
export async function voidLiveCodes (db: Kysely<Database>, userId: string, purpose: EmailCodePurpose, at = new Date()): Promise<void> {
  await db.updateTable('email_codes').set({ voided_at: at })
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('consumed_at', 'is', null)
    .where('voided_at', 'is', null)
    .execute()
}

export function insertEmailCode (db: Kysely<Database>, code: NewEmailCode): Promise<EmailCode> {
  return db.insertInto('email_codes').values({
    user_id: code.userId,
    purpose: code.purpose,
    code_hash: code.codeHash,
    created_at: code.createdAt,
    expires_at: code.expiresAt
  }).returningAll().executeTakeFirstOrThrow()
}

/** Removes a code that never reached its owner (the mail failed), so it neither works nor holds the cooldown. */
export async function deleteEmailCode (db: Kysely<Database>, id: string): Promise<void> {
  await db.deleteFrom('email_codes').where('id', '=', id).where('attempts', '=', 0).where('consumed_at', 'is', null).execute()
}

/** Drops the account's spent codes older than `before`: the table stays small without a sweeper. */
export async function deleteSpentCodes (db: Kysely<Database>, userId: string, purpose: EmailCodePurpose, before: Date): Promise<void> {
  await db.deleteFrom('email_codes')
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('created_at', '<', before)
    .where(eb => eb.or([eb('consumed_at', 'is not', null), eb('voided_at', 'is not', null), eb('expires_at', '<', before)]))
    .execute()
}

/**
 * The account's usable code for the purpose, locked for the rest of the
 * transaction: concurrent checks of it queue here, and once one has consumed
 * or voided it the others no longer find it.
 */
export function lockLiveCode (trx: Transaction<Database>, userId: string, purpose: EmailCodePurpose): Promise<EmailCode | undefined> {
  return trx.selectFrom('email_codes').selectAll()
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('consumed_at', 'is', null)
    .where('voided_at', 'is', null)
    .forUpdate()
    .executeTakeFirst()
}

export async function markConsumed (trx: Transaction<Database>, id: string, at = new Date()): Promise<void> {
  await trx.updateTable('email_codes').set({ consumed_at: at }).where('id', '=', id).execute()
}

/** Counts one wrong try against the code, voiding it when `maxAttempts` are spent; returns the new count. */
export async function recordWrongAttempt (trx: Transaction<Database>, id: string, maxAttempts: number, at = new Date()): Promise<number> {
  const row = await trx.updateTable('email_codes')
    .set(eb => ({
      attempts: eb('attempts', '+', 1),
      voided_at: eb.case().when('attempts', '>=', maxAttempts - 1).then(eb.cast<Date>(eb.val(at), 'timestamptz')).else(null).end()
    }))
    .where('id', '=', id)
    .returning('attempts')
    .executeTakeFirstOrThrow()
  return row.attempts
}

export async function insertFailure (trx: Transaction<Database>, userId: string, purpose: EmailCodePurpose, at = new Date()): Promise<void> {
  await trx.insertInto('email_code_failures').values({ user_id: userId, purpose, created_at: at }).execute()
}

/** Wrong codes of the account for the purpose since `since`, across every code. */
export async function countFailuresSince (db: Kysely<Database>, userId: string, purpose: EmailCodePurpose, since: Date): Promise<number> {
  const row = await db.selectFrom('email_code_failures')
    .select(eb => eb.fn.countAll<string>().as('count'))
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('created_at', '>', since)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/** Drops the account's failures that left the window. */
export async function deleteFailuresBefore (db: Kysely<Database>, userId: string, purpose: EmailCodePurpose, before: Date): Promise<void> {
  await db.deleteFrom('email_code_failures')
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('created_at', '<=', before)
    .execute()
}
