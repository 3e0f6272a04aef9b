import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { UserRef, errors, userView } from '../../openapi/components.js'
import { findUserById } from '../../db/queries/users.js'
import { AppError } from '../../plugins/app/errors.js'

const route: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: [app.authenticate],
    schema: {
      tags: ['profile'],
      summary: "The caller's profile",
      operationId: 'getProfile',
      security: [{ bearerAuth: [] }],
      response: { 200: UserRef, ...errors(401, 429) }
    }
  }, async (request) => {
    const user = await findUserById(app.db, request.user.id)
    if (!user) throw new AppError('token_revoked')
    return userView(user)
  })
}

export default route
