import type { Kysely } from 'kysely'
import type { AuditEventRow, Database } from '../schema.js'

export interface NewAuditEvent {
  type: string
  userId: string | null
  sessionId: string | null
  ip: string | null
  userAgent: string | null
  detail: Record<string, unknown>
}

export async function insertAuditEvent (db: Kysely<Database>, event: NewAuditEvent): Promise<void> {
  await db.insertInto('audit_events').values({
    type: event.type,
    user_id: event.userId,
    session_id: event.sessionId,
    ip: event.ip,
    user_agent: event.userAgent,
    detail: JSON.stringify(event.detail)
  }).execute()
}

export interface AuditFilter {
  userId?: string
  type?: string
  /** Only events older than this one (the cursor). */
  beforeId?: string
  limit: number
}

/** Newest first; `limit` rows at most. */
export function listAuditEvents (db: Kysely<Database>, filter: AuditFilter): Promise<AuditEventRow[]> {
  let query = db.selectFrom('audit_events').selectAll()
  if (filter.userId !== undefined) query = query.where('user_id', '=', filter.userId)
  if (filter.type !== undefined) query = query.where('type', '=', filter.type)
  if (filter.beforeId !== undefined) query = query.where('id', '<', filter.beforeId)
  return query.orderBy('id', 'desc').limit(filter.limit).execute()
}

/** Deletes events recorded before `before`, in batches; returns how many. */
export async function deleteAuditEventsBefore (db: Kysely<Database>, before: Date, batchSize = 1000): Promise<number> {
  let total = 0
  let deleted: number
  do {
    const result = await db.deleteFrom('audit_events')
      .where('id', 'in', db.selectFrom('audit_events').select('id').where('at', '<', before).limit(batchSize))
      .executeTakeFirst()
    deleted = Number(result.numDeletedRows)
    total += deleted
  } while (deleted === batchSize)
  return total
}
