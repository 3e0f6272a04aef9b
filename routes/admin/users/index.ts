import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AdminUserRef, PageOf, PageQuery, authFailures, errors } from '../../../openapi/components.js'
import { clientOf } from '../../../plugins/app/sessions/binding.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  const admin = [app.authenticate, app.requireRole('admin')]

  app.get('/', {
    onRequest: admin,
    schema: {
      tags: ['admin'],
      summary: 'List users, newest first',
      description: 'Keyset pagination: pass the `nextCursor` of a page as `cursor` for the next one.',
      operationId: 'listUsers',
      security: [{ bearerAuth: [] }],
      querystring: Type.Object({
        ...PageQuery,
        email: Type.Optional(Type.String({ minLength: 1, maxLength: 254, pattern: '^[^\\x00-\\x1f\\x7f]+$', description: 'Only emails starting with this, case-insensitive.' }))
      }, { additionalProperties: false }),
      response: {
        200: PageOf(AdminUserRef, 'A page of users, newest first.'),
        ...errors({ 400: ['validation_failed'], 401: authFailures, 403: ['forbidden'], 429: ['rate_limited'], 503: ['service_unavailable'] })
      }
    }
  }, async (request) => {
    const { limit, cursor, email } = request.query
    return await app.accounts.listUsers({ limit, cursor, email })
  })

  app.patch('/:id', {
    onRequest: admin,
    schema: {
      tags: ['admin'],
      summary: "Change a user's role or disable them: their tokens die at once",
      description: 'A role change or disabling ends every session of the user and refuses their tokens at once, on every instance. ' +
        'An admin cannot demote or disable itself (400 `validation_failed`).',
      operationId: 'updateUser',
      security: [{ bearerAuth: [] }],
      params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
      body: Type.Object({
        role: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('admin')])),
        disabled: Type.Optional(Type.Boolean())
      }, { additionalProperties: false, minProperties: 1, examples: [{ disabled: true }] }),
      response: {
        200: AdminUserRef,
        ...errors({ 400: ['validation_failed'], 401: authFailures, 403: ['forbidden'], 404: ['not_found'], 429: ['rate_limited'], 503: ['service_unavailable'] })
      }
    }
  }, async (request) => {
    return await app.accounts.changeUser(request.user, request.params.id, request.body, clientOf(request))
  })
}

export default route
