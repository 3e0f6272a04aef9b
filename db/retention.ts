import type { Kysely } from 'kysely'
import type { Database } from './schema.js'
import { deleteAuditEventsBefore } from './queries/audit-events.js'

export interface Retention {
  /** Seconds an audit event is kept (AUDIT_RETENTION); 0 keeps them all. */
  auditRetention: number
}

/**
 * Deletes expired refresh tokens, then expired sessions (their remaining
 * tokens go with them), then audit events past AUDIT_RETENTION, in batches so
 * no statement holds locks for long.
 */
export async function flushExpired (db: Kysely<Database>, retention: Retention, batchSize = 1000): Promise<{ refreshTokens: number, sessions: number, auditEvents: number }> {
  const counts = { refreshTokens: 0, sessions: 0, auditEvents: 0 }
  for (const table of ['refresh_tokens', 'sessions'] as const) {
    const key = table === 'refresh_tokens' ? 'jti' : 'id'
    const field = table === 'refresh_tokens' ? 'refreshTokens' : 'sessions'
    let deleted: number
    do {
      const result = await db.deleteFrom(table)
        .where(key, 'in', db.selectFrom(table).select(key).where('expires_at', '<', new Date()).limit(batchSize))
        .executeTakeFirst()
      deleted = Number(result.numDeletedRows)
      counts[field] += deleted
    } while (deleted === batchSize)
  }
  if (retention.auditRetention > 0) {
    counts.auditEvents = await deleteAuditEventsBefore(db, new Date(Date.now() - retention.auditRetention * 1000), batchSize)
  }
  return counts
}
