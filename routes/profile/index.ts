import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { accessTokenSecurity, authFailures, DpopHeaders, errors, LabelRef, UserRef } from '../../openapi/components.js'
import { AppError } from '../../plugins/infra/errors.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: [app.authenticate],
    schema: {
      tags: ['profile'],
      summary: "The caller's profile",
      operationId: 'getProfile',
      headers: DpopHeaders,
      security: accessTokenSecurity,
      response: { 200: UserRef, ...errors({ 401: authFailures, 429: ['rate_limited'], 503: ['service_unavailable'] }) }
    }
  }, async (request) => {
    // The state authenticate has just read (cached, invalidated on every change): no query on this hot path.
    const state = await app.authState.user(request.user.id)
    if (!state) throw new AppError('token_revoked')
    return state.profile
  })

  app.patch('/', {
    onRequest: [app.authenticate, app.requireVerified],
    schema: {
      tags: ['profile'],
      summary: "Change the caller's name",
      description: 'For accounts whose email is verified; `null` clears the name.',
      operationId: 'updateProfile',
      headers: DpopHeaders,
      security: accessTokenSecurity,
      body: Type.Object({
        name: Type.Union([LabelRef, Type.Null()])
      }, { additionalProperties: false, examples: [{ name: 'Ada Lovelace' }] }),
      response: { 200: UserRef, ...errors({ 400: ['validation_failed'], 401: authFailures, 403: ['email_not_verified'], 429: ['rate_limited'], 503: ['service_unavailable'] }) }
    }
  }, async (request) => {
    return await app.accounts.updateProfile(request.user.id, { name: request.body.name })
  })
}

export default route
