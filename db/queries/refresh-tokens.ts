import type { Kysely, Transaction } from 'kysely'
import type { Database, RefreshTokenRow } from '../schema.js'

export interface NewRefreshToken {
  jti: string
  sessionId: string
  userId: string
  parentJti: string | null
  iat: number
  exp: number
}

export async function insertRefreshToken (db: Kysely<Database>, token: NewRefreshToken): Promise<void> {
  await db.insertInto('refresh_tokens').values({
    jti: token.jti,
    session_id: token.sessionId,
    user_id: token.userId,
    parent_jti: token.parentJti,
    // Stored to the second the token says, so the token can be signed again identically.
    issued_at: new Date(token.iat * 1000),
    expires_at: new Date(token.exp * 1000)
  }).execute()
}

export function findRefreshToken (db: Kysely<Database>, jti: string): Promise<RefreshTokenRow | undefined> {
  return db.selectFrom('refresh_tokens').selectAll().where('jti', '=', jti).executeTakeFirst()
}

export async function markRotated (trx: Transaction<Database>, jti: string, successorJti: string): Promise<void> {
  await trx.updateTable('refresh_tokens')
    .set({ rotated_at: new Date(), successor_jti: successorJti })
    .where('jti', '=', jti)
    .execute()
}

/** Revokes every refresh token of one session that is still outstanding (the session itself stays open). */
export async function revokeSessionRefreshTokens (db: Kysely<Database>, sessionId: string, at = new Date()): Promise<void> {
  await db.updateTable('refresh_tokens').set({ revoked_at: at })
    .where('session_id', '=', sessionId)
    .where('revoked_at', 'is', null)
    .execute()
}
