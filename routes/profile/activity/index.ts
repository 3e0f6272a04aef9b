import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AuditEventRef, PageOf, PageQuery, authFailures, errors } from '../../../openapi/components.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: [app.authenticate],
    schema: {
      tags: ['profile'],
      summary: "The caller's own security events, newest first",
      description: 'Logins (successful and failed), password changes, sessions ended, reuse detected…: "was that me?". ' +
        'Why a login failed is not shown here.',
      operationId: 'listProfileActivity',
      security: [{ bearerAuth: [] }],
      querystring: Type.Object(PageQuery, { additionalProperties: false }),
      response: {
        200: PageOf(AuditEventRef, "A page of the caller's events, newest first."),
        ...errors({ 400: ['validation_failed'], 401: authFailures, 429: ['rate_limited'], 503: ['service_unavailable'] })
      }
    }
  }, async (request) => {
    const { limit, cursor } = request.query
    return await app.audit.list({ limit, cursor, userId: request.user.id }, 'owner')
  })
}

export default route
