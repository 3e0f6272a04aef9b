import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Kysely } from 'kysely'
import type { AuditEventRow, Database } from '../../../db/schema.js'
import { insertAuditEvent, listAuditEvents, type NewAuditEvent } from '../../../db/queries/audit-events.js'
import { cursors, pageOf, type Page } from '../../../db/queries/page.js'
import { AppError } from '../../infra/errors.js'
import type { Client } from '../sessions/binding.js'

/** Every event type of SPEC §9.1. */
export const auditTypes = [
  'user.registered', 'login.succeeded', 'login.failed', 'login.device_limit_refused', 'refresh.reuse_detected',
  'logout', 'session.revoked', 'session.evicted', 'session.binding_mismatch', 'email.verified',
  'password.changed', 'password.reset', 'user.role_changed', 'user.disabled', 'user.enabled', 'otp.locked'
] as const
export type AuditType = typeof auditTypes[number]

/** Small, flat facts about the change: counts, scopes, roles, reasons. Never a password, token, code or hash. */
export type AuditDetail = Record<string, string | number | boolean | null | string[]>

export interface AuditEvent {
  type: AuditType
  userId?: string | null
  sessionId?: string | null
  /** Where the request came from; absent for a change made by a script. */
  client?: Client
  detail?: AuditDetail
}

export interface AuditEventView {
  id: string
  type: string
  at: string
  userId: string | null
  sessionId: string | null
  ip: string | null
  userAgent: string | null
  detail: Record<string, unknown>
}

/** What a person sees of their own events: why a login failed stays with the admins (SPEC §9.1). */
const ownerDetail = (row: AuditEventRow) => {
  if (row.type !== 'login.failed') return row.detail
  const { reason: _reason, ...rest } = row.detail
  return rest
}

/** The row an event is stored as; a statement that writes its change and its event at once (a login) takes it from here. */
export function eventRow (event: AuditEvent): NewAuditEvent {
  return {
    type: event.type,
    userId: event.userId ?? null,
    sessionId: event.sessionId ?? null,
    ip: event.client?.ip ?? null,
    userAgent: event.client?.userAgent?.slice(0, 512) ?? null,
    detail: event.detail ?? {}
  }
}

function createAudit (app: FastifyInstance) {
  const { db } = app
  const pages = cursors(app.keys.derive('page-cursor'))

  /**
   * Records an event with `db` — the transaction of the change it describes,
   * so it commits and rolls back with it; the pool only for what changes
   * nothing (a failed login, a binding mismatch).
   */
  async function record (trx: Kysely<Database>, event: AuditEvent): Promise<void> {
    await insertAuditEvent(trx, eventRow(event))
  }

  /** Newest first, a page at a time; `owner` hides what only admins may see. */
  async function list (filter: { userId?: string, type?: string, limit: number, cursor?: string }, audience: 'admin' | 'owner'): Promise<Page<AuditEventView>> {
    let beforeId: string | undefined
    if (filter.cursor !== undefined) {
      const position = pages.decode(filter.cursor)
      if (typeof position?.event !== 'string' || !/^[0-9]{1,19}$/.test(position.event)) {
        throw new AppError('validation_failed', { message: 'The cursor is not one this list gave out.' })
      }
      beforeId = position.event
    }
    const rows = await listAuditEvents(db, { userId: filter.userId, type: filter.type, beforeId, limit: filter.limit + 1 })
    // bigserial: a string from pg, a number or bigint from PGlite.
    return pageOf(rows, filter.limit, row => ({
      id: String(row.id),
      type: row.type,
      at: row.at.toISOString(),
      userId: row.user_id,
      sessionId: row.session_id,
      ip: row.ip,
      userAgent: row.user_agent,
      detail: audience === 'admin' ? row.detail : ownerDetail(row)
    }), row => ({ event: String(row.id) }), pages.encode)
  }

  /**
   * An event that changes nothing (a failed login, a binding mismatch),
   * recorded on its own; a failure to record it is logged and does not
   * change the refusal the caller answers.
   */
  async function recordAlone (event: AuditEvent): Promise<void> {
    await record(db, event).catch(err => app.log.error({ err, type: event.type }, 'audit event not recorded'))
  }

  return { record, recordAlone, list }
}

declare module 'fastify' {
  interface FastifyInstance {
    audit: ReturnType<typeof createAudit>
  }
}

export default fp(async (app) => {
  app.decorate('audit', createAudit(app))
}, { name: 'audit', dependencies: ['db', 'keys'] })
