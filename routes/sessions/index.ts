import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { accessTokenSecurity, authFailures, DpopHeaders, errors } from '../../openapi/components.js'
import { clientOf } from '../../plugins/app/sessions/binding.js'

const SessionView = Type.Object({
  id: Type.String({ format: 'uuid', description: "The tokens' `sid`." }),
  deviceName: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  lastSeenAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time', description: 'When the session ends unless refreshed before: its idle timeout, its refresh token or its maximum lifetime.' }),
  current: Type.Boolean({ description: 'The session of the token making this request.' })
}, { additionalProperties: false })

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: [app.authenticate],
    schema: {
      tags: ['sessions'],
      summary: "The caller's active sessions, the current one marked",
      operationId: 'listSessions',
      headers: DpopHeaders,
      security: accessTokenSecurity,
      response: { 200: Type.Object({ sessions: Type.Array(SessionView) }, { description: 'The active sessions, newest first.' }), ...errors({ 401: authFailures, 429: ['rate_limited'], 503: ['service_unavailable'] }) }
    }
  }, async (request) => {
    const sessions = await app.sessions.list(request.user.id)
    return {
      sessions: sessions.map(s => ({
        id: s.id,
        deviceName: s.device_name,
        ip: s.ip,
        userAgent: s.user_agent,
        createdAt: s.created_at.toISOString(),
        lastSeenAt: s.last_seen_at.toISOString(),
        expiresAt: s.endsAt.toISOString(),
        current: s.id === request.user.sessionId
      }))
    }
  })

  app.delete('/:id', {
    onRequest: [app.authenticate],
    schema: {
      tags: ['sessions'],
      summary: 'Revoke one of the caller\'s sessions: its tokens die at once',
      operationId: 'revokeSession',
      headers: DpopHeaders,
      security: accessTokenSecurity,
      params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
      response: { 204: Type.Null({ description: 'Revoked.' }), ...errors({ 400: ['validation_failed'], 401: authFailures, 404: ['not_found'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
    }
  }, async (request, reply) => {
    await app.sessions.revoke(request.user.id, request.params.id, clientOf(request))
    reply.code(204)
  })
}

export default route
