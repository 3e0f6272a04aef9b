import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AuditEventRef, PageOf, PageQuery, authFailures, errors } from '../../../openapi/components.js'
import { auditTypes } from '../../../plugins/app/audit/audit.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: [app.authenticate, app.requireRole('admin')],
    schema: {
      tags: ['admin'],
      summary: 'The audit trail, newest first',
      description: 'Every security-relevant event (SPEC §9.1), optionally of one user or one type.',
      operationId: 'listAuditEvents',
      security: [{ bearerAuth: [] }],
      querystring: Type.Object({
        ...PageQuery,
        userId: Type.Optional(Type.String({ format: 'uuid' })),
        type: Type.Optional(Type.Union(auditTypes.map(t => Type.Literal(t))))
      }, { additionalProperties: false }),
      response: {
        200: PageOf(AuditEventRef, 'A page of events, newest first.'),
        ...errors({ 400: ['validation_failed'], 401: authFailures, 403: ['forbidden'], 429: ['rate_limited'], 503: ['service_unavailable'] })
      }
    }
  }, async (request) => {
    const { limit, cursor, userId, type } = request.query
    return await app.audit.list({ limit, cursor, userId, type }, 'admin')
  })
}

export default route
