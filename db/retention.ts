import type { Kysely } from 'kysely'
import type { Database } from './schema.js'
import { deleteAuditEventsBefore } from './queries/audit-events.js'
import type { Config } from '../config.js'
import { deleteRevocationsBefore } from './queries/revocations.js'

// Past the access tokens' lifetime, the feed keeps a revocation this much
// longer: a verifier that was away for less resumes without a reset.
const revocationMarginSeconds = 3600

/** How long the revocation feed keeps an event (SPEC §14.1): as long as an access token it concerns can be accepted, and a margin. */
export const revocationsKeptFor = (config: Pick<Config, 'ACCESS_TOKEN_TTL' | 'JWT_LEEWAY'>): number =>
  config.ACCESS_TOKEN_TTL + config.JWT_LEEWAY + revocationMarginSeconds

export interface Retention {
  /** Seconds an audit event is kept (AUDIT_RETENTION); 0 keeps them all. */
  auditRetention: number
  /** The feed's events recorded before this go; none when absent. */
  revocationsBefore?: Date
}

/** What the configuration keeps, as of now: the periodic job's and `npm run flush-expired`'s retention. */
export const retentionOf = (config: Pick<Config, 'ACCESS_TOKEN_TTL' | 'JWT_LEEWAY' | 'AUDIT_RETENTION'>): Retention =>
  ({ auditRetention: config.AUDIT_RETENTION, revocationsBefore: new Date(Date.now() - revocationsKeptFor(config) * 1000) })

/**
 * Deletes expired refresh tokens, then expired sessions (their remaining
 * tokens go with them), then audit events past AUDIT_RETENTION and the feed's
 * events past their keeping, in batches so no statement holds locks for long.
 */
export async function flushExpired (db: Kysely<Database>, retention: Retention, batchSize = 1000): Promise<{ refreshTokens: number, sessions: number, auditEvents: number, revocations: number }> {
  const counts = { refreshTokens: 0, sessions: 0, auditEvents: 0, revocations: 0 }
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
  if (retention.revocationsBefore !== undefined) counts.revocations = await deleteRevocationsBefore(db, retention.revocationsBefore, batchSize)
  return counts
}
